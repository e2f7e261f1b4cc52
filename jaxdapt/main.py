"""Command line: python -m jaxdapt.main --config=experiments/digits/dann.py --workdir=runs/x

Any config field can be overridden: --config.seed=1 --config.train.steps=500.
Rerunning the same command in the same workdir resumes from its checkpoint.
"""
from __future__ import annotations

import copy
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from jaxdapt.errors import ConfigError, JaxdaptError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, summary.")
flags.mark_flags_as_required(["config", "workdir"])


def format_summary(summaries: dict[str, dict]) -> str:
  """A small table: one row per method, target accuracy under each selection."""
  lines = [f"{'method':<16} {'target acc (last)':>18} {'(best src-val)':>15} "
           f"{'source val':>11}"]
  for name, s in summaries.items():
    lines.append(f"{name:<16} {100 * s['target_acc_last']:>17.1f}% "
                 f"{100 * s['target_acc_best_source_val']:>14.1f}% "
                 f"{100 * s['source_val_acc_last']:>10.1f}%")
  first = next(iter(summaries.values()))
  lines.insert(0, f"{first['source']} → {first['target']}, seed {first['seed']}, "
                  f"{first['steps']} steps")
  return "\n".join(lines)


def run(config, workdir: str) -> dict[str, dict]:
  from jaxdapt import compile_cache, sharding
  compile_cache.enable(config.train.compilation_cache_dir)  # before anything compiles
  sharding.maybe_initialize_distributed()
  from jaxdapt import train
  summaries = {}
  if config.train.baseline:
    base = copy.deepcopy(config)
    with base.unlocked():
      base.method.name = config.train.baseline
      base.train.baseline = ""
    summaries[base.method.name] = train.train_and_evaluate(
        base, os.path.join(workdir, base.method.name))
    if "stopped_at" in summaries[base.method.name]:
      return summaries
    workdir = os.path.join(workdir, config.method.name)
  summaries[config.method.name] = train.train_and_evaluate(config, workdir)
  return summaries


def main(argv):
  del argv
  from absl import logging
  logging.set_verbosity(logging.WARNING)  # TFDS/Orbax info lines drown the progress bar
  try:
    summaries = run(_CONFIG.value, _WORKDIR.value)
  except JaxdaptError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  import jax
  if jax.process_index() != 0:
    return
  stopped = {name: s["stopped_at"] for name, s in summaries.items() if "stopped_at" in s}
  if stopped:
    name, step = next(iter(stopped.items()))
    print(f"{name}: stopped at step {step} (SIGTERM); checkpoint saved in {_WORKDIR.value}. "
          "Rerun the same command to resume.")
    return
  print(format_summary(summaries))


def _unknown_override(argv: list[str]) -> str | None:
  """Names the first --config.X=... override that is not a field of the schema."""
  from jaxdapt.config import base_config, find_field
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    path = arg[len("--config."):].split("=", 1)[0]
    try:
      find_field(base_config(), path, f"--config.{path}")
    except ConfigError as e:
      return str(e)
  return None


def cli():
  problem = _unknown_override(sys.argv[1:])
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    sys.exit(2)
  app.run(main)


if __name__ == "__main__":
  cli()
