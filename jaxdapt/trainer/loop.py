"""The training loop: init or resume → (step, log, evaluate, checkpoint) → summary.json."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxdapt import checkpoint, features, optim, sharding, step
from jaxdapt.config import base_config
from jaxdapt.errors import ConfigError, NonFiniteLossError
from jaxdapt.init_from import load_init_from
from jaxdapt.metrics import MetricWriter
from jaxdapt.trainer.build import build, train_iterators
from jaxdapt.trainer.evaluate import eval_states, evaluate, selection_metrics, selection_sources
from jaxdapt.trainer.experiment import Experiment
from jaxdapt.trainer.preemption import Preemption


def check_finite(exp: Experiment, step: int, metrics: dict[str, float]) -> None:
  bad = [
    k
    for k in ("loss", "cls_loss", "transfer_loss")
    if k in metrics and not math.isfinite(metrics[k])
  ]
  if bad:
    raise NonFiniteLossError(
      f"method {exp.config.method.name!r}: non-finite {', '.join(bad)} at step {step} "
      f"({', '.join(f'{k}={metrics[k]}' for k in bad)}); checkpoints up to the last good "
      f"step are kept. Lower optim.lr or method.weight."
    )


# train.* fields that change nothing a run writes; every other train field is compared.
_TRAIN_FREE = ("progress_bar", "compilation_cache_dir", "baseline")


def _flat(tree: Any, prefix: str) -> dict[str, Any]:
  if not isinstance(tree, dict):
    return {prefix: tree}
  out: dict[str, Any] = {}
  for k, v in tree.items():
    out.update(_flat(v, f"{prefix}.{k}"))
  return out


def check_same_run(saved: dict, config: ml_collections.ConfigDict) -> None:
  """A workdir belongs to one experiment: refuse to resume under a config that would
  change what the run computes or writes, naming the first field that differs. Fields
  added to the schema after the run started are compared at their defaults; model.dtype
  'auto' is compared as the dtype it resolves to on this backend."""
  current = json.loads(config.to_json())
  defaults = json.loads(base_config().to_json())
  platform = jax.devices()[0].platform
  for group in ("seed", "data", "model", "method", "optim", "regularizer", "peft", "train"):
    a, b = saved.get(group, defaults.get(group)), current.get(group)
    if isinstance(a, dict) and isinstance(b, dict):
      a = {**{k: defaults[group][k] for k in b.keys() - a.keys() if k in defaults[group]}, **a}
      if group == "model":
        a, b = (
          {**x, "dtype": step.dtype_name(x.get("dtype", "float32"), platform)} for x in (a, b)
        )
      if group == "train":
        a, b = ({k: v for k, v in x.items() if k not in _TRAIN_FREE} for x in (a, b))
    fa, fb = _flat(a, group), _flat(b, group)
    for field in sorted(fa.keys() | fb.keys()):
      was, now = fa.get(field), fb.get(field)
      if json.dumps(was, sort_keys=True) == json.dumps(now, sort_keys=True):
        continue
      why = {
        "train.steps": " (the schedules depend on it)",
        "train.grad_accum_steps": " micro-batches per step",
      }.get(field, "")
      raise ConfigError(
        f"{field}: the run in this workdir was started with {json.dumps(was)}{why}; now "
        f"{json.dumps(now)}. Use a new --workdir, or the original value to resume"
      )


def summarize(writer: MetricWriter, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Target accuracy under three labelled selections of the evaluated steps."""
  evals = writer.of_kind("eval")
  last = evals[-1]
  by_source_val = max(evals, key=lambda r: (r["source_val_acc"], r["step"]))
  oracle = max(evals, key=lambda r: (r["target_test_acc"], r["step"]))
  return {
    "method": config.method.name,
    "source": config.data.source,
    "target": config.data.target,
    "seed": config.seed,
    "steps": config.train.steps,
    "target_acc_last": last["target_test_acc"],
    "source_val_acc_last": last["source_val_acc"],
    "target_acc_best_source_val": by_source_val["target_test_acc"],
    "best_source_val_step": by_source_val["step"],
    "target_acc_oracle": oracle["target_test_acc"],
    "oracle_step": oracle["step"],
  }


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, devices=None, stop_after: int | None = None
) -> dict[str, Any]:
  """Trains (resuming from `workdir` if it holds a checkpoint) and returns the summary.

  `stop_after` checkpoints and returns after that step, exactly as a SIGTERM
  would; rerunning resumes (used by the tests).
  """
  exp = build(config, devices)
  iterators = train_iterators(exp)
  state = exp.init(jax.random.key(config.seed))
  start = 0
  # A new run loads model.init_from before anything is written, so a bad one leaves no
  # half-made workdir behind.
  fresh = not os.path.isdir(os.path.join(workdir, "checkpoints"))
  if fresh and config.model.init_from:
    state = load_init_from(exp, state)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"workdir: cannot create {workdir}: {e.strerror}") from None
  tc = config.train
  ckpt = checkpoint.Checkpointer(
    workdir,
    tc.keep_checkpoints,
    is_regular=lambda s: s % tc.checkpoint_every == 0 or s == tc.steps,
  )
  if ckpt.latest_step() is not None:
    check_same_run(ckpt.saved_config(), config)
    state, _ = ckpt.restore(checkpoint.abstract_like(state), iterators)
    start = int(state.step)
  elif config.model.init_from and not fresh:
    state = load_init_from(exp, state)
  # The update's third argument, recomputed every method.refresh_every steps (methods/base.py).
  extra, every = exp.method.refresh(exp, state), config.method.refresh_every
  writer = MetricWriter(workdir, resume_step=start if start else None)
  if start == 0 and jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json(indent=2))
  is_main = jax.process_index() == 0
  bar = None
  if tc.progress_bar and is_main:
    from tqdm import tqdm

    bar = tqdm(
      total=tc.steps,
      initial=start,
      desc=config.method.name,
      unit="step",
      dynamic_ncols=True,
      leave=False,
      smoothing=0,
    )
  pending: list[dict[str, jax.Array]] = []
  selection = None  # (forward, subsets) for the sel_* criteria, built at the first eval
  images_per_step = config.data.batch_size * len(exp.method.domains)
  t_log, steps_since_log = time.perf_counter(), 0
  try:
    with Preemption() as preemption:
      for step in range(start + 1, tc.steps + 1):
        if extra is not None and every and step > start + 1 and (step - 1) % every == 0:
          extra = exp.method.refresh(exp, state)
        local = next(iterators)
        batch = sharding.global_batch({d: local[d] for d in exp.method.domains}, exp.mesh)
        state, metrics = exp.update(state, batch, *(() if extra is None else (extra,)))
        pending.append(metrics)
        steps_since_log += 1
        stopping = preemption.should_stop(step, tc.log_every) or step == stop_after
        log_now = step % tc.log_every == 0 or step == tc.steps or stopping
        if log_now:
          fetched = jax.device_get(pending)
          mean = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
          check_finite(exp, step, mean)
          elapsed = time.perf_counter() - t_log
          mean["images_per_s"] = images_per_step * steps_since_log / elapsed
          mean["lr"] = float(optim.lr_schedule(config.optim, tc.steps)(step - 1))
          writer.write(step, "train", mean)
          if bar is not None:
            bar.set_postfix(loss=f"{mean['loss']:.3f}", img_s=f"{mean['images_per_s']:.0f}")
          pending, t_log, steps_since_log = [], time.perf_counter(), 0
        eval_metrics = None
        if step % tc.eval_every == 0 or step == tc.steps:
          views = eval_states(exp, state)
          eval_metrics = {
            **evaluate(exp, views["source"], "source_val"),
            **evaluate(exp, views["target"], "target_test"),
          }
          if tc.selection_points:
            if selection is None:
              selection = features.forward_fn(exp), selection_sources(exp)
            eval_metrics.update(selection_metrics(exp, views, *selection))
          writer.write(step, "eval", eval_metrics)
        if step % tc.checkpoint_every == 0 or step == tc.steps or stopping:
          ckpt.save(step, state, iterators, config, eval_metrics)
        if bar is not None:
          bar.update(1)
        if stopping:
          ckpt.wait()
          return {"stopped_at": step}
  finally:
    if bar is not None:
      bar.close()
    ckpt.wait()
    ckpt.close()
    writer.close()
  summary = {**summarize(writer, config), **exp.method.summarize(writer.of_kind("train"))}
  if is_main:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  return summary
