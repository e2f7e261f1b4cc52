"""The transfer table (issue #4): uci_digits accuracy from k labels per class, per
pretraining source and fine-tuning strategy, with negative transfer flagged.

  jaxdapt transfer-table --out results/transfer --seeds 1,2,3 --k 1,5,10,all \\
      --sources fashion,syn_digits --strategies all
On two cores, one pinned single-threaded process per core, then render both halves:
  for i in 0 1; do XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c $i \\
    jaxdapt transfer-table --out results/transfer --shard $i/2 & done; wait
  jaxdapt transfer-table --out results/transfer --table-only

Each source is pretrained once (seed 0) with experiments/transfer/pretrain.py:SOURCE
into OUT/pretrain/SOURCE (ResNet-18, 32×32 stem, 16 base channels for the CPU budget;
--set model.width=64 for torchvision's width). With --shard I/N, shard (index of the
source in --sources) % N pretrains it and the other shards wait for it. Every cell then
uses the k labeled uci_digits training examples per class that its seed draws
(jaxdapt/data/labeled.py; k = all: every one) and reports uci_digits test accuracy at
the last step:
  scratch       negative_transfer.BASELINE: the same model, data and schedule from a
                random init, so one row serves every source
  linear_probe  no network training: the JAX logistic regression of jaxdapt/tools/probe.py on
                the pretrained backbone's pooled features of the k examples, L2 chosen on
                a stratified validation split of them (k = 1 leaves none to validate on:
                l2 = 1/n, scikit-learn's default C = 1)
  knn           the same features, cosine kNN with 20 neighbours (DINO's evaluation)
  finetune      every parameter from the pretrained backbone, new linear head
  freeze        conv1, bn1, layer1 and layer2 frozen (no gradient through them)
  llrd          layer-wise lr decay 0.7 per residual block (the README's value)
  lp_ft         a linear probe run (backbone frozen), then fine-tuning from it (two runs)
  l2sp, bss     experiments/transfer/regularized.py at the papers' weights (L2-SP α 0.1,
                β 0.01; BSS η 0.001 on the smallest singular value)
Parameter-efficient strategies (config.peft, docs/peft.md), each fewshot_finetune from the
pretrained backbone with only the peft overrides added; the frozen parameters get no
gradient and no optimizer state. They are not part of `--strategies all` (which keeps
the table of results/transfer); name them:
  bitfit        every bias trains (Conv/Dense biases, BatchNorm β), and the new head
  lora_r4       LoRA factors of every backbone kernel, r = 4, and the head
  lora_r16      the same at r = 16; alpha = LORA_ALPHA (8, config.peft's default) for both,
                fixed across ranks as Hu et al. do (scale alpha/r: 2 at r = 4, 0.5 at
                r = 16) rather than retuning the lr per rank; chosen before the table ran
  head_only     the new head alone on the frozen backbone, trained by SGD (the linear
                probe's capacity, the fine-tuning schedule; BN statistics still update)
  adapter       peft.method=adapter at config.peft's adapter_dim (where it exists)
  vpt_shallow,  visual prompt tuning, config.peft's prompt_tokens (10) at the input only or
  vpt_deep      before every block: ViT backbones, i.e. the source SOURCE_vit (pretrain.py
                pretrains vit_digits on SOURCE with AdamW and warmup)
The trained cells are the recipes of experiments/transfer (fewshot_finetune, lp_ft,
regularized) pointed at uci_digits, on one schedule: SGD momentum 0.9, lr 0.01 with the
DANN decay (the digits recipe), batch 32, STEPS = 100 steps, evaluated once at the end.
No hyperparameter was chosen on target test accuracy (none was tuned at all): all are
the recipes' or the papers' defaults, fixed before the table ran.

Cost, measured single-threaded on one core (`XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
taskset -c 0`): a step 0.19 s (freeze 0.10, the LP stage 0.08), so a run is 23 s once
its program is in the persistent compilation cache (train.compilation_cache_dir; the
first run of each strategy in a process compiles ~20 s more), freeze 14 s, LP-FT 34 s;
a pretraining ~4.6 min. The full table (12 scratch + 2 × 84 runs, 48 probe cells) is
~75 core-minutes: ~40 minutes as two shards.

When a PEFT strategy is in the table, OUT/transfer_table.md also has, per source, a table of
what each strategy costs (trainable parameters, optimizer-state bytes, checkpoint bytes
on disk, ms per step: COST_HELP says how each is measured) beside its accuracies, and
each strategy's paired per-seed difference against finetune: what PEFT gives up, if
anything, for training fewer parameters.

--bench STEPS trains nothing: it times each trained strategy's step (`jaxdapt bench`'s
config mode, in rounds alternating the strategies, random weights) into OUT/step_times.md, the
step times to quote (the cost table's ms/step come from runs sharing the machine).

A cell loses to scratch when the paired per-seed difference (transfer − scratch) is
negative beyond seed noise (negative_transfer.verdict); it is marked **NEG** (−x ± y
points); a negative difference within noise is shown as (−x ± y, noise), unflagged.
Finished runs are reused (one finished under another config is refused); a failed run is
recorded and the table goes on. Writes OUT/transfer_table.md and OUT/transfer_table.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxdapt.errors import ConfigError
from jaxdapt.tools import cli, grid
from jaxdapt.tools import negative_transfer as nt
from jaxdapt.tools.costs import checkpoint_bytes, model_costs, peft_label, step_seconds

# negative_transfer's paired statistics and reuse guard, shared rather than copied.
stats = nt._stats  # pylint: disable=protected-access

# The repository's experiments/transfer (this file is jaxdapt/tools/transfer_table.py).
EXPERIMENTS = os.path.join(
  os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
  "experiments",
  "transfer",
)
PRETRAIN_SEED = 0
STEPS = 100
LOG_EVERY = 50  # two train rows per run: the second times steps alone (the cost tables)
TASK = "syn2uci"  # the recipes' task whose target is uci_digits; the source is replaced
# One schedule for every trained cell; the target-only runs' "source" is a slice of the
# target's train split, whose eval (source_val) is never used and only has to be cheap.
FINETUNE = (
  "data.source=uci_digits",
  "data.source_split=train",
  "data.source_val_split=train[:10%]",
  "data.target=uci_digits",
  "data.target_split=train",
  "data.target_test_split=test",
  "data.batch_size=32",
  f"train.steps={STEPS}",
  f"train.log_every={LOG_EVERY}",
  f"train.eval_every={STEPS}",
  f"train.checkpoint_every={STEPS}",
  "train.keep_checkpoints=1",
  "train.selection_points=0",
)
FREEZE = 'optim.rules=[["model/backbone/(conv1|bn1|layer[12]_[0-9]+)/.*", null], [".*", 1.0]]'
# LoRA's alpha for every rank: config.peft's default, fixed as docs/peft.md and Hu et al.
# advise (chosen before the table ran; the scale alpha/r is 2 at r = 4, 0.5 at r = 16).
LORA_ALPHA = 8
KNN_NEIGHBOURS = 20
ALL = -1


@dataclasses.dataclass(frozen=True)
class Stage:
  """One training run: experiments/transfer/RECIPE.py:ARG,TASK plus overrides."""

  recipe: str
  arg: str = ""
  overrides: tuple[str, ...] = ()


TRAINED: dict[str, tuple[Stage, ...]] = {
  "scratch": (Stage("fewshot_finetune", "", nt.BASELINE),),
  "finetune": (Stage("fewshot_finetune"),),
  "freeze": (Stage("fewshot_finetune", "", (FREEZE,)),),
  "llrd": (Stage("fewshot_finetune", "", ("optim.llrd=0.7",)),),
  "lp_ft": (
    Stage("lp_ft", "probe", ("method.name=target_only",)),
    Stage("lp_ft", "finetune", ("method.name=target_only",)),
  ),
  "l2sp": (Stage("regularized", "l2sp"),),
  "bss": (Stage("regularized", "bss"),),
}
# PEFT: the finetune cell with config.peft overrides only (so any difference is the method's).
PEFT = {
  "bitfit": ("peft.method=bitfit",),
  "lora_r4": ("peft.method=lora", "peft.lora_rank=4", f"peft.lora_alpha={LORA_ALPHA}"),
  "lora_r16": ("peft.method=lora", "peft.lora_rank=16", f"peft.lora_alpha={LORA_ALPHA}"),
  "head_only": ("peft.method=head_only",),
  "adapter": ("peft.method=adapter",),
  "vpt_shallow": ("peft.method=vpt_shallow",),  # ViT backbones only (config.peft)
  "vpt_deep": ("peft.method=vpt_deep",),
}
TRAINED.update({name: (Stage("fewshot_finetune", "", sets),) for name, sets in PEFT.items()})
PROBES = ("linear_probe", "knn")
STRATEGIES = ("scratch", *PROBES, "finetune", "freeze", "llrd", "lp_ft", "l2sp", "bss")
ALLOWED = STRATEGIES + tuple(PEFT)  # --strategies all: STRATEGIES (the transfer table's)
COST_HELP = (
  "trainable parameters and optimizer-state bytes from the leaves of the state a run "
  "starts with (jax.eval_shape of its init, as `jaxdapt optim`); checkpoint: bytes of the "
  "files of the newest step in the cell's checkpoints/ (state, data position, config), "
  "mean over the cells; ms/step: data.batch_size × domains / images_per_s of the last "
  f"train row of metrics.jsonl (steps {STEPS - LOG_EVERY + 1}–{STEPS}; the first interval "
  "includes compiling), mean ± std over the cells. Two-stage cells (lp_ft): the "
  "fine-tuning stage's"
)


@dataclasses.dataclass(frozen=True)
class Cell:
  """One seed of one table cell; source '' for scratch (it does not depend on one)."""

  source: str
  strategy: str
  k: int
  seed: int


# ------------------------------------------------------------------------------ configs


def pretrain_config(source: str, overrides: Sequence[str] = ()):
  """experiments/transfer/pretrain.py:SOURCE (ValueError naming the allowed sources)."""
  config = grid.load_config("pretrain", source, EXPERIMENTS, overrides)
  config.seed = PRETRAIN_SEED
  return config


def stage_config(
  stage: Stage, k: int, seed: int, model, init_from: str, overrides: Sequence[str] = ()
):
  """A trained cell's run: the recipe, the pretraining's model (init and dont_load are the
  recipe's), the shared schedule, k, the start, the stage's and the user's overrides."""
  config = grid.load_config(stage.recipe, ",".join(filter(None, (stage.arg, TASK))), EXPERIMENTS)
  for field, value in model.items():
    if field not in ("init_from", "dont_load"):
      config.model[field] = value
  cli.apply_overrides(
    config,
    (
      *FINETUNE,
      f"data.target_labeled_per_class={k}",
      f"model.init_from={init_from}",
      *stage.overrides,
      *overrides,
    ),
  )
  config.seed = seed
  return config


# ------------------------------------------------------------------------------ layout


def pretrain_dir(out: str, source: str) -> str:
  return os.path.join(out, "pretrain", source)


def k_name(k: int) -> str:
  return "all" if k == ALL else str(k)


def cell_dir(out: str, cell: Cell) -> str:
  return os.path.join(
    out, "runs", cell.source or "none", cell.strategy, f"k_{k_name(cell.k)}", f"seed_{cell.seed}"
  )


def label(cell: Cell) -> str:
  return f"{cell.source or 'none'}/{cell.strategy}/k={k_name(cell.k)}/seed {cell.seed}"


def stage_dirs(out: str, cell: Cell) -> list[str]:
  """A one-stage cell's run is its directory; a two-stage one has one per stage."""
  stages, base = TRAINED[cell.strategy], cell_dir(out, cell)
  return [base] if len(stages) == 1 else [os.path.join(base, s.arg) for s in stages]


def cells(
  sources: Sequence[str], strategies: Sequence[str], ks: Sequence[int], seeds: Sequence[int]
) -> list[Cell]:
  """Scratch first (it needs no pretraining), then source × strategy × k × seed."""
  out = [Cell("", "scratch", k, s) for k in ks for s in seeds]
  return out + [
    Cell(src, st, k, s)
    for src in sources
    for st in strategies
    if st != "scratch"
    for k in ks
    for s in seeds
  ]


# ------------------------------------------------------------------------------ running


def check_reusable(workdir: str, config) -> None:
  """negative_transfer's guard (a finished run is reused only under its own config),
  naming the run: the fix is another --out or the original --set."""
  try:
    nt._check_reusable(workdir, config)  # pylint: disable=protected-access
  except ConfigError as e:
    raise ConfigError(f"{workdir}: {e}") from None


def _read(path: str) -> dict[str, Any]:
  with open(path) as f:
    return json.load(f)


def pretrain(
  out: str, source: str, overrides: Sequence[str], train_missing: bool
) -> dict[str, Any]:
  """The pretraining run of `source` (reused when finished under the same config)."""
  workdir = pretrain_dir(out, source)
  make = functools.partial(pretrain_config, source, overrides)
  check_reusable(workdir, make())
  stale = os.path.join(workdir, "error.txt")
  if (
    train_missing
    and os.path.exists(stale)
    and not os.path.exists(os.path.join(workdir, "summary.json"))
  ):
    os.remove(stale)  # a retry: shards waiting on it must not read the old failure
  return grid.train_or_reuse(
    workdir, make, {"source": source, "stage": "pretrain"}, f"pretrain/{source}", train_missing
  )


def wait_for_pretrain(out: str, source: str, poll_s: float = 10.0) -> dict[str, Any]:
  """The summary of a pretraining another shard runs (or its error)."""
  workdir, printed = pretrain_dir(out, source), False
  while True:
    if os.path.exists(os.path.join(workdir, "summary.json")):
      return {**_read(os.path.join(workdir, "summary.json")), "reused": True}
    if os.path.exists(os.path.join(workdir, "error.txt")):
      return {"source": source, "error": f"pretraining failed: see {workdir}/error.txt"}
    if not printed:
      print(f"[table] waiting for {workdir} (another shard pretrains it)", flush=True)
      printed = True
    time.sleep(poll_s)


def run_trained(
  out: str, cell: Cell, model, overrides: Sequence[str], train_missing: bool
) -> dict[str, Any]:
  """The cell's stages in order, each starting from the previous one (the first from the
  pretrained source; scratch from nothing, by the BASELINE overrides)."""
  init_from = pretrain_dir(out, cell.source) if cell.source else ""
  result: dict[str, Any] = {}
  walls: list[float] = []
  for stage, workdir in zip(TRAINED[cell.strategy], stage_dirs(out, cell)):
    make = functools.partial(stage_config, stage, cell.k, cell.seed, model, init_from, overrides)
    check_reusable(workdir, make())
    result = grid.train_or_reuse(
      workdir, make, dataclasses.asdict(cell), label(cell), train_missing
    )
    if "error" in result or "missing" in result:
      return result
    walls.append(result.get("wall_s", 0.0))
    init_from = workdir
  return {**result, "wall_s": sum(walls)}


def backbone_features(
  out: str, source: str, model, overrides: Sequence[str]
) -> dict[str, dict[str, np.ndarray]]:
  """Pooled features of the pretrained backbone on uci_digits train and test, stored in
  OUT/features/SOURCE/{train,test} (extracted once; eval-mode BN, no training)."""
  import jax

  from jaxdapt import features, trainer

  config = stage_config(
    TRAINED["finetune"][0], ALL, PRETRAIN_SEED, model, pretrain_dir(out, source), overrides
  )
  summary = _read(os.path.join(pretrain_dir(out, source), "summary.json"))
  meta = {
    "model": pretrain_dir(out, source),
    "steps": summary["steps"],
    "source_val_acc": summary["source_val_acc_last"],
  }
  arrays, exp, forward, state = {}, None, None, None
  for split, key in (("train", "target"), ("test", "target_test")):
    path = os.path.join(out, "features", source, split)
    stored = features.load_store(path, {**meta, "split": split})
    if stored is None:
      if exp is None:
        exp = trainer.build(config)
        state = trainer.load_init_from(exp, exp.init(jax.random.key(PRETRAIN_SEED)))
        state, forward = trainer.eval_states(exp, state)["target"], features.forward_fn(exp)
      stored = features.extract(exp, forward, state, exp.sources[key])
      features.save_store(path, stored, {**meta, "split": split})
    arrays[split] = stored
  return arrays


def probe_accuracy(
  strategy: str, arrays: dict[str, dict[str, np.ndarray]], k: int, seed: int
) -> dict[str, Any]:
  """Linear probe or kNN on the features of the seed's k examples per class: the same
  draw as the fine-tuning runs' labeled batch (labeled.select_per_class of the train split)."""
  from jaxdapt.data.labeled import select_per_class
  from jaxdapt.tools import probe

  train, test = arrays["train"], arrays["test"]
  idx = select_per_class(train["labels"], k, seed)
  x, y = train["features"][idx], train["labels"][idx]
  num_classes = int(max(train["labels"].max(), test["labels"].max())) + 1
  extra: dict[str, Any] = {}
  if strategy == "linear_probe":
    one_shot = np.bincount(y).max() < 2  # no example left per class to validate on
    fitted = probe.fit_linear_probe(
      x, y, num_classes, seed=seed, l2_grid=(1.0 / len(y),) if one_shot else probe.L2_GRID
    )
    predicted, extra = fitted.predict(test["features"]), {"l2": fitted.l2}
  else:
    predicted = probe.knn_predict(x, y, test["features"], k=KNN_NEIGHBOURS, num_classes=num_classes)
  return {
    "target_acc_last": float((predicted == test["labels"]).mean()),
    "labeled_indices": idx.tolist(),
    **extra,
  }


def run_probe(
  out: str, cell: Cell, model, overrides: Sequence[str], train_missing: bool
) -> dict[str, Any]:
  """A probe cell's summary.json, computed unless it exists (no network training)."""
  path = os.path.join(cell_dir(out, cell), "summary.json")
  if os.path.exists(path):
    return {**_read(path), "reused": True}
  if not train_missing:
    return {**dataclasses.asdict(cell), "missing": True}
  start = time.perf_counter()
  arrays = backbone_features(out, cell.source, model, overrides)
  summary = {**dataclasses.asdict(cell), **probe_accuracy(cell.strategy, arrays, cell.k, cell.seed)}
  summary["wall_s"] = time.perf_counter() - start
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(summary, f, indent=2)
  return summary


# ------------------------------------------------------------------------------ costs


def cell_costs(out: str, cell: Cell, images_per_step: int) -> dict[str, Any]:
  """A trained cell's measured costs: its (last) stage's checkpoint and step time."""
  workdir = stage_dirs(out, cell)[-1]
  return {
    "checkpoint_bytes": checkpoint_bytes(workdir),
    "step_s": step_seconds(workdir, images_per_step),
  }


# ------------------------------------------------------------------------------ table


def negative(difference: dict[str, Any]) -> bool:
  """Transfer loses to scratch beyond seed noise (the verdict without '(within seed noise)')."""
  return difference["mean"] < 0 and not nt.within_noise(difference)


def cell_report(accs: dict[int, float], scratch: dict[int, float] | None) -> dict[str, Any]:
  """Mean ± std (points) of a cell's seeds and, against scratch's same seeds (None: the
  scratch row itself), the paired difference and negative_transfer's verdict."""
  if not accs:
    return {}
  report: dict[str, Any] = {**stats([100 * accs[s] for s in sorted(accs)]), "seeds": sorted(accs)}
  paired = sorted(accs.keys() & (scratch or {}).keys())
  if paired:
    report["difference"] = stats([100 * (accs[s] - scratch[s]) for s in paired])
    report["verdict"] = nt.verdict(report["difference"])
    report["negative_transfer"] = negative(report["difference"])
  return report


def cell_text(report: dict[str, Any], n_seeds: int) -> str:
  if not report:
    return "–"
  text = f"{report['mean']:.1f} ± {report['std']:.1f}"
  if len(report["seeds"]) < n_seeds:
    text += f" ({len(report['seeds'])}/{n_seeds} seeds)"
  d = report.get("difference")
  if d and d["mean"] < 0:
    numbers = f"−{-d['mean']:.1f} ± {d['std']:.1f}"
    text += f" **NEG** ({numbers})" if report["negative_transfer"] else f" ({numbers}, noise)"
  return text


def accuracies(
  results: dict[Cell, dict[str, Any]], source: str, strategy: str, k: int
) -> dict[int, float]:
  """{seed: target accuracy} of one cell's finished seeds."""
  return {
    c.seed: r["target_acc_last"]
    for c, r in results.items()
    if (c.source, c.strategy, c.k) == (source, strategy, k) and "target_acc_last" in r
  }


def signed_text(difference: dict[str, Any]) -> str:
  """A paired difference in points, '+x ± y' or '−x ± y', with ', noise' when its sign is
  within seed noise (negative_transfer.within_noise)."""
  mean, std = difference["mean"], difference["std"]
  text = f"{'−' if mean < 0 else '+'}{abs(mean):.1f} ± {std:.1f}"
  return text + (", noise" if nt.within_noise(difference) else "")


def rows(sources: Sequence[str], strategies: Sequence[str]) -> list[tuple[str, str]]:
  return [("", "scratch")] + [(src, st) for src in sources for st in strategies if st != "scratch"]


def tabulate(
  results: dict[Cell, dict[str, Any]],
  sources: Sequence[str],
  strategies: Sequence[str],
  ks: Sequence[int],
  n_seeds: int,
) -> tuple[str, dict[str, Any]]:
  """Markdown (rows source × strategy, columns k) and the same numbers as data."""
  accs = functools.partial(accuracies, results)
  data: dict[str, Any] = {}
  lines = [
    "| source | strategy | " + " | ".join(f"k={k_name(k)}" for k in ks) + " |",
    "|" + "---|" * (2 + len(ks)),
  ]
  for source, strategy in rows(sources, strategies):
    texts = []
    for k in ks:
      report = (
        cell_report(accs("", "scratch", k), None)
        if strategy == "scratch"
        else cell_report(accs(source, strategy, k), accs("", "scratch", k))
      )
      data[f"{source or 'none'}/{strategy}/k={k_name(k)}"] = report
      texts.append(cell_text(report, n_seeds))
    lines.append(f"| {source or '–'} | {strategy} | " + " | ".join(texts) + " |")
  return "\n".join(lines), data


def _mean_std(values: list[float]) -> dict[str, Any] | None:
  return {**stats(values), "n": len(values)} if values else None


def strategy_costs(
  out: str,
  results: dict[Cell, dict[str, Any]],
  source: str,
  strategy: str,
  ks: Sequence[int],
  seeds: Sequence[int],
  model,
  overrides: Sequence[str],
) -> dict[str, Any]:
  """One row of a cost table: the (last) stage's model_costs, and the checkpoint bytes
  and seconds per step of the row's finished cells (every k and seed)."""
  init_from = pretrain_dir(out, source) if source else ""
  stage = TRAINED[strategy][-1]
  costs = model_costs(stage_config(stage, ks[0], seeds[0], model, init_from, overrides))
  measured = [
    cell_costs(out, c, costs["images_per_step"])
    for c, r in results.items()
    if (c.source, c.strategy) == (source, strategy) and "target_acc_last" in r
  ]
  ckpt = [m["checkpoint_bytes"] for m in measured if m["checkpoint_bytes"] is not None]
  steps = [1000 * m["step_s"] for m in measured if m["step_s"] is not None]
  return {**costs, "checkpoint_bytes": _mean_std(ckpt), "step_ms": _mean_std(steps)}


def cost_tables(
  out: str,
  results: dict[Cell, dict[str, Any]],
  sources: Sequence[str],
  strategies: Sequence[str],
  ks: Sequence[int],
  seeds: Sequence[int],
  model,
  overrides: Sequence[str],
) -> tuple[str, dict[str, Any]]:
  """Per source, markdown and data: each strategy's costs beside its accuracies (paired
  difference against scratch), and its paired difference against finetune per k. The
  percentages are of full fine-tuning's (finetune's row, else scratch's: the same model)."""
  accs = functools.partial(accuracies, results)
  n_seeds, data, parts = len(seeds), {}, []
  for source in sources:
    names = ["scratch"] + [st for st in strategies if st != "scratch"]
    table: dict[str, Any] = {}
    for strategy in names:
      src = "" if strategy == "scratch" else source
      row: dict[str, Any] = {"accuracy": {}}
      if strategy in TRAINED:
        row.update(strategy_costs(out, results, src, strategy, ks, seeds, model, overrides))
      for k in ks:
        scratch = None if strategy == "scratch" else accs("", "scratch", k)
        row["accuracy"][k_name(k)] = cell_report(accs(src, strategy, k), scratch)
      if "finetune" in names and strategy not in ("scratch", "finetune"):
        row["vs_finetune"] = {}
        for k in ks:
          mine, full = accs(src, strategy, k), accs(source, "finetune", k)
          paired = sorted(mine.keys() & full.keys())
          if paired:
            diff = stats([100 * (mine[s] - full[s]) for s in paired])
            row["vs_finetune"][k_name(k)] = {**diff, "within_noise": nt.within_noise(diff)}
      table[strategy] = row
    full = table["finetune" if "finetune" in table else "scratch"]
    for row in table.values():
      if "trainable" in row:
        row["trainable_pct_of_full"] = 100 * row["trainable"] / full["trainable"]
        row["optimizer_state_pct_of_full"] = (
          100 * row["optimizer_state_bytes"] / full["optimizer_state_bytes"]
        )
    data[source] = table
    parts.append(cost_markdown(source, table, ks, n_seeds))
  return "\n\n".join(parts), data


def cost_markdown(source: str, table: dict[str, Any], ks: Sequence[int], n_seeds: int) -> str:
  """One source's cost table and its against-finetune table (the data of cost_tables)."""
  heads = [f"k={k_name(k)}" for k in ks]
  lines = [
    f"Costs and accuracies, source {source}: percentages are of full fine-tuning's; "
    f"accuracy mean ± std (%), in brackets the paired difference against scratch (**NEG**: "
    f"a loss beyond seed noise; ', noise': a sign within it).\n",
    "| strategy | peft | trainable params | optimizer state | checkpoint | ms/step | "
    + " | ".join(heads)
    + " |",
    "|" + "---|" * (6 + len(ks)),
  ]
  for strategy, row in table.items():
    if "trainable" in row:
      ckpt, step = row["checkpoint_bytes"], row["step_ms"]
      costs = [
        row["peft"],
        f"{row['trainable']:,} ({row['trainable_pct_of_full']:.1f} %)",
        f"{row['optimizer_state_bytes']:,} B ({row['optimizer_state_pct_of_full']:.1f} %)",
        f"{ckpt['mean']:,.0f} B" if ckpt else "–",
        f"{step['mean']:.0f} ± {step['std']:.0f}" if step else "–",
      ]
    else:
      costs = ["–", "no network training", "–", "–", "–"]
    texts = []
    for k in ks:
      report = row["accuracy"][k_name(k)]
      text = cell_text({**report, "difference": None}, n_seeds) if report else "–"
      if report.get("difference"):
        mark = " **NEG**" if report["negative_transfer"] else ""
        text += f"{mark} ({signed_text(report['difference'])})"
      texts.append(text)
    lines.append(f"| {strategy} | " + " | ".join(costs + texts) + " |")
  against = [(st, row["vs_finetune"]) for st, row in table.items() if "vs_finetune" in row]
  if against:
    lines += [
      "",
      f"Paired difference against finetune (points, transfer − finetune per seed), "
      f"source {source}:\n",
      "| strategy | " + " | ".join(heads) + " |",
      "|" + "---|" * (1 + len(ks)),
    ]
    for strategy, diffs in against:
      texts = [signed_text(diffs[k_name(k)]) if k_name(k) in diffs else "–" for k in ks]
      lines.append(f"| {strategy} | " + " | ".join(texts) + " |")
  return "\n".join(lines)


def backbone_line(model) -> str:
  """What was pretrained, e.g. 'resnet18, 32×32 stem, 16 base channels'."""
  parts = [model.name] + (["32×32 stem"] if model.small_input else [])
  if model.width:
    parts.append(f"{model.width} base channels (CPU budget; model.width=64: torchvision's)")
  return ", ".join(parts)


def pretrain_lines(pretrained: dict[str, dict[str, Any]]) -> str:
  out = []
  for source, s in pretrained.items():
    if "target_acc_last" not in s:
      out.append(f"- {source}: {s.get('error', 'not run')}")
      continue
    out.append(
      f"- {source}: {s['steps']} steps, source val "
      f"{100 * s['source_val_acc_last']:.1f}%, uci_digits test without "
      f"fine-tuning {100 * s['target_acc_last']:.1f}%"
    )
  return "\n".join(out)


# ------------------------------------------------------------------------------ command line


def _names(
  text: str, allowed: Sequence[str], flag: str, every: Sequence[str] | None = None
) -> list[str]:
  """The comma-separated names of `text` ('all': `every`, by default `allowed`)."""
  names = list(allowed if every is None else every) if text == "all" else text.split(",")
  bad = [n for n in names if n not in allowed]
  if bad:
    raise ConfigError(
      f"{flag}: unknown {', '.join(map(repr, bad))}; allowed: {', '.join(allowed)} (or all)"
    )
  return names


def _ks(text: str) -> list[int]:
  ks = []
  for item in text.split(","):
    k = ALL if item == "all" else int(item) if item.isdigit() else 0
    if k == 0:
      raise ConfigError(f"--k: {item!r} is not a positive integer or 'all'")
    ks.append(k)
  return ks


def _shard(text: str) -> tuple[int, int]:
  i, _, n = text.partition("/")
  if not (i.isdigit() and n.isdigit() and int(i) < int(n)):
    raise ConfigError(f"--shard: {text!r} must be I/N with 0 <= I < N, e.g. 0/2")
  return int(i), int(n)


def check_configs(
  sources: Sequence[str], overrides: Sequence[str], strategies: Sequence[str] = STRATEGIES
):
  """Every config loads (a typo in --sources or --set fails before any training) and the
  sources share one backbone (scratch is one row for all); returns that model group. The
  strategies' runs validate (only those asked for: a PEFT method this checkout lacks
  fails only a table that names it)."""
  from jaxdapt import trainer

  models = {}
  for source in sources:
    try:
      models[source] = pretrain_config(source, overrides).model
    except ValueError as e:
      raise ConfigError(f"--sources: {e}") from None
  model = next(iter(models.values()))
  if any(m.to_json() != model.to_json() for m in models.values()):
    raise ConfigError(
      "--sources: the pretraining configs build different models; the scratch row needs one"
    )
  for strategy in ("scratch", *strategies):
    for stage in TRAINED.get(strategy, ()):
      try:
        trainer.validate(stage_config(stage, 1, 0, model, "x", overrides))
      except ConfigError as e:
        raise ConfigError(f"--strategies {strategy}: {e}") from None
  return model


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli.parser("transfer-table", __doc__)
  parser.add_argument("--out", default="results/transfer")
  parser.add_argument("--seeds", default="1,2,3")
  parser.add_argument("--k", default="1,5,10,all", help="labels per class; 'all': every one")
  parser.add_argument("--sources", default="fashion,syn_digits")
  parser.add_argument(
    "--strategies",
    default="all",
    help=f"'all' ({','.join(STRATEGIES)}) or some of {','.join(ALLOWED)} (scratch always runs)",
  )
  parser.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="FIELD=VALUE",
    help="config override for every run, pretraining included",
  )
  parser.add_argument("--shard", default="0/1", help="I/N: run only cells with index %% N == I")
  parser.add_argument(
    "--table-only", action="store_true", help="train nothing: tabulate the finished runs"
  )
  parser.add_argument(
    "--bench",
    type=int,
    default=0,
    metavar="STEPS",
    help="train nothing: time each trained strategy's step over STEPS steps, one strategy "
    "after another in this process (OUT/step_times.md)",
  )
  args = parser.parse_args(argv)
  # Runs record model.init_from under OUT: absolute, so a rerun from another directory
  # (or with OUT spelt differently) reuses them instead of refusing them.
  args.out = os.path.abspath(args.out)
  # Every name and config is checked before anything is trained or written.
  sources = args.sources.split(",")  # check_configs names the allowed ones
  strategies = _names(args.strategies, ALLOWED, "--strategies", STRATEGIES)
  ks, shard = _ks(args.k), _shard(args.shard)
  try:
    seeds = [int(s) for s in args.seeds.split(",")]
  except ValueError:
    raise ConfigError(
      f"--seeds: {args.seeds!r} is not a comma-separated list of integers"
    ) from None
  try:
    model = check_configs(sources, args.set, strategies)
  except (KeyError, ValueError) as e:
    if isinstance(e, ConfigError):
      raise
    raise ConfigError(str(e)) from None
  if args.bench < 0:
    raise ConfigError(f"--bench {args.bench}: the number of timed steps must be >= 1")
  if args.bench:
    bench_table(args.out, strategies, ks[0], seeds[0], model, args.set, args.bench)
    return 0
  # A finished run in OUT under another config is a ConfigError, raised from here too.
  run_table(args, sources, strategies, ks, seeds, shard, model)
  return 0


BENCH_WARMUP = 10
BENCH_ROUNDS = 5


def bench_table(
  out: str,
  strategies: Sequence[str],
  k: int,
  seed: int,
  model,
  overrides: Sequence[str],
  steps: int,
) -> dict[str, Any]:
  """--bench: each trained strategy's step (two-stage ones: the last stage's) timed by
  bench.interleaved: its compiled update on one fixed batch of its own data, BENCH_WARMUP
  steps, then `steps` timed in BENCH_ROUNDS rounds that alternate the strategies (the
  median round counts), so that load drifting during the measurement falls on all of them.
  The model starts from its random init (a step's cost does not depend on the weights, so
  no pretraining is needed); k and seed only choose which examples. Where
  jaxdapt/tools/torch_ref.py has a twin of the step (full training of supported models),
  PyTorch's step on the same batch is timed too. Writes OUT/step_times.{md,json}."""
  from jaxdapt.tools import bench

  names = [st for st in ("scratch", *strategies) if st in TRAINED]
  configs = {}
  for strategy in dict.fromkeys(names):  # scratch once, even when named
    configs[strategy] = stage_config(TRAINED[strategy][-1], k, seed, model, "", overrides)
    configs[strategy].train.progress_bar = False
  results = bench.interleaved(
    configs, steps, BENCH_WARMUP, BENCH_ROUNDS, torch=bench._torch_available()
  )
  rows = {name: {**r, "peft": peft_label(configs[name].peft)} for name, r in results.items()}
  for name, r in rows.items():
    print(f"[bench] {name}: {r['step_ms']:.1f} ms/step", flush=True)
  full = rows.get("finetune", rows["scratch"])["step_ms"]
  lines = [
    "| strategy | peft | ms/step | × finetune's time | compile s | PyTorch ms/step "
    "| PyTorch time / JAX time |",
    "|---|---|---|---|---|---|---|",
  ]
  for strategy, r in rows.items():
    twin = r.get("torch_step_ms")
    torch_ms, ratio = (
      (f"{twin:.1f}", f"{twin / r['step_ms']:.2f}") if twin else ("–", r.get("torch_skipped", "–"))
    )
    lines.append(
      f"| {strategy} | {r['peft']} | {r['step_ms']:.1f} | {r['step_ms'] / full:.2f} "
      f"| {r['compile_s']:.1f} | {torch_ms} | {ratio} |"
    )
  first = next(iter(rows.values()))
  text = (
    f"Step time per strategy ({backbone_line(model)}; batch {first['batch_per_domain']} × "
    f"{first['domains']} domain(s), {first['dtype']}): median over {BENCH_ROUNDS} rounds "
    f"of {steps} timed steps in all, the strategies alternating round by round, after "
    f"{BENCH_WARMUP} warm-up steps, on one fixed batch in one process on {hardware()}; "
    f"overrides: {' '.join(overrides) or 'none'}.\n\n" + "\n".join(lines) + "\n"
  )
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "step_times.md"), "w") as f:
    f.write(text)
  with open(os.path.join(out, "step_times.json"), "w") as f:
    json.dump(
      {"steps": steps, "warmup": BENCH_WARMUP, "rounds": BENCH_ROUNDS, "rows": rows}, f, indent=2
    )
  print(text, flush=True)
  return rows


def cpu_model() -> str:
  """The CPU's model name (lscpu's, from /proc/cpuinfo), else the platform's machine."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.partition(":")[2].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def hardware() -> str:
  import jax

  return (
    f"{cpu_model()}, {len(os.sched_getaffinity(0))} of "
    f"{os.cpu_count()} cores usable, jax {jax.__version__} on {jax.devices()[0].platform}"
  )


def run_table(
  args: argparse.Namespace,
  sources: Sequence[str],
  strategies: Sequence[str],
  ks: Sequence[int],
  seeds: Sequence[int],
  shard: tuple[int, int],
  model,
) -> dict[str, Any]:
  """Pretrains this shard's sources, runs its cells, and (unsharded or --table-only)
  writes and prints the table."""
  from jaxdapt.runtime import compile_cache

  start, train_missing = time.perf_counter(), not args.table_only
  # Every seed, k and source of a strategy runs one program: compiled once, then loaded.
  compile_cache.enable(pretrain_config(sources[0], args.set).train.compilation_cache_dir)
  index, count = (0, 1) if args.table_only else shard
  needed = any(st != "scratch" for st in strategies)
  pretrained = {
    src: pretrain(args.out, src, args.set, train_missing)
    for i, src in enumerate(sources)
    if needed and i % count == index
  }
  results: dict[Cell, dict[str, Any]] = {}
  for i, cell in enumerate(cells(sources, strategies, ks, seeds)):
    if i % count != index:
      continue
    if cell.source and cell.source not in pretrained:
      pretrained[cell.source] = wait_for_pretrain(args.out, cell.source)
    pre = pretrained.get(cell.source, {})
    if "error" in pre or "missing" in pre:
      results[cell] = {
        **dataclasses.asdict(cell),
        **{k: pre[k] for k in ("error", "missing") if k in pre},
      }
      continue
    run = run_probe if cell.strategy in PROBES else run_trained
    results[cell] = r = run(args.out, cell, model, args.set, train_missing)
    if "target_acc_last" in r:
      print(
        f"[table] {label(cell)}: {100 * r['target_acc_last']:.1f}%"
        f"{' [reused]' if r.get('reused') else ''}",
        flush=True,
      )
  trained_now = sum(
    1
    for r in (*pretrained.values(), *results.values())
    if not {"reused", "missing", "error"} & r.keys()
  )
  summary = {
    "sources": list(sources),
    "strategies": list(strategies),
    "k": [k_name(k) for k in ks],
    "seeds": list(seeds),
    "overrides": list(args.set),
    "pretrain": pretrained,
    "trained_now": trained_now,
    "runs": [{**dataclasses.asdict(c), **r} for c, r in results.items()],
  }
  if count > 1:
    print(
      f"[table] shard {index}/{count} done ({trained_now} runs trained); render the whole "
      f"table with --table-only",
      flush=True,
    )
    return summary
  md, summary["table"] = tabulate(results, sources, strategies, ks, len(seeds))
  if any(st in PEFT for st in strategies):
    cost_md, summary["costs"] = cost_tables(
      args.out, results, sources, strategies, ks, seeds, model, args.set
    )
    md += f"\n\n{cost_md}\n\nHow the costs are measured: {COST_HELP}."
  wall = time.perf_counter() - start
  run_wall = sum(r.get("wall_s", 0.0) for r in (*pretrained.values(), *results.values()))
  failed = [f"{label(c)}: {r['error']}" for c, r in results.items() if "error" in r]
  summary.update(wall_s=wall, run_wall_s=run_wall, hardware=hardware(), failed=failed)
  text = (
    f"uci_digits test accuracy (%, last step), mean ± std over seeds "
    f"{', '.join(map(str, seeds))}; k labeled training examples per class. **NEG** "
    f"(−x ± y): transfer loses to scratch at that k by x ± y points (paired per-seed "
    f"difference, beyond seed noise); (−x ± y, noise): a loss within seed noise.\n\n"
    f"{md}\n\nPretrained backbones ({backbone_line(model)}; seed {PRETRAIN_SEED}):\n"
    f"{pretrain_lines(pretrained)}"
    f"\n\n{len(results)} cells + {len(pretrained)} pretrainings, {run_wall / 60:.1f} min "
    f"of runs in all (sum of their wall times; {trained_now} trained by this invocation, "
    f"{wall / 60:.1f} min) on {summary['hardware']}; overrides: "
    f"{' '.join(args.set) or 'none'}."
    + (f"\n\nFailed ({len(failed)}):\n" + "\n".join(f"- {f}" for f in failed) if failed else "")
    + "\n"
  )
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "transfer_table.md"), "w") as f:
    f.write(text)
  with open(os.path.join(args.out, "transfer_table.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print(text, flush=True)
  return summary
