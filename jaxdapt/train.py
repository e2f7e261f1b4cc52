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

from jaxdapt import batchnorm, checkpoint, config as config_lib, data, losses, methods, models
from jaxdapt import features, optim, sharding
from jaxdapt.data.labeled import labeled_subset
from jaxdapt.errors import ConfigError, NonFiniteLossError
from jaxdapt.kernels import cpu_conv
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


def compute_dtype(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None
                  ) -> jnp.dtype:
  """The mixed-precision policy's compute dtype: config.model.dtype, where 'auto' is
  bfloat16 on GPU/TPU and float32 on CPU (XLA:CPU's bf16 convolutions are slow, and the
  CPU tests compare numbers in float32), by the platform of `mesh`'s devices (default:
  JAX's default backend). It is the dtype of activations and of the backbone, bottleneck
  and hidden head layers only: parameters, optimizer state, BatchNorm statistics, the
  classifier's output layer, method heads, the features and logits losses see, every
  loss and metric are float32 (tests/test_precision_accum_remat.py)."""
  device = mesh.devices.flat[0] if mesh is not None else jax.devices()[0]
  return jnp.dtype(_dtype_name(config.model.dtype, device.platform))


def _dtype_name(name: str, platform: str) -> str:
  if name != "auto":
    return name
  return "float32" if platform == "cpu" else "bfloat16"


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


def build_model(config: ml_collections.ConfigDict, num_classes: int, dtype=None):
  """The Classifier of config.model computing in `dtype` (default: compute_dtype(config))."""
  kwargs = {}
  if config.model.name.startswith(("resnet", "vgg")):
    kwargs["small_input"] = config.model.small_input
  if config.model.width:  # only models with a base width take it (others: ConfigError)
    kwargs["width"] = config.model.width
  try:
    return models.get_model(
        config.model.name, num_classes=num_classes,
        bottleneck_dim=config.model.bottleneck_dim or None,
        head_hidden=tuple(config.model.head_hidden), dropout=config.model.dropout,
        norm=config.model.norm, dtype=dtype or compute_dtype(config), remat=config.model.remat,
        **kwargs).clone(frozen_backbone_bn=config.model.bn_mode != "train",
                        cosine_temperature=config.model.cosine_temperature)
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
  """Forward the listed batch keys under a BatchNorm policy (jaxdapt/batchnorm.py).

  Keys are domains or views named after one ('target_strong', FixMatch).
  joint:    one pass over the concatenated batch, statistics over both domains.
  separate: one pass per domain (its keys together), each normalised by its own batch
            statistics (running statistics updated by both, in order).
  dsbn:     as separate, each domain through its own BN branch (scale/bias, statistics).
  """
  images = {d: normalize(batch[d]["image"], dtype, mean_std) for d in domains}
  if bn == "joint" and len(domains) > 1:
    passes = [(None, tuple(domains), rng)]
  else:
    by_domain: dict[str, list[str]] = {}
    for d in domains:
      by_domain.setdefault(batchnorm.domain_of(d), []).append(d)
    passes = [(dom, tuple(keys), jax.random.fold_in(rng, i))
              for i, (dom, keys) in enumerate(by_domain.items())]
  outputs = {}
  for domain, keys, pass_rng in passes:
    x = jnp.concatenate([images[d] for d in keys]) if len(keys) > 1 else images[keys[0]]
    if bn == "dsbn":
      p, stats = batchnorm.branch(params, batch_stats, domain)
      out, stats = apply_model(model, p, stats, x, train=True, rng=pass_rng)
      batch_stats = batchnorm.with_branch_stats(batch_stats, stats, domain)
    else:
      out, batch_stats = apply_model(model, params, batch_stats, x, train=True, rng=pass_rng)
    offsets = np.cumsum([0] + [images[d].shape[0] for d in keys])
    for i, d in enumerate(keys):
      outputs[d] = {k: v[offsets[i]:offsets[i + 1]] for k, v in out.items()}
  for d in domains:
    outputs[d]["labels"] = batch[d]["label"]
  return outputs, batch_stats


def micro_batches(batch: PyTree, n: int) -> PyTree:
  """Leaves [B, ...] -> [n, B/n, ...]. Micro-batch i holds rows i, i+n, i+2n, ..., so every
  device's shard of the global batch gives B/(n·devices) rows to each micro-batch and no
  row moves between devices (config.validate: B divides by n × devices)."""
  return jax.tree.map(
      lambda x: jnp.swapaxes(x.reshape(x.shape[0] // n, n, *x.shape[1:]), 0, 1), batch)


def accumulate_gradients(grad_fn: Callable, params: PyTree, batch_stats: PyTree, batch: dict,
                         rng: jax.Array, n: int):
  """`grad_fn(batch_stats, batch, rng) -> ((loss, (batch_stats, metrics)), grads)` over n
  micro-batches of `batch` (train.grad_accum_steps): BatchNorm statistics threaded through
  them in order, gradients, loss and metrics averaged. One lax.scan, so the loss is traced
  and compiled once whatever n; activations of one micro-batch are live at a time.
  n == 1 is grad_fn on the whole batch (bitwise the step without accumulation)."""
  if n == 1:
    return grad_fn(batch_stats, batch, rng)

  def body(carry, xs):
    stats, grad_sum = carry
    micro, i = xs
    (loss, (stats, metrics)), grads = grad_fn(stats, micro, jax.random.fold_in(rng, i))
    return (stats, jax.tree.map(jnp.add, grad_sum, grads)), (loss, metrics)

  zeros = jax.tree.map(jnp.zeros_like, params)
  # Unrolled on CPU: XLA:CPU runs convolutions inside a while-loop body more than 10x
  # slower (jaxdapt.bench: 7.9 s vs 0.39 s per DANN step of 2 micro-batches on one core);
  # tests/test_precision_accum_remat.py checks the compiled CPU step has no while loop.
  (batch_stats, grad_sum), (loss, metrics) = jax.lax.scan(
      body, (batch_stats, zeros), (micro_batches(batch, n), jnp.arange(n)),
      unroll=n if jax.default_backend() == "cpu" else 1)
  mean = functools.partial(jnp.mean, axis=0)
  return ((mean(loss), (batch_stats, jax.tree.map(mean, metrics))),
          jax.tree.map(lambda g: g / n, grad_sum))


def train_step(state: TrainState, batch: dict, extra: PyTree = None, *, model,
               method: methods.Method, tx: optax.GradientTransformation, bn: str, dtype,
               total_steps: int, mean_std=DEFAULT_MEAN_STD, grad_accum_steps: int = 1
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step of classification loss + the method's transfer loss (+ its
  model-level terms: a regulariser, MME; `extra` is method.refresh's result). With
  grad_accum_steps N > 1, one update from the mean gradient of N micro-batches, every
  loss computed per micro-batch (accumulate_gradients)."""
  rng = jax.random.fold_in(state.rng, state.step)
  progress = state.step.astype(jnp.float32) / total_steps

  def loss_fn(params, batch_stats, batch, rng):
    model_rng, method_rng = jax.random.split(rng)
    outputs, batch_stats = forward_domains(model, params["model"], batch_stats, batch,
                                           method.domains, bn=bn, dtype=dtype, rng=model_rng,
                                           mean_std=mean_std)
    sup = methods.fewshot.supervised_outputs(outputs, method)
    cls_loss = losses.cross_entropy(sup["logits"], sup["labels"], method.config.label_smoothing)
    transfer_loss, more = method.loss(params["method"], outputs, progress, method_rng)
    model_loss, model_metrics = method.model_loss(model, params["model"], outputs, batch, extra,
                                                  progress, jax.random.fold_in(method_rng, 1))
    transfer_loss = jnp.asarray(transfer_loss + model_loss, jnp.float32)
    metrics = {"cls_loss": cls_loss, "transfer_loss": transfer_loss,
               "train_acc": losses.accuracy(sup["logits"], sup["labels"]), **more,
               **model_metrics}
    return cls_loss + transfer_loss, (batch_stats, metrics)

  def grad_fn(batch_stats, batch, rng):
    # Only w.r.t. the leaves tx can move: no backward pass through a frozen backbone prefix.
    return optim.value_and_grad(lambda p: loss_fn(p, batch_stats, batch, rng), state.params, tx)

  (loss, (batch_stats, metrics)), grads = accumulate_gradients(
      grad_fn, state.params, state.batch_stats, batch, rng, grad_accum_steps)
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
  method = methods.for_experiment(config)
  ddir = data_dir(config)
  splits = {"source": (config.data.source, config.data.source_split),
            "source_val": (config.data.source, config.data.source_val_split),
            "target": (config.data.target, config.data.target_split),
            "target_test": (config.data.target, config.data.target_test_split)}
  fields = {"source": "data.source", "source_val": "data.source_val_split",
            "target": "data.target", "target_test": "data.target_test_split"}
  sources, opened = {}, {}
  for key, (name, split) in splits.items():
    if (name, split) not in opened:  # e.g. target_test_split == target_split: read once
      try:
        opened[name, split] = data.in_memory.hold(data.get_source(name, split, ddir),
                                                  config.data.in_memory_mb << 20)
      except ConfigError as e:
        raise ConfigError(f"{fields[key]}: {e}") from None
    sources[key] = opened[name, split]
  num_classes = data.num_classes(config.data.source, ddir)
  target_classes = data.num_classes(config.data.target, ddir)
  if target_classes != num_classes:
    raise ConfigError(f"data.target: {config.data.target} has {target_classes} classes but "
                      f"data.source {config.data.source} has {num_classes}")
  if config.data.target_labeled_per_class:
    sources[methods.fewshot.LABELED] = labeled_subset(
        sources["target"], config.data.target_labeled_per_class, config.seed)
  image_shape = tuple(sources["source"][0]["image"].shape)
  return build_functions(config, mesh, method, image_shape, num_classes, sources)


def build_functions(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                    method: methods.Method, image_shape: tuple[int, ...], num_classes: int,
                    sources: dict[str, Any] | None = None) -> Experiment:
  """Model, optimizer and jitted functions for `image_shape` inputs; reads no data, so
  the step benchmark (jaxdapt/bench.py) builds the same step for synthetic shapes."""
  dtype = compute_dtype(config, mesh)
  model = build_model(config, num_classes, dtype).clone(conv_kernel=cpu_conv.resolve(
      config.model.conv_kernel, mesh.devices.flat[0].platform, mesh.devices.size))
  total_steps = config.train.steps

  def init(rng):
    model_rng, method_rng, state_rng = jax.random.split(rng, 3)
    dummy = jnp.zeros((2, *image_shape), dtype)
    variables = model.init({"params": model_rng, "dropout": model_rng}, dummy, train=False)
    feature_dim = model.apply(variables, dummy, train=False)["features"].shape[-1]
    model_params, batch_stats = variables["params"], variables.get("batch_stats", {})
    if config.method.bn == "dsbn":
      model_params, batch_stats = batchnorm.stack(model_params, batch_stats)
    params = {"model": model_params,
              "method": method.init(method_rng, feature_dim, num_classes)}
    return params, batch_stats, state_rng

  try:
    abstract_params, abstract_stats, _ = jax.eval_shape(init, jax.random.key(0))
  except (TypeError, ValueError) as e:  # e.g. a conv stack that shrinks the image below 1 px
    raise ConfigError(
        f"model.name: {config.model.name} cannot take {image_shape} images from data.source "
        f"{config.data.source} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
  batchnorm.check(config, abstract_stats)
  tx = optim.build_optimizer(batchnorm.optim_config(config, abstract_stats), total_steps,
                             abstract_params)
  replicated = sharding.replicated(mesh)

  def init_state(rng):
    params, batch_stats, state_rng = init(rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params), rng=state_rng)

  mean_std = input_mean_std(config)
  step_fn = method.update_fn() or train_step
  # Only steps that accumulate take the argument (config.validate refuses N > 1 for others).
  accum = config.train.grad_accum_steps
  accum_kw = {"grad_accum_steps": accum} if accum > 1 else {}
  update = jax.jit(
      functools.partial(step_fn, model=model, method=method, tx=tx, bn=config.method.bn,
                        dtype=dtype, total_steps=total_steps, mean_std=mean_std, **accum_kw),
      out_shardings=(replicated, replicated), donate_argnums=0)
  evaluate_batch = jax.jit(functools.partial(eval_step, model=model, dtype=dtype,
                                             mean_std=mean_std),
                           out_shardings=replicated)
  return Experiment(config=config, mesh=mesh, model=model, method=method, tx=tx,
                    num_classes=num_classes, sources=sources or {}, update=update,
                    evaluate_batch=evaluate_batch,
                    init=jax.jit(init_state, out_shardings=replicated))


def train_iterators(exp: Experiment) -> data.PairedIterator:
  """One stream per domain (+ the labeled target with data.target_labeled_per_class)."""
  cfg = exp.config.data
  labeled = methods.fewshot.LABELED
  its = {}
  for i, d in enumerate(DOMAINS + ((labeled,) if labeled in exp.sources else ())):
    its[d] = data.train_iterator(
        exp.sources[d], global_batch_size=cfg.batch_size, seed=exp.config.seed * 1000 + i,
        augment=cfg.augment, process_index=jax.process_index(),
        process_count=jax.process_count(), prefetch=cfg.prefetch)
  return data.PairedIterator(its.pop("source"), its.pop("target"), **its)


def eval_states(exp: Experiment, state: TrainState) -> dict[str, TrainState]:
  """Per domain, the state its splits are evaluated with (jaxdapt/batchnorm.py): under
  method.bn='dsbn' that domain's BN branch; for the target under AdaBN
  (train.eval_target_bn='target' or method adabn) BN statistics recomputed on the
  target train images. Source splits keep the statistics training left."""
  views = {}
  for domain in DOMAINS:
    params, batch_stats = state.params["model"], state.batch_stats
    if exp.config.method.bn == "dsbn":
      params, batch_stats = batchnorm.branch(params, batch_stats, domain)
    if domain == "target" and batchnorm.eval_target(exp.config) == "target":
      batch_stats = batchnorm.target_statistics(exp, params, batch_stats, exp.sources["target"])
    views[domain] = state.replace(params={**state.params, "model": params},
                                  batch_stats=batch_stats)
  return views


def evaluate(exp: Experiment, state: TrainState, split: str) -> dict[str, float]:
  """Metrics of `split` under `state`'s model (one BN branch: see eval_states)."""
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


SELECTION_SPLITS = ("source", "source_val", "target")


def selection_sources(exp: Experiment) -> dict[str, Any]:
  """Fixed subsets (one draw per run, from the seed) scored at every evaluation."""
  rng = np.random.default_rng(exp.config.seed)
  limit = exp.config.train.selection_points
  return {s: features.subset(exp.sources[s], limit, rng) for s in SELECTION_SPLITS}


def selection_metrics(exp: Experiment, views: dict[str, TrainState], forward,
                      subsets) -> dict[str, float]:
  """Label-free criteria on target TRAIN images (never target labels), logged as sel_*:
  neg_entropy, info_max, snd (softmax), snd_features, neg_dev; all higher = better.
  `views`: eval_states (each split's features from its domain's model)."""
  from jaxdapt.analysis import selection
  f = {s: features.extract(exp, forward, views[batchnorm.domain_of(s)], subsets[s])
       for s in SELECTION_SPLITS}
  scores = selection.criteria(
      target_logits=f["target"]["logits"], target_features=f["target"]["features"],
      source_val_logits=f["source_val"]["logits"], source_val_labels=f["source_val"]["labels"],
      source_val_features=f["source_val"]["features"],
      source_train_features=f["source"]["features"], seed=exp.config.seed)
  return {f"sel_{k}": v for k, v in scores.items() if k != "source_val_acc"}


def _check_finite(exp: Experiment, step: int, metrics: dict[str, float]) -> None:
  bad = [k for k in ("loss", "cls_loss", "transfer_loss") if k in metrics
         and not math.isfinite(metrics[k])]
  if bad:
    raise NonFiniteLossError(
        f"method {exp.config.method.name!r}: non-finite {', '.join(bad)} at step {step} "
        f"({', '.join(f'{k}={metrics[k]}' for k in bad)}); checkpoints up to the last good "
        f"step are kept. Lower optim.lr or method.weight.")


def split_run_step(init_from: str) -> tuple[str, int | None]:
  """'RUN@STEP' → (RUN, STEP): that checkpoint of a jaxdapt workdir; else (init_from, None)."""
  run, at, step = init_from.rpartition("@")
  return (run, int(step)) if at and step.isdigit() else (init_from, None)


def load_init_from(exp: Experiment, state: TrainState) -> TrainState:
  """Replaces the model's initial variables by config.model.init_from (strict merge)."""
  from jaxdapt import weights
  cfg = exp.config.model
  run, step = split_run_step(cfg.init_from)
  if os.path.isdir(os.path.join(run, "checkpoints")):  # a jaxdapt workdir
    params, batch_stats, step = checkpoint.load_model_variables(run, step)
    pretrained = weights.PretrainedWeights(params, batch_stats, {"arch": cfg.name, "step": step})
  else:  # a directory written by `python -m jaxdapt.weights import`
    pretrained = weights.load_pretrained(cfg.init_from, arch=cfg.name)
  params, batch_stats = jax.device_get((state.params["model"], state.batch_stats))
  copy_branch = False  # DSBN model, one-branch weights: load one branch, copy it to all
  if exp.config.method.bn == "dsbn":
    plain = batchnorm.branch(params, batch_stats, "source")
    if not batchnorm.holds_branches(pretrained.batch_stats, plain[1]):
      (params, batch_stats), copy_branch = plain, True
  elif batchnorm.holds_branches(pretrained.batch_stats, batch_stats):
    raise ConfigError(f"model.init_from: {cfg.init_from} holds a DSBN model (a BatchNorm "
                      f"branch per domain); load it with method.bn='dsbn'")
  params, batch_stats, report = weights.merge_into(params, batch_stats, pretrained,
                                                   tuple(cfg.dont_load))
  if copy_branch:
    params, batch_stats = batchnorm.stack(params, batch_stats)
  if jax.process_index() == 0:
    print(f"init_from {cfg.init_from}: {report.summary()}", flush=True)
  replicated = sharding.replicated(exp.mesh)
  return state.replace(params={**state.params, "model": jax.device_put(params, replicated)},
                       batch_stats=jax.device_put(batch_stats, replicated))


def _check_same_run(saved: dict, config: ml_collections.ConfigDict) -> None:
  """A workdir belongs to one experiment: refuse to resume under another config."""
  current = json.loads(config.to_json())
  for group in ("seed", "data", "model", "method", "optim", "regularizer"):
    # A group added to the schema after the run started is compared at its defaults.
    a, b = saved.get(group, {}), current.get(group)
    if isinstance(a, dict) and isinstance(b, dict):
      # Fields added to the schema after the run started are compared at their defaults.
      defaults = json.loads(config_lib.base_config().to_json())[group]
      a = {**{k: defaults[k] for k in b.keys() - a.keys() if k in defaults}, **a}
      if group == "model":  # model.dtype 'auto' is the dtype it resolves to on this backend
        platform = jax.devices()[0].platform
        a, b = ({**x, "dtype": _dtype_name(x.get("dtype", "float32"), platform)}
                for x in (a, b))
    if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
      raise ConfigError(
          f"{group}: this workdir holds a run with a different {group} ({a} vs now {b}); "
          f"use a new --workdir or the original config")
  if saved["train"]["steps"] != current["train"]["steps"]:
    raise ConfigError(f"train.steps: the run in this workdir was started with "
                      f"{saved['train']['steps']} steps (the schedules depend on it); now "
                      f"{current['train']['steps']}")
  # Micro-batches change BatchNorm's batch statistics, hence the trajectory.
  accum = saved["train"].get("grad_accum_steps", 1)
  if accum != current["train"]["grad_accum_steps"]:
    raise ConfigError(f"train.grad_accum_steps: the run in this workdir was started with "
                      f"{accum} micro-batches per step; now "
                      f"{current['train']['grad_accum_steps']}")


class _Preemption:
  """Turns SIGTERM into a request to checkpoint and exit at the next step.

  With several processes the signal reaches them at different steps, and a
  process that entered the checkpoint save alone would wait forever on the
  others: they agree at each log step instead (one tiny all-gather), and all
  stop there if any of them was signalled."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def should_stop(self, step: int, every: int) -> bool:
    if jax.process_count() == 1:
      return self.requested
    if step % every:
      return False
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.asarray([self.requested], np.int32))
    return bool(np.asarray(flags).any())

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
  # The update's third argument, recomputed every method.refresh_every steps (methods/base.py).
  extra, every = exp.method.refresh(exp, state), config.method.refresh_every
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
  selection = None  # (forward, subsets) for the sel_* criteria, built at the first eval
  images_per_step = config.data.batch_size * len(exp.method.domains)
  t_log, steps_since_log = time.perf_counter(), 0
  try:
    with _Preemption() as preemption:
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
          views = eval_states(exp, state)
          eval_metrics = {**evaluate(exp, views["source"], "source_val"),
                          **evaluate(exp, views["target"], "target_test")}
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
