"""The canonical trainer: init → restore → loop (step, log, eval, save) → summary.

The step is a pure top-level function `train_step(state, batch) -> (state,
metrics)` with everything static (model, method, optimizer, config) bound by
`functools.partial` before `jax.jit`, so it compiles once. The state is
donated; metrics stay on device until a log step.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxdapt import checkpoint, config as config_lib, data, losses, methods, models, optim
from jaxdapt import sharding
from jaxdapt.errors import ConfigError, NonFiniteLossError
from jaxdapt.metrics import MetricWriter

PyTree = Any
DOMAINS = ("source", "target")


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: PyTree          # {'model': ..., 'method': ...}
  batch_stats: PyTree     # the model's BatchNorm statistics ({} without BN)
  opt_state: PyTree
  rng: jax.Array


def compute_dtype(config: ml_collections.ConfigDict):
  return jnp.dtype(config.model.dtype)


# Per-channel input normalisation (on [0, 1] pixels); 0.5/0.5 maps images to [-1, 1].
DEFAULT_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def normalize(images: jax.Array, dtype, mean_std=DEFAULT_MEAN_STD) -> jax.Array:
  """uint8 [0, 255] → (x/255 − mean)/std on device (images travel as uint8)."""
  mean, std = (np.asarray(v, np.float64) for v in mean_std)
  if np.all(mean == 0.5) and np.all(std == 0.5):
    return images.astype(dtype) * (1.0 / 127.5) - 1.0
  scale = jnp.asarray(1.0 / (255.0 * std), dtype)
  return images.astype(dtype) * scale - jnp.asarray(mean / std, dtype)


def input_mean_std(config: ml_collections.ConfigDict):
  """The normalisation the pretrained weights expect (metadata.json of an import), else [-1, 1]."""
  path = os.path.join(config.model.init_from, "metadata.json") if config.model.init_from else ""
  if path and os.path.isfile(path):
    with open(path) as f:
      meta = json.load(f)
    if "mean" in meta and "std" in meta:
      return tuple(map(float, meta["mean"])), tuple(map(float, meta["std"]))
  return DEFAULT_MEAN_STD


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  kwargs = {}
  if config.model.name.startswith(("resnet", "vgg")):
    kwargs["small_input"] = config.model.small_input
  try:
    return models.get_model(
        config.model.name, num_classes=num_classes,
        bottleneck_dim=config.model.bottleneck_dim or None,
        head_hidden=tuple(config.model.head_hidden), dropout=config.model.dropout,
        norm=config.model.norm, dtype=compute_dtype(config), **kwargs)
  except (TypeError, ValueError) as e:
    if isinstance(e, ConfigError):
      raise
    raise ConfigError(f"model: cannot build {config.model.name!r}: {e}") from e


def apply_model(model, params, batch_stats, images, *, train: bool, rng=None):
  """Returns (outputs, new batch_stats)."""
  variables = {"params": params}
  if batch_stats:
    variables["batch_stats"] = batch_stats
  if not train:
    return model.apply(variables, images, train=False), batch_stats
  outputs, mutated = model.apply(variables, images, train=True, mutable=["batch_stats"],
                                 rngs={"dropout": rng})
  return outputs, mutated.get("batch_stats", batch_stats)


def forward_domains(model, params, batch_stats, batch, domains, *, bn: str, dtype, rng,
                    mean_std=DEFAULT_MEAN_STD):
  """Forward the listed domains under a BatchNorm policy.

  joint:    one pass over the concatenated batch, statistics over both domains.
  separate: one pass per domain, each normalised by its own batch statistics
            (running statistics updated by both, in order).
  """
  images = {d: normalize(batch[d]["image"], dtype, mean_std) for d in domains}
  outputs = {}
  if bn == "joint" and len(domains) > 1:
    sizes = [images[d].shape[0] for d in domains]
    out, batch_stats = apply_model(model, params, batch_stats,
                                   jnp.concatenate([images[d] for d in domains]),
                                   train=True, rng=rng)
    offsets = np.cumsum([0] + sizes)
    for i, d in enumerate(domains):
      outputs[d] = {k: v[offsets[i]:offsets[i + 1]] for k, v in out.items()}
  else:
    for i, d in enumerate(domains):
      outputs[d], batch_stats = apply_model(model, params, batch_stats, images[d], train=True,
                                            rng=jax.random.fold_in(rng, i))
  for d in domains:
    outputs[d]["labels"] = batch[d]["label"]
  return outputs, batch_stats


def train_step(state: TrainState, batch: dict, *, model, method: methods.Method,
               tx: optax.GradientTransformation, bn: str, dtype, total_steps: int,
               mean_std=DEFAULT_MEAN_STD) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step of classification loss + the method's transfer loss."""
  rng = jax.random.fold_in(state.rng, state.step)
  model_rng, method_rng = jax.random.split(rng)
  progress = state.step.astype(jnp.float32) / total_steps

  def loss_fn(params):
    outputs, batch_stats = forward_domains(model, params["model"], state.batch_stats, batch,
                                           method.domains, bn=bn, dtype=dtype, rng=model_rng,
                                           mean_std=mean_std)
    sup = outputs[method.supervised_domain]
    cls_loss = losses.cross_entropy(sup["logits"], sup["labels"])
    transfer_loss, extra = method.loss(params["method"], outputs, progress, method_rng)
    metrics = {"cls_loss": cls_loss, "transfer_loss": jnp.asarray(transfer_loss, jnp.float32),
               "train_acc": losses.accuracy(sup["logits"], sup["labels"]), **extra}
    return cls_loss + transfer_loss, (batch_stats, metrics)

  (loss, (batch_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  return new_state, metrics


def eval_step(params: PyTree, batch_stats: PyTree, batch: dict, *, model, dtype,
              mean_std=DEFAULT_MEAN_STD) -> dict[str, jax.Array]:
  """Sums over the real (mask=1) rows of a padded batch."""
  out, _ = apply_model(model, params["model"], batch_stats,
                       normalize(batch["image"], dtype, mean_std), train=False)
  mask = batch["mask"].astype(jnp.float32)
  logits = out["logits"].astype(jnp.float32)
  correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  probs = jax.nn.softmax(logits)
  entropy = -jnp.sum(probs * jax.nn.log_softmax(logits), -1)
  return {"correct": (correct * mask).sum(), "nll": (nll * mask).sum(), "count": mask.sum(),
          "entropy": (entropy * mask).sum(), "probs": (probs * mask[:, None]).sum(0)}


@dataclasses.dataclass
class Experiment:
  """Everything built from a config that the loop needs (no mutable training state)."""
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  model: Any
  method: methods.Method
  tx: optax.GradientTransformation
  num_classes: int
  sources: dict[str, Any]
  update: Callable
  evaluate_batch: Callable
  init: Callable


def data_dir(config: ml_collections.ConfigDict) -> str | None:
  return config.data.data_dir or None


def build(config: ml_collections.ConfigDict, devices=None) -> Experiment:
  """Validates the config and builds model, method, optimizer and jitted functions."""
  mesh = sharding.make_mesh(devices)
  config_lib.validate(config, device_count=mesh.size)
  method = methods.get_method(config.method)
  ddir = data_dir(config)
  splits = {"source": (config.data.source, config.data.source_split),
            "source_val": (config.data.source, config.data.source_val_split),
            "target": (config.data.target, config.data.target_split),
            "target_test": (config.data.target, config.data.target_test_split)}
  fields = {"source": "data.source", "source_val": "data.source_val_split",
            "target": "data.target", "target_test": "data.target_test_split"}
  sources = {}
  for key, (name, split) in splits.items():
    try:
      sources[key] = data.get_source(name, split, ddir)
    except ConfigError as e:
      raise ConfigError(f"{fields[key]}: {e}") from None
  num_classes = data.num_classes(config.data.source, ddir)
  target_classes = data.num_classes(config.data.target, ddir)
  if target_classes != num_classes:
    raise ConfigError(f"data.target: {config.data.target} has {target_classes} classes but "
                      f"data.source {config.data.source} has {num_classes}")
  model = build_model(config, num_classes)
  dtype = compute_dtype(config)
  image_shape = tuple(sources["source"][0]["image"].shape)
  total_steps = config.train.steps

  def init(rng):
    model_rng, method_rng, state_rng = jax.random.split(rng, 3)
    dummy = jnp.zeros((2, *image_shape), dtype)
    variables = model.init({"params": model_rng, "dropout": model_rng}, dummy, train=False)
    feature_dim = model.apply(variables, dummy, train=False)["features"].shape[-1]
    params = {"model": variables["params"],
              "method": method.init(method_rng, feature_dim, num_classes)}
    return params, variables.get("batch_stats", {}), state_rng

  try:
    abstract_params = jax.eval_shape(init, jax.random.key(0))[0]
  except (TypeError, ValueError) as e:  # e.g. a conv stack that shrinks the image below 1 px
    raise ConfigError(
        f"model.name: {config.model.name} cannot take {image_shape} images from data.source "
        f"{config.data.source} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
  tx = optim.build_optimizer(config.optim, total_steps, abstract_params)
  replicated = sharding.replicated(mesh)

  def init_state(rng):
    params, batch_stats, state_rng = init(rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params), rng=state_rng)

  mean_std = input_mean_std(config)
  step_fn = method.update_fn() or train_step
  update = jax.jit(
      functools.partial(step_fn, model=model, method=method, tx=tx, bn=config.method.bn,
                        dtype=dtype, total_steps=total_steps, mean_std=mean_std),
      out_shardings=(replicated, replicated), donate_argnums=0)
  evaluate_batch = jax.jit(functools.partial(eval_step, model=model, dtype=dtype,
                                             mean_std=mean_std),
                           out_shardings=replicated)
  return Experiment(config=config, mesh=mesh, model=model, method=method, tx=tx,
                    num_classes=num_classes, sources=sources, update=update,
                    evaluate_batch=evaluate_batch,
                    init=jax.jit(init_state, out_shardings=replicated))


def train_iterators(exp: Experiment) -> data.PairedIterator:
  cfg = exp.config.data
  its = {}
  for i, d in enumerate(DOMAINS):
    its[d] = data.train_iterator(
        exp.sources[d], global_batch_size=cfg.batch_size, seed=exp.config.seed * 1000 + i,
        augment=cfg.augment, process_index=jax.process_index(),
        process_count=jax.process_count(), prefetch=cfg.prefetch)
  return data.PairedIterator(its["source"], its["target"])


def evaluate(exp: Experiment, state: TrainState, split: str) -> dict[str, float]:
  totals = None
  local_batch = exp.config.data.eval_batch_size // jax.process_count()
  for batch in data.eval_batches(exp.sources[split], batch_size=local_batch,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count()):
    sums = exp.evaluate_batch(state.params, state.batch_stats,
                              sharding.global_batch(batch, exp.mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals["count"])
  mean_entropy = float(totals["entropy"]) / count
  marginal = np.asarray(totals["probs"], np.float64) / count
  marginal_entropy = float(-(marginal * np.log(np.maximum(marginal, 1e-12))).sum())
  # Label-free signals (no labels used): mean prediction entropy, and information
  # maximisation H(E[p]) - E[H(p)] (confident and diverse predictions score high).
  return {f"{split}_acc": float(totals["correct"]) / count,
          f"{split}_nll": float(totals["nll"]) / count,
          f"{split}_entropy": mean_entropy,
          f"{split}_im": marginal_entropy - mean_entropy}


def _check_finite(exp: Experiment, step: int, metrics: dict[str, float]) -> None:
  bad = [k for k in ("loss", "cls_loss", "transfer_loss") if k in metrics
         and not math.isfinite(metrics[k])]
  if bad:
    raise NonFiniteLossError(
        f"method {exp.config.method.name!r}: non-finite {', '.join(bad)} at step {step} "
        f"({', '.join(f'{k}={metrics[k]}' for k in bad)}); checkpoints up to the last good "
        f"step are kept. Lower optim.lr or method.weight.")


def load_init_from(exp: Experiment, state: TrainState) -> TrainState:
  """Replaces the model's initial variables by config.model.init_from (strict merge)."""
  from jaxdapt import weights
  cfg = exp.config.model
  if os.path.isdir(os.path.join(cfg.init_from, "checkpoints")):  # a jaxdapt workdir
    params, batch_stats, step = checkpoint.load_model_variables(cfg.init_from)
    pretrained = weights.PretrainedWeights(params, batch_stats, {"arch": cfg.name, "step": step})
  else:  # a directory written by `python -m jaxdapt.weights import`
    pretrained = weights.load_pretrained(cfg.init_from, arch=cfg.name)
  params, batch_stats, report = weights.merge_into(
      jax.device_get(state.params["model"]), jax.device_get(state.batch_stats), pretrained,
      tuple(cfg.dont_load))
  if jax.process_index() == 0:
    print(f"init_from {cfg.init_from}: {report.summary()}", flush=True)
  replicated = sharding.replicated(exp.mesh)
  return state.replace(params={**state.params, "model": jax.device_put(params, replicated)},
                       batch_stats=jax.device_put(batch_stats, replicated))


def _check_same_run(saved: dict, config: ml_collections.ConfigDict) -> None:
  """A workdir belongs to one experiment: refuse to resume under another config."""
  current = json.loads(config.to_json())
  for group in ("seed", "data", "model", "method", "optim"):
    a, b = saved.get(group), current.get(group)
    if isinstance(a, dict) and isinstance(b, dict):
      # Fields added to the schema after the run started are compared at their defaults.
      defaults = json.loads(config_lib.base_config().to_json())[group]
      a = {**{k: defaults[k] for k in b.keys() - a.keys() if k in defaults}, **a}
    if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
      raise ConfigError(
          f"{group}: this workdir holds a run with a different {group} ({a} vs now {b}); "
          f"use a new --workdir or the original config")
  if saved["train"]["steps"] != current["train"]["steps"]:
    raise ConfigError(f"train.steps: the run in this workdir was started with "
                      f"{saved['train']['steps']} steps (the schedules depend on it); now "
                      f"{current['train']['steps']}")


class _Preemption:
  """Turns SIGTERM into a request to checkpoint and exit at the next step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def summarize(writer: MetricWriter, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Target accuracy under three labelled selections of the evaluated steps."""
  evals = writer.of_kind("eval")
  last = evals[-1]
  by_source_val = max(evals, key=lambda r: (r["source_val_acc"], r["step"]))
  oracle = max(evals, key=lambda r: (r["target_test_acc"], r["step"]))
  return {
      "method": config.method.name, "source": config.data.source, "target": config.data.target,
      "seed": config.seed, "steps": config.train.steps,
      "target_acc_last": last["target_test_acc"],
      "source_val_acc_last": last["source_val_acc"],
      "target_acc_best_source_val": by_source_val["target_test_acc"],
      "best_source_val_step": by_source_val["step"],
      "target_acc_oracle": oracle["target_test_acc"],
      "oracle_step": oracle["step"],
  }


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       devices=None, stop_after: int | None = None) -> dict[str, Any]:
  """Trains (resuming from `workdir` if it holds a checkpoint) and returns the summary.

  `stop_after` checkpoints and returns after that step, exactly as a SIGTERM
  would; rerunning resumes (used by the tests).
  """
  exp = build(config, devices)
  os.makedirs(workdir, exist_ok=True)
  ckpt = checkpoint.Checkpointer(workdir, config.train.keep_checkpoints)
  iterators = train_iterators(exp)
  state = exp.init(jax.random.key(config.seed))
  start = 0
  if ckpt.latest_step() is not None:
    _check_same_run(ckpt.saved_config(), config)
    state, _ = ckpt.restore(checkpoint.abstract_like(state), iterators)
    start = int(state.step)
  elif config.model.init_from:
    state = load_init_from(exp, state)
  writer = MetricWriter(workdir, resume_step=start if start else None)
  if start == 0 and jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json(indent=2))
  tc = config.train
  is_main = jax.process_index() == 0
  bar = None
  if tc.progress_bar and is_main:
    from tqdm import tqdm
    bar = tqdm(total=tc.steps, initial=start, desc=config.method.name, unit="step",
               dynamic_ncols=True, leave=False, smoothing=0)
  pending: list[dict[str, jax.Array]] = []
  images_per_step = config.data.batch_size * len(exp.method.domains)
  t_log, steps_since_log = time.perf_counter(), 0
  try:
    with _Preemption() as preemption:
      for step in range(start + 1, tc.steps + 1):
        local = next(iterators)
        batch = sharding.global_batch({d: local[d] for d in exp.method.domains}, exp.mesh)
        state, metrics = exp.update(state, batch)
        pending.append(metrics)
        steps_since_log += 1
        stopping = preemption.requested or step == stop_after
        log_now = step % tc.log_every == 0 or step == tc.steps or stopping
        if log_now:
          fetched = jax.device_get(pending)
          mean = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
          _check_finite(exp, step, mean)
          elapsed = time.perf_counter() - t_log
          mean["images_per_s"] = images_per_step * steps_since_log / elapsed
          mean["lr"] = float(optim.lr_schedule(config.optim, tc.steps)(step - 1))
          writer.write(step, "train", mean)
          if bar is not None:
            bar.set_postfix(loss=f"{mean['loss']:.3f}", img_s=f"{mean['images_per_s']:.0f}")
          pending, t_log, steps_since_log = [], time.perf_counter(), 0
        eval_metrics = None
        if step % tc.eval_every == 0 or step == tc.steps:
          eval_metrics = {**evaluate(exp, state, "source_val"),
                          **evaluate(exp, state, "target_test")}
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
  summary = summarize(writer, config)
  if is_main:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  return summary
