"""Negative-transfer check: does the transfer recipe beat training on the k target labels alone?

  jaxdapt negative-transfer --config experiments/transfer/fewshot_joint.py[:ARG] \
      [--seeds 0,1,2] [--k 5] [--out DIR] [--set FIELD=VALUE ...]

Per seed it trains the recipe of --config (k labeled target examples per class,
from model.init_from and/or with the source data) and the target-only baseline:
the same config with method `target_only`, a random init (no init_from), no
regulariser and every parameter at the base learning rate (no preset, LLRD or
gradual unfreezing). Both runs of a seed see the same k labeled examples (drawn
from the seed), model and schedule. It prints target-test accuracy at the last
step, mean ± std over seeds, and the verdict on the paired per-seed difference
(± is its std over seeds):
  NEGATIVE TRANSFER: transfer loses by X ± Y points
  transfer helps by X ± Y points
with "(within seed noise)" appended when |mean| ≤ std. Writes
OUT/negative_transfer.json. Runs live in OUT/{transfer,baseline}/runs/ARG/NAME/seed_N
(jaxdapt/tools/grid.py's layout, `grid.run_one`); a finished run is reused, and one that
was finished under a different config is refused. Exit status: 0 when the check ran, 2
for bad input, 1 when some run failed (each failure is listed).
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxdapt.errors import ConfigError
from jaxdapt.tools import cli, grid

# The baseline: the recipe's model, data and schedule, trained on the labeled target only.
BASELINE = (
  "method.name=target_only",
  "model.init_from=",
  "optim.preset=",
  "optim.llrd=0",
  "optim.unfreeze=[]",
  'optim.rules=[[".*", 1.0]]',
  "regularizer.l2sp_alpha=0",
  "regularizer.l2sp_beta=0",
  "regularizer.delta_weight=0",
  "regularizer.bss_weight=0",
  "regularizer.lwf_weight=0",
)
ROLES = ("baseline", "transfer")


def parse_config(spec: str) -> tuple[str, str, str]:
  """'DIR/NAME.py[:ARG]' → (DIR, NAME, ARG); ARG defaults to get_config's default. The
  file is loaded and get_config(ARG) called here, so a bad file or ARG is one ConfigError."""
  path, sep, arg = spec.partition(":")
  module = cli.config_module(path)
  if not path.endswith(".py"):
    raise ConfigError(f"--config: {path}: not a .py file")
  if not sep:
    params = list(inspect.signature(module.get_config).parameters.values())
    if not params or params[0].default is inspect.Parameter.empty:
      raise ConfigError(f"--config: {path} needs its argument (FILE:ARG)")
    arg = params[0].default
  cli.call_get_config(module, path, arg)
  return os.path.dirname(path) or ".", os.path.basename(path)[:-3], arg


def _check_reusable(workdir: str, config) -> None:
  """A finished run is reused only if it was trained under this config."""
  from jaxdapt import trainer

  saved = os.path.join(workdir, "config.json")
  if os.path.exists(os.path.join(workdir, "summary.json")) and os.path.exists(saved):
    with open(saved) as f:
      trainer.check_same_run(json.load(f), config)  # pylint: disable=protected-access


def run_pair(
  experiments: str, name: str, arg: str, seed: int, out: str, overrides: Sequence[str]
) -> dict[str, dict[str, Any]]:
  """{'baseline': summary, 'transfer': summary} of one seed (finished runs reused)."""
  results = {}
  for role in ROLES:
    role_overrides = list(overrides) + (list(BASELINE) if role == "baseline" else [])
    root = os.path.join(out, role)
    config = grid.load_config(name, arg, experiments, role_overrides)
    config.seed = seed
    _check_reusable(os.path.join(root, "runs", arg, name, f"seed_{seed}"), config)
    results[role] = grid.run_one(name, arg, seed, root, experiments, role_overrides)
  return results


def _stats(values: Sequence[float]) -> dict[str, Any]:
  v = np.asarray(values, np.float64)
  return {"per_seed": v.tolist(), "mean": float(v.mean()), "std": float(v.std())}


def within_noise(difference: dict[str, Any]) -> bool:
  """|mean| ≤ std over more than one seed: the sign of the difference is not established."""
  return len(difference["per_seed"]) > 1 and abs(difference["mean"]) <= difference["std"]


def verdict(difference: dict[str, Any]) -> str:
  """The verdict line for the per-seed differences transfer − baseline (points)."""
  mean, std = difference["mean"], difference["std"]
  line = (
    f"NEGATIVE TRANSFER: transfer loses by {-mean:.1f} ± {std:.1f} points"
    if mean < 0
    else f"transfer helps by {mean:.1f} ± {std:.1f} points"
  )
  return line + (" (within seed noise)" if within_noise(difference) else "")


def report(results: list[dict[str, dict]], seeds: Sequence[int]) -> dict[str, Any]:
  """Accuracies (points) of both runs, their paired difference and the verdict."""
  acc = {role: [100 * r[role]["target_acc_last"] for r in results] for role in ROLES}
  out = {role: _stats(acc[role]) for role in ROLES}
  out["difference"] = _stats(np.subtract(acc["transfer"], acc["baseline"]))
  out["verdict"] = verdict(out["difference"])
  out["negative_transfer"] = out["difference"]["mean"] < 0
  out["seeds"] = list(seeds)
  return out


def format_report(summary: dict[str, Any], title: str, name: str) -> str:
  rows = (
    ("target-only from scratch", summary["baseline"]),
    (f"transfer ({name})", summary["transfer"]),
    ("transfer − baseline", summary["difference"]),
  )
  lines = [title, f"{'run':<28} {'target acc (last)':>18}   per seed"]
  for label, s in rows:
    lines.append(
      f"{label:<28} {s['mean']:>11.1f} ± {s['std']:<4.1f}   "
      + ", ".join(f"{v:.1f}" for v in s["per_seed"])
    )
  return "\n".join(lines + [summary["verdict"]])


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli.parser("negative-transfer", __doc__)
  cli.add_config_arguments(parser)
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument(
    "--k", type=int, default=None, help="labeled target examples per class (default: the config's)"
  )
  parser.add_argument("--out", default=None, help="default results/negative_transfer/NAME_ARG_kK")
  args = parser.parse_args(argv)
  experiments, name, arg = parse_config(args.config)
  overrides = list(args.set) + (
    [f"data.target_labeled_per_class={args.k}"] if args.k is not None else []
  )
  try:
    config = grid.load_config(name, arg, experiments, overrides)
  except (KeyError, ValueError) as e:
    if isinstance(e, ConfigError):
      raise
    raise ConfigError(str(e)) from None
  k = config.data.target_labeled_per_class
  if not k:
    raise ConfigError(
      "data.target_labeled_per_class: the check compares runs on k labeled "
      "target examples per class; the config has 0 (set --k)"
    )
  if config.method.name == "target_only" and not config.model.init_from:
    raise ConfigError(
      "model.init_from: this recipe trains on the labeled target alone, so "
      "without a starting model it is the baseline itself; set it with "
      "--set model.init_from=DIR"
    )
  try:
    seeds = [int(s) for s in args.seeds.split(",")]
  except ValueError:
    raise ConfigError(
      f"--seeds: {args.seeds!r} is not a comma-separated list of integers"
    ) from None
  out = args.out or os.path.join(
    "results", "negative_transfer", f"{name}_{arg.replace(',', '_')}_k{k}"
  )
  results = [run_pair(experiments, name, arg, seed, out, overrides) for seed in seeds]
  failed = [
    f"seed {s} {role}: {r[role]['error']}"
    for s, r in zip(seeds, results)
    for role in ROLES
    if "error" in r[role]
  ]
  if failed:
    print("error: runs failed (see their error.txt):\n  " + "\n  ".join(failed), file=sys.stderr)
    return 1
  summary = report(results, seeds)
  summary.update(config=args.config, k=k, overrides=overrides, out=out)
  title = (
    f"negative-transfer check: {args.config}, k = {'all' if k == -1 else k} labeled "
    f"target examples per class, seeds {', '.join(map(str, seeds))}"
  )
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "negative_transfer.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print(format_report(summary, title, name), flush=True)
  return 0
