"""Runs a task × method × seed grid and writes a results table (markdown + JSON).

  jaxdapt grid --tasks syn2uci,uci2ucim \
      --methods source_only,dann,dan,deep_coral,target_oracle --seeds 0,1,2 --out results/digits

Two-stage methods (ADDA, TENT, SHOT) name their stage 1 in their experiment file
(STAGE1); the grid trains that run for the same task and seed first (or reuses it)
and starts the method from it, so `--methods all` needs no manual chaining.

Each run lives in OUT/runs/TASK/METHOD/seed_N. A run whose summary.json exists
is reused, not redone; a half-finished run resumes from its checkpoint; a run
that fails (NaN loss, bad config) is recorded with its error and the grid goes
on. Target accuracy is reported under three labelled selections: the last step,
the step with the best source-validation accuracy (label-free for the target),
and the best step on target test (the oracle Transfer-Learning-Library reports;
not a legitimate selection). The last column is a label-free score of the
final model: information maximisation on the target, H(E[p]) − E[H(p)], higher
is better; it uses target images, never target labels.
"""

from __future__ import annotations

import json
import os
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxdapt.errors import ConfigError
from jaxdapt.tools import cli
from jaxdapt.tools.cli import apply_overrides, call_get_config, config_module

# Table order for `--methods all`: bounds, then the method families of issue #3; experiment
# files not listed here follow alphabetically.
METHOD_ORDER = (
  "source_only",
  "dann",
  "dan",
  "deep_coral",
  "cdan",
  "cdan_e",
  "dann_bsp",
  "mdd",
  "jan",
  "mcd",
  "afn",
  "mcc",
  "entropy_min",
  "adabn",
  "dsbn",
  "fixmatch",
  "adda",
  "shot_source",
  "shot",
  "tent",
  "target_oracle",
)
NOT_METHODS = ("default",)  # experiment files that are not one method (default runs two)

SELECTIONS = (
  ("target_acc_last", "last step"),
  ("target_acc_best_source_val", "best source-val"),
  ("target_acc_oracle", "best target-test (oracle)"),
)


def all_methods(experiments_dir: str) -> list[str]:
  """Every method with an experiment file in `experiments_dir`, in METHOD_ORDER."""
  names = sorted(
    f[:-3]
    for f in os.listdir(experiments_dir)
    if f.endswith(".py") and not f.startswith("_") and f[:-3] not in NOT_METHODS
  )
  rank = {m: i for i, m in enumerate(METHOD_ORDER)}
  return sorted(names, key=lambda m: (rank.get(m, len(rank)), m))


def experiment_module(method: str, experiments_dir: str):
  """The experiment file METHOD.py, imported (its get_config and optional grid hints)."""
  path = os.path.join(experiments_dir, f"{method}.py")
  if not os.path.exists(path):
    raise ConfigError(f"--methods: no config {path} for method {method!r}")
  return config_module(path, "--methods")


def load_config(method: str, task: str, experiments_dir: str, overrides: Sequence[str] = ()):
  """METHOD's config for TASK with the grid's overrides, except the fields the experiment
  file pins (GRID_PINNED, e.g. TENT's one pass over the test stream: a grid-wide
  train.steps=500 must not turn it into five passes)."""
  module = experiment_module(method, experiments_dir)
  pinned = set(getattr(module, "GRID_PINNED", ()))
  path = os.path.join(experiments_dir, f"{method}.py")
  return apply_overrides(
    call_get_config(module, path, task, "--tasks"),
    [o for o in overrides if o.split("=", 1)[0] not in pinned],
  )


def run_dir(out: str, task: str, method: str, seed: int) -> str:
  """The workdir of one grid run: OUT/runs/TASK/METHOD/seed_N."""
  return os.path.join(out, "runs", task, method, f"seed_{seed}")


def stage1_of(method: str, experiments_dir: str) -> str | None:
  """The method whose finished run a two-stage method starts from (the experiment
  file's STAGE1: ADDA and TENT from source_only, SHOT from shot_source), else None."""
  return getattr(experiment_module(method, experiments_dir), "STAGE1", None)


def run_one(
  method: str,
  task: str,
  seed: int,
  out: str,
  experiments_dir: str,
  overrides: Sequence[str],
  train_missing: bool = True,
) -> dict[str, Any]:
  ident = {"method": method, "task": task, "seed": seed}
  stage1 = stage1_of(method, experiments_dir)
  stage1_dir = run_dir(out, task, stage1 or "", seed)
  if stage1:  # the same task, seed and overrides as this run; reused when finished
    first = run_one(stage1, task, seed, out, experiments_dir, overrides, train_missing)
    if "error" in first:
      return {**ident, "error": f"stage 1 ({stage1}) failed: {first['error']}"}
    if "missing" in first:
      return {**ident, "missing": True}

  def make_config():
    config = load_config(method, task, experiments_dir, overrides)
    config.seed = seed
    if stage1:
      config.model.init_from = os.path.abspath(stage1_dir)
    return config

  return train_or_reuse(
    run_dir(out, task, method, seed),
    make_config,
    ident,
    f"{task}/{method}/seed {seed}",
    train_missing,
  )


def train_or_reuse(
  workdir: str,
  make_config: Callable[[], Any],
  ident: dict[str, Any],
  label: str,
  train_missing: bool = True,
) -> dict[str, Any]:
  """The run in `workdir`: its summary.json if finished, else trained from make_config()
  (resuming a checkpoint). A failure is recorded (error.txt, `ident` + 'error'), not
  raised, so one bad run does not lose the others (rank and transfer-table share this)."""
  from jaxdapt import trainer

  summary_path = os.path.join(workdir, "summary.json")
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      return {**json.load(f), "reused": True}
  if not train_missing:
    return {**ident, "missing": True}
  config = make_config()
  config.train.progress_bar = False
  start = time.perf_counter()
  try:
    summary = trainer.train_and_evaluate(config, workdir)
  except Exception as e:  # one failed run must not lose the grid
    error = f"{type(e).__name__}: {e}"
    print(f"[grid] {label} FAILED: {error}", flush=True)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "error.txt"), "w") as f:
      f.write(traceback.format_exc())
    return {**ident, "error": error}
  if "stopped_at" in summary:  # SIGTERM: the run checkpointed; the grid stops, unfinished
    print(
      f"[grid] {label}: stopped at step {summary['stopped_at']} (SIGTERM); checkpoint "
      f"saved in {workdir}. Rerun the same command to resume (exit status {cli.PREEMPTED}).",
      flush=True,
    )
    raise SystemExit(cli.PREEMPTED)
  summary["wall_s"] = time.perf_counter() - start
  with open(summary_path, "w") as f:
    json.dump(summary, f, indent=2)
  return summary


def last_eval(workdir: str) -> dict[str, Any]:
  """The last eval row of a run's metrics.jsonl ({} if none)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  evals = [r for r in rows if r["kind"] == "eval"]
  return evals[-1] if evals else {}


def _cell(values: list[float]) -> str:
  if not values:
    return "–"
  v = 100 * np.asarray(values)
  return f"{v.mean():.1f} ± {v.std():.1f}"


def table(
  results: list[dict[str, Any]],
  tasks: Sequence[str],
  methods: Sequence[str],
  baseline: str = "source_only",
) -> str:
  """Markdown: one row per task × method, mean ± std over seeds per selection; the last-step
  cell also holds the difference to `baseline`'s mean, marked '> 2 std' when it exceeds
  twice the larger of the two seed stds (either sign)."""
  head = (
    "| task | method | seeds | "
    + " | ".join(label for _, label in SELECTIONS)
    + " | target IM (label-free) |"
  )
  lines = [head, "|" + "---|" * (4 + len(SELECTIONS))]
  for task in tasks:
    base = [
      r["target_acc_last"]
      for r in results
      if r.get("task") == task
      and r["method"] == baseline
      and "error" not in r
      and "missing" not in r
    ]
    for method in methods:
      rows = [r for r in results if r.get("task") == task and r["method"] == method]
      ok = [r for r in rows if "error" not in r and "missing" not in r]
      cells = [_cell([r[key] for r in ok]) for key, _ in SELECTIONS]
      if base and ok and method not in (baseline, "target_oracle"):
        last = [r["target_acc_last"] for r in ok]
        gain = 100 * (np.mean(last) - np.mean(base))
        # Beyond seed noise: the difference exceeds twice the larger of the two seed stds.
        clear = len(ok) > 1 and abs(gain) > 2 * 100 * max(np.std(last), np.std(base))
        cells[0] += f" ({gain:+.1f}{', > 2 std' if clear else ''})"
      failed = len([r for r in rows if "error" in r])
      missing = len([r for r in rows if "missing" in r])
      seeds = (
        f"{len(ok)}"
        + (f" ({failed} failed)" if failed else "")
        + (f" ({missing} not run)" if missing else "")
      )
      ims = [r["target_im_last"] for r in ok if "target_im_last" in r]
      im = f"{np.mean(ims):.3f}" if ims else "–"
      lines.append(f"| {task} | {method} | {seeds} | " + " | ".join(cells) + f" | {im} |")
  return "\n".join(lines)


def eval_rows(workdir: str) -> list[dict[str, Any]]:
  """The eval rows of a run's metrics.jsonl ([] if none)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [r for r in map(json.loads, filter(str.strip, f)) if r["kind"] == "eval"]


def selection_table(
  out: str, results: list[dict[str, Any]], tasks: Sequence[str], methods: Sequence[str]
) -> tuple[str, dict[str, Any]]:
  """Markdown + data: target accuracy (mean ± std over seeds) at the eval step each
  label-free criterion picks, beside the last step and the oracle; a criterion a run
  did not log (runs from before it existed) is left out of that run's cell."""
  from jaxdapt.analysis import selection
  from jaxdapt.tools.analyze import LOGGED_CRITERIA

  names = ("last", *LOGGED_CRITERIA, "oracle")
  data: dict[str, Any] = {}
  lines = ["| task | method | " + " | ".join(names) + " |", "|" + "---|" * (2 + len(names))]
  for task in tasks:
    for method in methods:
      picked: dict[str, list[float]] = {n: [] for n in names}
      for r in results:
        if r.get("task") != task or r["method"] != method or "error" in r or "missing" in r:
          continue
        history = eval_rows(run_dir(out, task, method, r["seed"]))
        logged = [
          c for c in LOGGED_CRITERIA if any(selection.score(h, c) is not None for h in history)
        ]
        if not history:
          continue
        for name, row in selection.selection_report(history, logged).items():
          picked[name].append(row["target_test_acc"])
      data[f"{task}/{method}"] = picked
      runs = len(picked["last"])
      # A criterion logged by fewer of the runs than the row has says over how many.
      lines.append(
        f"| {task} | {method} | "
        + " | ".join(
          _cell(picked[n]) + (f" (n={len(picked[n])})" if 0 < len(picked[n]) < runs else "")
          for n in names
        )
        + " |"
      )
  return "\n".join(lines), data


def cost_table(
  out: str,
  results: list[dict[str, Any]],
  tasks: Sequence[str],
  methods: Sequence[str],
  experiments_dir: str,
  overrides: Sequence[str],
) -> tuple[str, dict[str, Any]]:
  """Markdown + data: per task × method with finished runs, what it trains and stores
  (tools/costs.py: trainable parameters, optimizer-state bytes, checkpoint MB and ms per
  step, the last two mean ± std over its seeds)."""
  from jaxdapt.tools import costs

  lines = [
    "| task | method | trainable parameters | optimizer state (MB) | checkpoint (MB) | ms/step |",
    "|---|---|---|---|---|---|",
  ]
  data: dict[str, Any] = {}
  for task in tasks:
    for method in methods:
      ok = [
        r
        for r in results
        if r.get("task") == task and r["method"] == method and "error" not in r
        if "missing" not in r
      ]
      if not ok:
        continue
      config = load_config(method, task, experiments_dir, overrides)
      stage1 = stage1_of(method, experiments_dir)
      if stage1:  # builds the stage-2 model (source-free methods check their start)
        config.model.init_from = os.path.abspath(run_dir(out, task, stage1, ok[0]["seed"]))
      model = costs.model_costs(config)
      dirs = [run_dir(out, task, method, r["seed"]) for r in ok]
      ckpt = [b for b in map(costs.checkpoint_bytes, dirs) if b is not None]
      step = [s for d in dirs if (s := costs.step_seconds(d, model["images_per_step"]))]
      row = {**model, "checkpoint_bytes": ckpt, "step_s": step}
      data[f"{task}/{method}"] = row
      share = 100 * model["trainable"] / model["parameters"]
      lines.append(
        f"| {task} | {method} | {model['trainable']:,} ({share:.2f} %) | "
        f"{model['optimizer_state_bytes'] / 1e6:.1f} | "
        + (f"{np.mean(ckpt) / 1e6:.1f}" if ckpt else "–")
        + " | "
        + (f"{1e3 * np.mean(step):.0f} ± {1e3 * np.std(step):.0f}" if step else "–")
        + " |"
      )
  return "\n".join(lines), data


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli.parser("grid", __doc__)
  parser.add_argument("--tasks", default="syn2uci,syn2ucim,uci2ucim,fashion2fashionm")
  parser.add_argument(
    "--methods",
    default="source_only,dann,dan,deep_coral,target_oracle",
    help="comma-separated experiment names, or 'all' (every file in --experiments but default.py)",
  )
  parser.add_argument("--seeds", default="1,2,3")
  parser.add_argument("--out", default="results/digits")
  parser.add_argument("--experiments", default="experiments/digits")
  parser.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="FIELD=VALUE",
    help="config override applied to every run, e.g. --set train.steps=500",
  )
  parser.add_argument(
    "--table-only",
    action="store_true",
    help="train nothing: tabulate the finished runs, list the others as not run",
  )
  parser.add_argument(
    "--baseline",
    default="source_only",
    help="the method each row's last-step accuracy is compared with (default source_only)",
  )
  parser.add_argument(
    "--costs",
    action="store_true",
    help="also tabulate what each method trains and stores: trainable parameters, "
    "optimizer-state and checkpoint bytes, ms per step",
  )
  args = parser.parse_args(argv)
  # A typo in --methods/--tasks/--seeds/--set fails now, not hours into the grid (and
  # before OUT is created).
  if not os.path.isdir(args.experiments):
    raise ConfigError(f"--experiments: {args.experiments}: no such directory")
  tasks = args.tasks.split(",")
  methods = all_methods(args.experiments) if args.methods == "all" else args.methods.split(",")
  if args.baseline != "source_only" and args.baseline not in methods:
    raise ConfigError(f"--baseline: {args.baseline!r} is not one of --methods ({args.methods})")
  try:
    seeds = [int(s) for s in args.seeds.split(",")]
  except ValueError:
    raise ConfigError(
      f"--seeds: {args.seeds!r} is not a comma-separated list of integers"
    ) from None
  try:
    for task in tasks:
      for method in methods:
        load_config(method, task, args.experiments, args.set)
  except (KeyError, ValueError) as e:
    if isinstance(e, ConfigError):
      raise
    raise ConfigError(str(e)) from None
  os.makedirs(args.out, exist_ok=True)
  start = time.perf_counter()
  results = []
  for task in tasks:
    for method in methods:
      for seed in seeds:
        r = run_one(
          method,
          task,
          seed,
          args.out,
          args.experiments,
          args.set,
          train_missing=not args.table_only,
        )
        # The table's row is the experiment (dann_bsp, dsbn, shot_source), not the trainer's
        # method name (dann, dann, source_only) that the summary carries.
        r["task"], r["method"] = task, method
        last = last_eval(run_dir(args.out, task, method, seed))
        if "target_test_im" in last:
          r["target_im_last"] = last["target_test_im"]
        results.append(r)
        if "error" not in r and "missing" not in r:
          print(
            f"[grid] {task}/{method}/seed {seed}: target {100 * r['target_acc_last']:.1f}% "
            f"(last), {100 * r['target_acc_best_source_val']:.1f}% (best source-val)"
            f"{' [reused]' if r.get('reused') else ''}",
            flush=True,
          )
  wall = time.perf_counter() - start
  import jax

  md = table(results, tasks, methods, args.baseline)
  run_wall = sum(r.get("wall_s", 0.0) for r in results)
  trained = sum("missing" not in r for r in results)
  footer = (
    f"\n\n{trained} runs, {run_wall / 60:.1f} min of training in all (sum of the "
    f"runs' wall times; this invocation {wall / 60:.1f} min) on "
    f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, "
    f"jax {jax.__version__}, {jax.devices()[0].platform}); overrides: "
    f"{' '.join(args.set) or 'none'}. Per-run wall times are in results.json.\n"
  )
  sel_md, sel_data = selection_table(args.out, results, tasks, methods)
  sel_md = (
    "\n\nLabel-free checkpoint selection: target accuracy at the eval step each "
    "criterion picks (no target labels; '-' minimises; sel_* are computed on target "
    "train images, target_test_* on target test images), beside the last step and "
    "the oracle (best target test, uses labels):\n\n" + sel_md + "\n"
  )
  cost_md, cost_data = "", {}
  if args.costs:
    from jaxdapt.tools.costs import COST_HELP

    cost_md, cost_data = cost_table(args.out, results, tasks, methods, args.experiments, args.set)
    cost_md = f"\n\nCosts ({COST_HELP}):\n\n{cost_md}\n"
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(md + footer + sel_md + cost_md)
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(
      {
        "results": results,
        "selection": sel_data,
        "costs": cost_data,
        "wall_s": wall,
        "overrides": args.set,
      },
      f,
      indent=2,
    )
  print(md + footer + sel_md + cost_md)
  return 0
