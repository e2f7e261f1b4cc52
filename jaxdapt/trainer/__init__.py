"""The trainer: config → Experiment (build), evaluation, preemption and the training loop.

It sits above the methods and the step layer and below the tools; it names no method
module: what a method needs is declared on the method (methods/base.py).
"""

from jaxdapt.init_from import load_init_from, split_run_step
from jaxdapt.trainer.build import DOMAINS, build, build_functions, data_dir, train_iterators
from jaxdapt.trainer.evaluate import (
  SELECTION_SPLITS,
  eval_states,
  eval_target,
  evaluate,
  selection_metrics,
  selection_sources,
  target_statistics,
)
from jaxdapt.trainer.experiment import Experiment
from jaxdapt.trainer.loop import check_finite, check_same_run, summarize, train_and_evaluate
from jaxdapt.trainer.preemption import Preemption
from jaxdapt.trainer.validate import validate

__all__ = [
  "DOMAINS",
  "SELECTION_SPLITS",
  "Experiment",
  "Preemption",
  "build",
  "build_functions",
  "check_finite",
  "check_same_run",
  "data_dir",
  "eval_states",
  "load_init_from",
  "split_run_step",
  "eval_target",
  "evaluate",
  "selection_metrics",
  "selection_sources",
  "summarize",
  "target_statistics",
  "train_and_evaluate",
  "train_iterators",
  "validate",
]
