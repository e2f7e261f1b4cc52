"""Supervised and semi-supervised DA with k labeled target examples per class.

`data.target_labeled_per_class = k` (0: off; -1: all) adds a third domain,
`target_labeled` (jaxdapt/data/labeled.py selects the examples), to whatever the
method forwards, and its labels to the supervised cross-entropy, which is then
the mean over the concatenated supervised batches (source and labeled target
batches have the same size, so each domain weighs half; MME trains on such a
concatenated batch). The recipes in experiments/transfer/:
  fewshot_finetune  `target_only`: the k labels alone (from model.init_from, or from
                    scratch: the baseline of jaxdapt/negative_transfer.py)
  fewshot_joint     `source_only` + k: cross-entropy on source and labeled target
  fewshot_dan       `dan` + k: joint training plus MK-MMD between source and target
  mme               `mme` + k: minimax entropy (methods/mme.py)
Methods with their own update step (MCD, ADDA, SHOT, TENT) do not read the
labeled batch and refuse k; `target_oracle` trains on every target label already.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from jaxdapt.errors import ConfigError
from jaxdapt.methods.base import LABELED, METHODS, Method


@METHODS.register("target_only")
@dataclasses.dataclass(frozen=True)
class TargetOnly(Method):
  """Train on the k labeled target examples only (data.target_labeled_per_class)."""

  domains: tuple[str, ...] = (LABELED,)
  supervised_domain: str = LABELED


def with_labeled_target(method: Method, k: int) -> Method:
  """`method` forwarding and supervising the labeled target batch too (k != 0)."""
  if not k or LABELED in method.domains:
    return method
  return dataclasses.replace(
    method,
    domains=method.domains + (LABELED,),
    supervised_domain=method.supervised_domains() + (LABELED,),
  )


def check_config(config: ml_collections.ConfigDict) -> None:
  """data.target_labeled_per_class against the method (run by config.validate)."""
  k, name = config.data.target_labeled_per_class, config.method.name
  if isinstance(k, bool) or not isinstance(k, int) or k < -1:
    raise ConfigError(
      f"data.target_labeled_per_class: must be 0 (off), a positive integer or -1 (all), got {k!r}"
    )
  cls: Any = METHODS.get(name)
  if k == 0:
    if cls is TargetOnly:
      raise ConfigError(
        f"data.target_labeled_per_class: method {name!r} trains on the k "
        f"labeled target examples per class; set k (1, 5, 10 or -1 for all)"
      )
    return
  if cls.has_own_step or cls.supervised_domain == "target":
    raise ConfigError(
      f"data.target_labeled_per_class: method {name!r} does not train on "
      f"labeled target batches (its own update step, or all target labels); "
      f"use 0 with it, or target_only / source_only / an alignment method"
    )
