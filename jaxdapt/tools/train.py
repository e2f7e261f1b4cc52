"""Train one experiment: `jaxdapt train --config FILE[:TASK] --workdir DIR [--set F=V ...]`.

Any config field can be overridden with --set (e.g. --set seed=1 --set train.steps=500).
Rerunning the same command in the same workdir resumes from its checkpoint. Exit status:
0 finished, 2 a user error (one line on stderr), 75 stopped by SIGTERM with its checkpoint
saved (requeue and rerun to resume). With
config.train.baseline set (experiments/digits/default.py), the baseline method is trained
first in WORKDIR/BASELINE and the method in WORKDIR/METHOD, and both are printed side by
side.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

from jaxdapt.tools import cli
from jaxdapt.tools.cli import PREEMPTED


def format_summary(summaries: dict[str, dict]) -> str:
  """A small table: one row per method, target accuracy under each selection."""
  lines = [f"{'method':<16} {'target acc (last)':>18} {'(best src-val)':>15} {'source val':>11}"]
  for name, s in summaries.items():
    lines.append(
      f"{name:<16} {100 * s['target_acc_last']:>17.1f}% "
      f"{100 * s['target_acc_best_source_val']:>14.1f}% "
      f"{100 * s['source_val_acc_last']:>10.1f}%"
    )
  first = next(iter(summaries.values()))
  lines.insert(
    0, f"{first['source']} → {first['target']}, seed {first['seed']}, {first['steps']} steps"
  )
  return "\n".join(lines)


def run(config, workdir: str) -> dict[str, dict]:
  """Trains config (and its train.baseline first, if set); the summaries by method."""
  from jaxdapt import sharding, trainer
  from jaxdapt.runtime import compile_cache

  compile_cache.enable(config.train.compilation_cache_dir)  # before anything compiles
  sharding.maybe_initialize_distributed()
  summaries = {}
  if config.train.baseline:
    base = copy.deepcopy(config)
    with base.unlocked():
      base.method.name = config.train.baseline
      base.train.baseline = ""
    summaries[base.method.name] = trainer.train_and_evaluate(
      base, os.path.join(workdir, base.method.name)
    )
    if "stopped_at" in summaries[base.method.name]:
      return summaries
    workdir = os.path.join(workdir, config.method.name)
  summaries[config.method.name] = trainer.train_and_evaluate(config, workdir)
  return summaries


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli.parser("train", __doc__)
  cli.add_config_arguments(parser)
  parser.add_argument(
    "--workdir",
    required=True,
    help="directory for checkpoints, metrics and summary (resumed if present)",
  )
  args = parser.parse_args(argv)
  config = cli.load_config(args.config, args.set)
  from jaxdapt import trainer

  trainer.validate(config)  # what needs no devices or data, before anything is written
  cli.check_workdir(args.workdir)
  from absl import logging

  logging.set_verbosity(logging.WARNING)  # TFDS/Orbax info lines drown the progress bar
  summaries = run(config, args.workdir)
  import jax

  stopped = {name: s["stopped_at"] for name, s in summaries.items() if "stopped_at" in s}
  if stopped:
    name, step = next(iter(stopped.items()))
    if jax.process_index() == 0:
      print(
        f"{name}: stopped at step {step} (SIGTERM); checkpoint saved in {args.workdir}. "
        f"Rerun the same command to resume (exit status {PREEMPTED})."
      )
    return PREEMPTED
  if jax.process_index() == 0:
    print(format_summary(summaries))
  return 0
