"""Post-hoc analysis of a finished run: jaxdapt analyze --workdir RUN

Rebuilds the experiment from RUN/config.json, restores the latest checkpoint,
and compares it with the model at initialisation ("before"), or with another run's
model (`--before RUN`, e.g. the source-only run: before/after adaptation), on the same rows:
  * domain shift (PAD, MMD² with a permutation test, CORAL; per class) between
    source-validation and target-test features, before and after;
  * label-free selection: the criteria of `analysis.selection` for the final
    model, and which logged eval step each logged criterion would have picked,
    with its true target accuracy against the last step and the oracle;
  * plots (t-SNE before/after, training curves, target confusion matrix) and
    one self-contained RUN/analysis/report.html; every number goes to
    RUN/analysis/analysis.json.
Target labels are used only for reporting (accuracy, per-class shift, the
oracle), never by a selection criterion.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxdapt.errors import ConfigError, JaxdaptError
from jaxdapt.tools import cli

PyTree = Any
SPLITS = ("source", "source_val", "target", "target_test")
# Criteria the trainer logs in each eval row (selection.select syntax: '-' minimises).
LOGGED_CRITERIA = (
  "source_val_acc",
  "target_test_im",
  "-target_test_entropy",
  "sel_info_max",
  "sel_snd",
  "sel_snd_features",
  "sel_neg_dev",
)


class RunError(JaxdaptError):
  """RUN is not an analysable run directory; the message says what is missing."""


def _tuplify(value: Any) -> Any:
  """JSON turns the config's tuples into lists; the schema (and hashing) wants tuples back."""
  if isinstance(value, list):
    return tuple(_tuplify(v) for v in value)
  return value


def load_run_config(run: str):
  """RUN/config.json merged over `base_config()`, so fields added to the schema after
  the run was trained take their defaults (as a resume would)."""
  from jaxdapt import config as config_lib

  path = os.path.join(run, "config.json")
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise RunError(f"{path}: not readable as a run's config ({e})") from None
  if not isinstance(saved, dict):
    raise RunError(f"{path}: not a run's config (a JSON object)")
  config = config_lib.base_config()

  def merge(node, values: dict, prefix: str) -> None:
    for key, value in values.items():
      name = f"{prefix}{key}"
      if key not in node:
        raise ConfigError(f"{name}: in {run}/config.json but not in this jaxdapt's schema")
      if isinstance(value, dict):
        merge(node[key], value, name + ".")
        continue
      try:
        node[key] = _tuplify(value)
      except TypeError as e:
        raise ConfigError(f"{name}: saved value {value!r} does not fit the schema ({e})") from None

  merge(config, saved, "")
  return config


def check_run(run: str, flag: str = "--workdir") -> None:
  """Raises RunError naming the first missing piece (before anything is created in RUN)."""
  if not os.path.isdir(run):
    raise RunError(f"{flag} {run}: no such directory")
  if not os.path.isfile(os.path.join(run, "config.json")):
    raise RunError(f"{flag} {run}: no config.json (not a run written by jaxdapt train)")
  ckpt_dir = os.path.join(run, "checkpoints")
  steps = [d for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
  if not steps:
    raise RunError(f"{flag} {run}: no checkpoint in {ckpt_dir}")


def _before_state(exp, config, before_run: str = ""):
  """The model to compare with: `before_run`'s (another workdir of the same architecture,
  e.g. the source-only run, so before/after isolates the adaptation), else the model the
  run started from: random init, or its init_from weights if still there."""
  import dataclasses

  import jax

  from jaxdapt import trainer

  state = exp.init(jax.random.key(config.seed))
  if before_run:
    run, _ = trainer.split_run_step(before_run)
    check_run(run, "--before")
    other = config.copy_and_resolve_references()
    with other.unlocked():
      other.model.init_from, other.model.dont_load = before_run, ()
    try:  # strict: every parameter of this run's model must come from before_run
      short = os.path.join(*os.path.normpath(before_run).split(os.sep)[-2:])  # .../METHOD/seed_N
      return (
        trainer.load_init_from(dataclasses.replace(exp, config=other), state),
        f"run …/{short}",
      )
    except Exception as e:
      raise RunError(f"--before {before_run}: not loadable into this run's model ({e})") from e
  if config.model.init_from:
    try:
      return trainer.load_init_from(exp, state), f"init_from {config.model.init_from}"
    except Exception as e:  # the import may have moved; random init still shows the trend
      print(
        f"warning: init_from {config.model.init_from} not loadable ({e}); "
        f"'before' is the random initialisation",
        file=sys.stderr,
      )
  return state, "random initialisation"


def _clean(x: Any) -> Any:
  """JSON-ready: numpy scalars → Python, NaN/Inf → None, int keys → str."""
  if isinstance(x, dict):
    return {str(k): _clean(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_clean(v) for v in x]
  if isinstance(x, np.generic):
    x = x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def _accuracy(d: dict[str, np.ndarray]) -> float:
  return float((d["logits"].argmax(1) == d["labels"]).mean())


def load_eval_rows(run: str) -> list[dict[str, Any]]:
  path = os.path.join(run, "metrics.jsonl")
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [r for r in rows if r.get("kind") == "eval"]


def analyze(
  run: str,
  *,
  max_train: int = 2000,
  tsne_points: int = 1000,
  shift_points: int = 2000,
  n_permutations: int = 200,
  seed: int = 0,
  before_run: str = "",
) -> dict[str, Any]:
  """Everything the command computes; writes RUN/analysis/ and returns analysis.json's dict."""
  check_run(run)
  import jax

  from jaxdapt import checkpoint, features, trainer
  from jaxdapt.analysis import plots, selection, shift
  from jaxdapt.analysis._util import subsample

  t0 = time.perf_counter()
  config = load_run_config(run)
  exp = trainer.build(config)
  before, before_kind = _before_state(exp, config, before_run)
  ckpt = checkpoint.Checkpointer(run, config.train.keep_checkpoints)
  try:
    after, _ = ckpt.restore(checkpoint.abstract_like(before))
  finally:
    ckpt.close()
  step = int(jax.device_get(after.step))

  rng = np.random.default_rng(seed)
  sources = {
    split: features.subset(
      exp.sources[split], max_train if split in ("source", "target") else None, rng
    )
    for split in SPLITS
  }
  forward = features.forward_fn(exp)
  # Each split is read with its domain's model (its DSBN branch / AdaBN statistics).
  feats = {}
  for name, state in (("before", before), ("after", after)):
    views = trainer.eval_states(exp, state)
    feats[name] = {
      split: features.extract(exp, forward, views[split.split("_")[0]], sources[split])
      for split in SPLITS
    }
  t_extract = time.perf_counter() - t0

  accuracy = {name: {split: _accuracy(feats[name][split]) for split in SPLITS} for name in feats}
  sv, tt = "source_val", "target_test"
  # The same rows before and after, so the two reports differ only by the model.
  # (PAD's cross-validated logistic regression dominates the cost on nearly separable features.)
  i_s = subsample(rng, len(feats["after"][sv]["labels"]), shift_points)
  i_t = subsample(rng, len(feats["after"][tt]["labels"]), shift_points)
  shift_rep = {
    name: shift.shift_report(
      f[sv]["features"][i_s],
      f[tt]["features"][i_t],
      f[sv]["labels"][i_s],
      f[tt]["labels"][i_t],
      seed=seed,
      n_permutations=n_permutations,
    )
    for name, f in feats.items()
  }

  fa = feats["after"]
  final_criteria = {}
  for tsplit in ("target", "target_test"):
    final_criteria[tsplit] = selection.criteria(
      target_logits=fa[tsplit]["logits"],
      target_features=fa[tsplit]["features"],
      source_val_logits=fa[sv]["logits"],
      source_val_labels=fa[sv]["labels"],
      source_val_features=fa[sv]["features"],
      source_train_features=fa["source"]["features"],
      seed=seed,
    )

  history = load_eval_rows(run)
  available = [
    c
    for c in LOGGED_CRITERIA
    if any(isinstance(r.get(c.lstrip("-")), (int, float)) for r in history)
  ]
  missing = [c for c in LOGGED_CRITERIA if c not in available]
  sel = selection.selection_report(history, available) if history else {}

  out_dir = os.path.join(run, "analysis")
  os.makedirs(out_dir, exist_ok=True)
  fb = feats["before"]
  images = {
    "tsne": plots.plot_tsne_before_after(
      os.path.join(out_dir, "tsne_before_after.png"),
      (fb[sv]["features"], fb[tt]["features"]),
      (fa[sv]["features"], fa[tt]["features"]),
      fa[sv]["labels"],
      fa[tt]["labels"],
      max_points=tsne_points,
      seed=seed,
      title=f"Features, source val vs target test: before ({before_kind}) / after (step {step})",
    ),
    "confusion": plots.plot_confusion(
      os.path.join(out_dir, "confusion_target_test.png"),
      fa[tt]["labels"],
      fa[tt]["logits"].argmax(1),
      title=f"Target test confusion (step {step})",
    ),
  }
  if history:
    marks = {name: r["step"] for name, r in sel.items() if name != "last"}
    images["curves"] = plots.plot_training_curves(
      os.path.join(out_dir, "training_curves.png"),
      os.path.join(run, "metrics.jsonl"),
      marks=marks,
      title=f"{config.method.name}: {config.data.source} → {config.data.target}",
    )

  result = _clean(
    {
      "run": os.path.abspath(run),
      "step": step,
      "method": config.method.name,
      "source": config.data.source,
      "target": config.data.target,
      "seed": config.seed,
      "before": before_kind,
      "n": {split: len(fa[split]["labels"]) for split in SPLITS},
      "accuracy": accuracy,
      "shift": shift_rep,
      "criteria_final": final_criteria,
      "criteria_orientation": selection.ORIENTATION,
      "selection": sel,
      "selection_criteria_missing": missing,
      "eval_steps": [r["step"] for r in history],
      "images": {k: os.path.basename(v) for k, v in images.items()},
      "wall_s": {"extract": t_extract, "total": time.perf_counter() - t0},
    }
  )
  with open(os.path.join(out_dir, "analysis.json"), "w") as f:
    json.dump(result, f, indent=2)
  result["report"] = write_report(out_dir, result, images)
  return result


_SHIFT_KEYS = ("pad", "mmd2", "mmd_p_value", "coral", "label_tv")


def write_report(out_dir: str, r: dict[str, Any], images: dict[str, str]) -> str:
  from jaxdapt.analysis import plots

  acc = r["accuracy"]
  acc_rows = [
    {"split": s, "n": r["n"][s], "before": acc["before"][s], "after": acc["after"][s]}
    for s in SPLITS
  ]
  shift_rows = [
    {"measure": k, "before": r["shift"]["before"].get(k), "after": r["shift"]["after"].get(k)}
    for k in _SHIFT_KEYS
  ]
  pc_b, pc_a = r["shift"]["before"].get("per_class", {}), r["shift"]["after"].get("per_class", {})
  per_class = [
    {
      "class": c,
      "n_source": pc_a[c]["n_source"],
      "n_target": pc_a[c]["n_target"],
      **{
        f"{k} {name}": pc[c][k]
        for k in ("pad", "mmd2", "coral")
        for name, pc in (("before", pc_b), ("after", pc_a))
        if c in pc
      },
    }
    for c in pc_a
  ]
  crit_rows = [
    {"criterion": k, **{f"on {s}": v.get(k) for s, v in r["criteria_final"].items()}}
    for k in r["criteria_final"]["target"]
  ]
  sel_rows = [{"selected by": k, **v} for k, v in r["selection"].items()]
  sel_text = (
    "Which logged eval step each label-free criterion picks (eval steps: "
    f"{', '.join(map(str, r['eval_steps']))}); regret = oracle target accuracy − "
    "the chosen step's. 'oracle' uses target labels and is not a legitimate choice."
  )
  if r["selection_criteria_missing"]:
    sel_text += f" Not logged by this run: {', '.join(r['selection_criteria_missing'])}."
  sections = [
    {
      "heading": "Run",
      "table": {k: r[k] for k in ("run", "method", "source", "target", "seed", "step", "before")},
    },
    {
      "heading": "Accuracy",
      "text": f"Before = {r['before']}; after = the latest checkpoint.",
      "table": acc_rows,
    },
    {
      "heading": "Domain shift (source val vs target test features)",
      "text": "PAD ∈ [0, 2] (2 = linearly separable domains); MMD² with permutation p-value; "
      "CORAL = ‖C_s − C_t‖²/4d²; label_tv = label-marginal shift.",
      "table": shift_rows,
    },
    {"heading": "Per-class shift", "table": per_class} if per_class else {},
    {
      "heading": "Label-free criteria of the final model (higher is better)",
      "text": "Computed on target train and on target test (no target labels used).",
      "table": crit_rows,
    },
    {"heading": "Checkpoint selection", "text": sel_text, "table": sel_rows or None},
    {"heading": "Features before / after", "images": [images["tsne"]]},
    {"heading": "Training curves", "images": [images["curves"]]} if "curves" in images else {},
    {"heading": "Target test confusion matrix", "images": [images["confusion"]]},
  ]
  return plots.html_report(
    out_dir,
    f"jaxdapt analysis: {r['method']} {r['source']} → {r['target']} (step {r['step']})",
    [s for s in sections if s],
  )


def summary_text(r: dict[str, Any]) -> str:
  acc, sh = r["accuracy"], r["shift"]

  def f(v):
    return "n/a" if v is None else f"{v:.3g}"

  lines = [
    f"{r['method']} {r['source']} → {r['target']}, seed {r['seed']}, step {r['step']}",
    f"target test acc {100 * acc['before']['target_test']:.1f}% → "
    f"{100 * acc['after']['target_test']:.1f}%   source val acc "
    f"{100 * acc['before']['source_val']:.1f}% → {100 * acc['after']['source_val']:.1f}%",
    f"PAD {f(sh['before']['pad'])} → {f(sh['after']['pad'])}   MMD² "
    f"{f(sh['before']['mmd2'])} → {f(sh['after']['mmd2'])}   CORAL "
    f"{f(sh['before']['coral'])} → {f(sh['after']['coral'])}",
  ]
  for name, s in r["selection"].items():
    lines.append(
      f"  {name:<22} step {s['step']:>6}  target acc {100 * s['target_test_acc']:.1f}%"
      f"  regret {100 * s['regret']:.1f}"
    )
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli.parser("analyze", __doc__)
  parser.add_argument("--workdir", required=True, help="a run directory written by jaxdapt train")
  parser.add_argument(
    "--max-train",
    type=int,
    default=2000,
    help="rows of source train and of target train used (seeded subsample)",
  )
  parser.add_argument(
    "--tsne-points", type=int, default=1000, help="points per t-SNE embedding (source + target)"
  )
  parser.add_argument(
    "--shift-points",
    type=int,
    default=2000,
    help="rows per domain for the shift measures (seeded subsample)",
  )
  parser.add_argument("--permutations", type=int, default=200, help="MMD permutation-test size")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--before",
    default="",
    metavar="RUN[@STEP]",
    help="compare with this run's model (same architecture; e.g. the "
    "source-only run) instead of the initialisation",
  )
  args = parser.parse_args(argv)
  check_run(args.workdir)  # before JAX starts or anything is written
  if args.before:
    from jaxdapt.init_from import split_run_step

    check_run(split_run_step(args.before)[0], "--before")
  result = analyze(
    args.workdir,
    max_train=args.max_train,
    tsne_points=args.tsne_points,
    shift_points=args.shift_points,
    n_permutations=args.permutations,
    seed=args.seed,
    before_run=args.before,
  )
  print(summary_text(result))
  print(f"report: {result['report']}")
  return 0
