"""Transferability ranking: do scores computed without fine-tuning rank candidates the way
fine-tuning does?

  jaxdapt rank --candidates early=RUN@500,late=RUN,scratch=random:dann_digits \
      --dataset uci_digits --out results/ranking [--finetune-steps 300] [--seeds 0,1,2]

A candidate is NAME=RUN (a jaxdapt workdir, its latest checkpoint), NAME=RUN@STEP (that
checkpoint) or NAME=random:MODEL (MODEL randomly initialised, seed 0, with the digits
recipe's head: its LEEP and NCE are what a random source head scores).
1. Scores: the candidate's features and its own source head's logits on the target's train
   split (at most --max-rows rows, drawn with seed 0), stored in OUT/features/NAME
   (features.save_store; reused while candidate, model and rows are unchanged), scored
   against the train labels: LogME, LEEP, NCE, H-score, TransRate (analysis/transferability.py;
   all higher = better).
2. Accuracy: per seed, a source_only run on the labeled train split (data.source =
   data.target = DATASET, test split for accuracy) with the digits recipe
   (config.digits_config: BatchNorm, SGD, DANN lr schedule), the candidate's architecture,
   model.init_from = the candidate (head and bottleneck re-initialised: the default
   model.dont_load; random candidates start from scratch) and --finetune-steps steps. Runs
   live in OUT/runs/NAME/seed_N; a finished one is reused (grid.train_or_reuse), one
   finished under another config is refused. Accuracy = target test accuracy at the last
   step, mean ± std over seeds.
3. Kendall's τ and weighted τ between each score and that accuracy across candidates.
Writes OUT/results.md and OUT/results.json and prints the markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxdapt.errors import ConfigError
from jaxdapt.tools import cli

SCORES = (
  ("logme", "LogME"),
  ("leep", "LEEP"),
  ("nce", "NCE"),
  ("h_score", "H-score"),
  ("transrate", "TransRate"),
)
RANDOM = "random:"
SUBSAMPLE_SEED = 0


@dataclasses.dataclass(frozen=True)
class Candidate:
  name: str
  spec: str  # as given: RUN, RUN@STEP or random:MODEL
  run: str = ""  # '' for a random candidate
  step: int | None = None  # the checkpoint used (RUN: its latest at parse time)
  model: str = ""  # random:MODEL

  @property
  def init_from(self) -> str:
    """model.init_from of the fine-tuning runs ('' = from scratch)."""
    return f"{self.run}@{self.step}" if self.run else ""


def parse_candidate(item: str) -> Candidate:
  """'NAME=RUN[@STEP]' or 'NAME=random:MODEL' → Candidate; ConfigError naming the item."""
  name, eq, spec = item.partition("=")
  where = f"--candidates {item!r}"
  if not eq or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not spec:
    raise ConfigError(
      f"{where}: expected NAME=RUN[@STEP] or NAME=random:MODEL (NAME of letters, digits, _ . -)"
    )
  from jaxdapt import models, trainer
  from jaxdapt.tools.analyze import RunError, check_run

  if spec.startswith(RANDOM):
    model = spec[len(RANDOM) :]
    try:
      models.MODELS.get(model)
    except ConfigError as e:
      raise ConfigError(f"{where}: {e}") from None
    return Candidate(name, spec, model=model)
  run, step = trainer.split_run_step(spec)
  try:
    check_run(run)
  except RunError as e:
    raise ConfigError(f"{where}: {str(e).replace(f'--workdir {run}: ', f'run {run}: ')}") from None
  ckpts = os.path.join(run, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit())
  if step is not None and step not in steps:
    raise ConfigError(
      f"{where}: no checkpoint at step {step} in {ckpts} (steps: {', '.join(map(str, steps))})"
    )
  return Candidate(name, spec, run=run, step=steps[-1] if step is None else step)


def parse_candidates(text: str) -> list[Candidate]:
  cands = [parse_candidate(item) for item in text.split(",") if item]
  names = [c.name for c in cands]
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise ConfigError(f"--candidates: names must be unique; repeated: {', '.join(dup)}")
  if len(cands) < 2:
    raise ConfigError(f"--candidates: a ranking needs >= 2 candidates, got {len(cands)}")
  return cands


def _point_at(config, dataset: str, data_dir: str):
  """Labeled train split of `dataset` as source and target; its test split evaluates both."""
  d = config.data
  d.source = d.target = dataset
  d.source_split = d.target_split = "train"
  d.source_val_split = d.target_test_split = "test"
  if data_dir:
    d.data_dir = data_dir
  return config


def finetune_config(cand: Candidate, args, seed: int):
  """The digits recipe on the target, from the candidate (architecture kept)."""
  from jaxdapt import configs
  from jaxdapt.tools.analyze import load_run_config

  config = _point_at(configs.digits_config(), args.dataset, args.data_dir)
  if cand.run:
    saved = load_run_config(cand.run).model
    for field in ("name", "norm", "small_input"):
      config.model[field] = saved[field]
  else:
    config.model.name = cand.model
  config.model.init_from = cand.init_from
  config.method.name = "source_only"
  config.seed = seed
  config.train.steps = args.finetune_steps
  config.train.selection_points = 0  # the ranking reads the last step's accuracy only
  if args.labeled_per_class:  # the few-shot regime: k labeled rows per class, drawn from seed
    config.method.name = "target_only"
    config.data.target_labeled_per_class = args.labeled_per_class
  return cli.apply_overrides(config, args.set)


def score_config(cand: Candidate, args):
  """A trained candidate: its own run's config (its head, BN policy), all of it loaded from
  the checkpoint; a random one: the fine-tuning recipe's model at seed 0."""
  from jaxdapt.tools.analyze import load_run_config

  if not cand.run:
    return finetune_config(cand, args, seed=SUBSAMPLE_SEED)
  config = _point_at(load_run_config(cand.run), args.dataset, args.data_dir)
  config.model.init_from = cand.init_from
  config.model.dont_load = ()
  return config


def candidate_outputs(cand: Candidate, args, seed: int = SUBSAMPLE_SEED) -> dict[str, np.ndarray]:
  """Features, source-head logits and labels on the target train rows (stored, reused):
  at most --max-rows rows drawn with SUBSAMPLE_SEED, or with --labeled-per-class k the k
  rows per class that fine-tuning seed `seed` trains on."""
  import jax

  from jaxdapt import features, trainer
  from jaxdapt.data.labeled import labeled_subset

  config = score_config(cand, args)
  k = args.labeled_per_class
  meta = {
    "candidate": cand.spec,
    "run": cand.run,
    "step": cand.step,
    "model": json.loads(config.model.to_json()),
    "dataset": args.dataset,
    "split": "train",
    "max_rows": args.max_rows,
    "subsample_seed": SUBSAMPLE_SEED,
    **({"labeled_per_class": k, "seed": seed} if k else {}),
  }
  path = os.path.join(args.out, "features", cand.name, *([f"seed_{seed}"] if k else []))
  stored = features.load_store(path, meta)
  if stored is not None:
    return stored
  exp = trainer.build(config)
  state = exp.init(jax.random.key(config.seed))
  if cand.run:
    state = trainer.load_init_from(exp, state)
  view = trainer.eval_states(exp, state)["target"]  # a DSBN run's target branch; AdaBN if set
  rows = (
    labeled_subset(exp.sources["target"], k, seed)
    if k
    else features.subset(
      exp.sources["target"], args.max_rows, np.random.default_rng(SUBSAMPLE_SEED)
    )
  )
  arrays = features.extract(exp, features.forward_fn(exp), view, rows)
  features.save_store(path, arrays, meta)
  return arrays


def scores(arrays: dict[str, np.ndarray]) -> dict[str, float]:
  """Every score; H-score is NaN where it is degenerate: with feature dim ≥ rows − 1 the
  centred features span every centred label vector, so it is C − 1 for any features (its
  differences are rounding noise, which must not rank anything)."""
  from scipy.special import softmax

  from jaxdapt.analysis import transferability

  f, y = arrays["features"], arrays["labels"]
  out = transferability.transferability_report(
    f, y, softmax(arrays["logits"].astype(np.float64), 1)
  )
  if f.shape[1] >= len(f) - 1 and np.isclose(out["h_score"], len(np.unique(y)) - 1, rtol=1e-6):
    out["h_score"] = float("nan")
  return out


def finetune(cand: Candidate, args, seed: int) -> dict[str, Any]:
  """The summary of one fine-tuning run (reused when finished under the same config)."""
  from jaxdapt.tools import grid, negative_transfer

  workdir = os.path.join(args.out, "runs", cand.name, f"seed_{seed}")
  config = finetune_config(cand, args, seed)
  negative_transfer._check_reusable(workdir, config)  # pylint: disable=protected-access
  return grid.train_or_reuse(
    workdir, lambda: config, {"candidate": cand.name, "seed": seed}, f"rank {cand.name}/seed {seed}"
  )


def seed_scores(cand: Candidate, args, seeds: Sequence[int]) -> tuple[dict[str, float], int, int]:
  """(scores, rows scored, feature dim): with --labeled-per-class, the mean over seeds of
  each seed's scores on its own k-shot rows (what that seed fine-tunes on)."""
  per_seed = [
    candidate_outputs(cand, args, s)
    for s in (seeds if args.labeled_per_class else [SUBSAMPLE_SEED])
  ]
  values = [scores(a) for a in per_seed]
  mean = {key: float(np.mean([v[key] for v in values])) for key in values[0]}
  return mean, int(len(per_seed[0]["labels"])), int(per_seed[0]["features"].shape[1])


def ranking(rows: list[dict[str, Any]]) -> dict[str, Any]:
  """Per score: τ, weighted τ and top-1 regret against the mean fine-tuned accuracy."""
  from jaxdapt.analysis import transferability

  acc = {r["name"]: r["accuracy_mean"] for r in rows if r["accuracy_mean"] is not None}
  out = {}
  for key, _ in SCORES:
    s = {
      r["name"]: r["scores"][key]
      for r in rows
      if key in r["scores"] and math.isfinite(r["scores"][key])
    }
    try:
      out[key] = transferability.ranking_report(s, acc)
    except ValueError as e:
      out[key] = {"error": str(e)}
  return out


def _num(v: Any, fmt: str = ".3f") -> str:
  return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def markdown(rows: list[dict[str, Any]], taus: dict[str, Any], args, seeds: Sequence[int]) -> str:
  from jaxdapt.tools import grid

  k = args.labeled_per_class
  rows_text = (
    f"{args.dataset} train rows"
    if not k
    else f"rows, the {k} labeled {args.dataset} train rows per class that each seed "
    f"fine-tunes on (score = mean over seeds)"
  )
  lines = [
    f"Transferability ranking on {args.dataset}: scores on {rows[0]['n_rows']} "
    f"{rows_text} (no fine-tuning); accuracy = {args.dataset} test accuracy after "
    f"{args.finetune_steps} fine-tuning steps on "
    f"{'those rows' if k else 'the train split'} (last step; %, mean ± std over seeds "
    f"{', '.join(map(str, seeds))}).",
    "",
    "| candidate | init | " + " | ".join(label for _, label in SCORES) + " | fine-tuned acc |",
    "|" + "---|" * (3 + len(SCORES)),
  ]
  for r in rows:
    acc = grid._cell(r["accuracies"])  # pylint: disable=protected-access
    if r["failed"]:
      acc += f" ({r['failed']} failed)"
    lines.append(
      f"| {r['name']} | {r['init']} | "
      + " | ".join(_num(r["scores"].get(k)) for k, _ in SCORES)
      + f" | {acc} |"
    )
  if any(math.isnan(r["scores"]["h_score"]) for r in rows):
    lines += [
      "",
      "H-score –: degenerate (feature dim ≥ rows − 1, where it is C − 1 for any features).",
    ]
  lines += [
    "",
    "| score | Kendall τ | weighted τ | top-1 pick | top-1 regret (points) |",
    "|---|---|---|---|---|",
  ]
  for key, label in SCORES:
    t = taus[key]
    if "error" in t:
      lines.append(f"| {label} | – | – | – | – |")
      continue
    lines.append(
      f"| {label} | {_num(t['kendall_tau'], '+.3f')} | "
      f"{_num(t['weighted_tau'], '+.3f')} | {t['top1']} | "
      f"{_num(100 * t['top1_regret'], '.1f')} |"
    )
  return "\n".join(lines) + "\n"


def _finite(x: Any) -> Any:
  """NaN (τ of tied accuracies) → None, so results.json stays valid JSON."""
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_finite(v) for v in x]
  return None if isinstance(x, float) and not math.isfinite(x) else x


def main(argv: Sequence[str] | None = None) -> int:
  p = cli.parser("rank", __doc__)
  p.formatter_class = argparse.RawDescriptionHelpFormatter
  p.epilog = __doc__.split("\n\n", 1)[1]
  p.add_argument(
    "--candidates",
    required=True,
    help="comma-separated NAME=RUN, NAME=RUN@STEP or NAME=random:MODEL",
  )
  p.add_argument("--dataset", required=True, help="the labeled target (e.g. uci_digits)")
  p.add_argument("--out", default="results/ranking")
  p.add_argument("--finetune-steps", type=int, default=300)
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--max-rows", type=int, default=2000, help="target train rows scored")
  p.add_argument(
    "--labeled-per-class",
    type=int,
    default=0,
    metavar="K",
    help="few-shot transfer: score and fine-tune on K labeled train rows per "
    "class, drawn per seed (0: the whole train split, scored on --max-rows)",
  )
  p.add_argument(
    "--data-dir",
    default="",
    help="TFDS data dir for every config (default: each config's own, else $JAXDAPT_DATA_DIR)",
  )
  p.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="FIELD=VALUE",
    help="override for the fine-tuning runs, e.g. --set data.batch_size=32",
  )
  args = p.parse_args(argv)
  # Everything is checked before anything is scored, trained or written.
  try:
    seeds = [int(s) for s in args.seeds.split(",")]
  except ValueError:
    raise ConfigError(
      f"--seeds: {args.seeds!r} is not a comma-separated list of integers"
    ) from None
  if args.finetune_steps <= 0 or args.max_rows <= 0 or args.labeled_per_class < 0:
    raise ConfigError("--finetune-steps and --max-rows must be positive, --labeled-per-class ≥ 0")
  cands = parse_candidates(args.candidates)
  from jaxdapt import trainer
  from jaxdapt.runtime import compile_cache

  for cand in cands:  # a bad --set or model fails now, before anything trains
    config = finetune_config(cand, args, seeds[0])
    trainer.validate(config)
  compile_cache.enable(config.train.compilation_cache_dir)  # seeds share compiled steps
  start = time.perf_counter()
  rows = []
  for cand in cands:
    score, n_rows, dim = seed_scores(cand, args, seeds)
    runs = [finetune(cand, args, seed) for seed in seeds]
    ok = [r for r in runs if "error" not in r]
    accs = [r["target_acc_last"] for r in ok]
    rows.append(
      {
        "name": cand.name,
        "init": cand.init_from or cand.spec,
        "spec": cand.spec,
        "step": cand.step,
        "n_rows": n_rows,
        "feature_dim": dim,
        "scores": score,
        "accuracies": accs,
        "accuracy_mean": float(np.mean(accs)) if accs else None,
        "accuracy_std": float(np.std(accs)) if accs else None,
        "failed": len(runs) - len(ok),
        "runs": runs,
      }
    )
    print(
      f"[rank] {cand.name}: "
      + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1]["scores"].items())
      + (f"; fine-tuned {100 * rows[-1]['accuracy_mean']:.1f}%" if accs else ""),
      flush=True,
    )
  taus = ranking(rows)
  md = markdown(rows, taus, args, seeds)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(md)
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(
      _finite(
        {
          "dataset": args.dataset,
          "finetune_steps": args.finetune_steps,
          "labeled_per_class": args.labeled_per_class,
          "seeds": seeds,
          "max_rows": args.max_rows,
          "overrides": args.set,
          "candidates": rows,
          "ranking": taus,
          "wall_s": time.perf_counter() - start,
        }
      ),
      f,
      indent=2,
    )
  print(md, end="")
  return 0
