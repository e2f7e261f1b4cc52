"""Adaptation methods, one module each, looked up by name (config.method.name)."""

from jaxdapt.methods import (  # noqa: F401  (register)  # noqa: F401  (register)  # noqa: F401  (register)  # noqa: F401  (register)  # noqa: F401  (register)
  adabn,
  adda,
  afn,
  cdan,
  dann,
  discrepancy,
  entropy,
  fewshot,
  fixmatch,
  jan,
  mcc,
  mcd,
  mdd,
  mme,
  regularizers,
  shot,
  supervised,
  tent,
)
from jaxdapt.methods.base import LABELED, METHODS, Method, Outputs, get_method


def for_experiment(config) -> Method:
  """config.method's method with the experiment's add-ons: the labeled target batch
  (data.target_labeled_per_class) and the regulariser (config.regularizer)."""
  method = fewshot.with_labeled_target(
    get_method(config.method), config.data.target_labeled_per_class
  )
  return regularizers.attach(method, config)


def check_config(config) -> None:
  """The add-ons' fields against the method and model (called by trainer.validate)."""
  for module in (fewshot, mme, regularizers):
    module.check_config(config)


__all__ = [
  "LABELED",
  "METHODS",
  "Method",
  "Outputs",
  "check_config",
  "for_experiment",
  "get_method",
]
