"""The step layer: train state, model application and the pure jitted steps.

Everything a method builds on lives here, below the methods and the trainer: the
TrainState pytree, the compute-dtype policy, input normalisation, applying the model under
a BatchNorm policy (`forward_domains`), gradient accumulation, and the shared
`train_step` / `eval_step`. A step is `update(state, batch[, extra], *, ctx)`; the
`StepContext` holds what is static (model, method, optimizer, policies) and is bound with
`functools.partial` before `jax.jit`, so a step compiles once. Methods with a step of
their own (MCD, ADDA, SHOT, TENT, FixMatch) receive the same context.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
from collections.abc import Callable
from typing import Any

import flax
import flax.linen
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxdapt import batchnorm, losses, models, optim
from jaxdapt.errors import ConfigError
from jaxdapt.peft import lora

PyTree = Any
DTYPES = ("auto", "float32", "bfloat16")  # model.dtype; compute_dtype resolves auto


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: PyTree  # {'model': ..., 'method': ...}
  batch_stats: PyTree  # the model's BatchNorm statistics ({} without BN)
  opt_state: PyTree
  rng: jax.Array


def compute_dtype(
  config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None
) -> jnp.dtype:
  """The mixed-precision policy's compute dtype: config.model.dtype, where 'auto' is
  bfloat16 on GPU/TPU and float32 on CPU (XLA:CPU's bf16 convolutions are slow, and the
  CPU tests compare numbers in float32), by the platform of `mesh`'s devices (default:
  JAX's default backend). It is the dtype of activations and of the backbone, bottleneck
  and hidden head layers only: parameters, optimizer state, BatchNorm statistics, the
  classifier's output layer, method heads, the features and logits losses see, every
  loss and metric are float32 (tests/test_precision_accum_remat.py)."""
  device = mesh.devices.flat[0] if mesh is not None else jax.devices()[0]
  return jnp.dtype(dtype_name(config.model.dtype, device.platform))


def dtype_name(name: str, platform: str) -> str:
  if name != "auto":
    return name
  return "float32" if platform == "cpu" else "bfloat16"


# Per-channel input normalisation (on [0, 1] pixels); 0.5/0.5 maps images to [-1, 1].
DEFAULT_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def normalize(images: jax.Array, dtype, mean_std=DEFAULT_MEAN_STD) -> jax.Array:
  """uint8 [0, 255] → (x/255 − mean)/std on device (images travel as uint8).

  Token ids (int32 [B, L], the input of the text encoders) pass unchanged: a batch's
  'image' is the model's input whatever the modality, and only pixels are normalised."""
  if images.dtype != np.uint8 and jnp.issubdtype(images.dtype, jnp.integer):
    return images
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
  if config.model.max_tokens:  # only text encoders take it (others: ConfigError)
    kwargs["max_tokens"] = config.model.max_tokens
  try:
    return models.get_model(
      config.model.name,
      num_classes=num_classes,
      bottleneck_dim=config.model.bottleneck_dim or None,
      head_hidden=tuple(config.model.head_hidden),
      dropout=config.model.dropout,
      norm=config.model.norm,
      dtype=dtype or compute_dtype(config),
      remat=config.model.remat,
      **kwargs,
    ).clone(
      frozen_backbone_bn=config.model.bn_mode != "train",
      cosine_temperature=config.model.cosine_temperature,
    )
  except (TypeError, ValueError) as e:
    if isinstance(e, ConfigError):
      raise
    raise ConfigError(f"model: cannot build {config.model.name!r}: {e}") from e


def apply_model(model, params, batch_stats, images, *, train: bool, rng=None):
  """Returns (outputs, new batch_stats). LoRA factors in `params` are folded into their
  kernels first (peft.lora.merged; `params` itself when there are none), except, in
  training, those of Dense kernels: peft.lora.dense_interceptor computes those layers
  (their factors' gradients through the rank r; dropout under model.lora_dropout > 0)."""
  rate = getattr(model, "lora_dropout", 0.0) if train else 0.0
  unmerged = train and lora.dense_factor_count(params) > 0
  variables = {"params": lora.merged(params, keep_dense=unmerged)}
  if batch_stats:
    variables["batch_stats"] = batch_stats
  if not train:
    return model.apply(variables, images, train=False), batch_stats
  seen: list = []
  intercept = lora.dense_interceptor(rate, seen) if unmerged else None
  with flax.linen.intercept_methods(intercept) if intercept else contextlib.nullcontext():
    outputs, mutated = model.apply(
      variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": rng}
    )
  expected = lora.dense_factor_count(variables["params"]) if unmerged else 0
  if len(set(seen)) != expected:  # at trace time: a 2-D LoRA kernel outside nn.Dense
    if rate > 0:
      raise ConfigError(
        f"peft.lora_dropout: {expected} Dense kernels carry LoRA factors, {len(set(seen))} "
        f"took the dropout path (a 2-D kernel outside nn.Dense); set peft.lora_dropout=0"
      )
    # Without dropout every delta can be merged: trace the merged model instead (the
    # unmerged trace above is unused, and XLA drops it).
    variables["params"] = lora.merged(params)
    outputs, mutated = model.apply(
      variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": rng}
    )
  return outputs, mutated.get("batch_stats", batch_stats)


def forward_domains(
  model, params, batch_stats, batch, domains, *, bn: str, dtype, rng, mean_std=DEFAULT_MEAN_STD
):
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
    passes = [
      (dom, tuple(keys), jax.random.fold_in(rng, i))
      for i, (dom, keys) in enumerate(by_domain.items())
    ]
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
      outputs[d] = {k: v[offsets[i] : offsets[i + 1]] for k, v in out.items()}
  for d in domains:
    outputs[d]["labels"] = batch[d]["label"]
  return outputs, batch_stats


def micro_batches(batch: PyTree, n: int) -> PyTree:
  """Leaves [B, ...] -> [n, B/n, ...]. Micro-batch i holds rows i, i+n, i+2n, ..., so every
  device's shard of the global batch gives B/(n·devices) rows to each micro-batch and no
  row moves between devices (config.validate: B divides by n × devices)."""
  return jax.tree.map(
    lambda x: jnp.swapaxes(x.reshape(x.shape[0] // n, n, *x.shape[1:]), 0, 1), batch
  )


def accumulate_gradients(
  grad_fn: Callable, params: PyTree, batch_stats: PyTree, batch: dict, rng: jax.Array, n: int
):
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
    body,
    (batch_stats, zeros),
    (micro_batches(batch, n), jnp.arange(n)),
    unroll=n if jax.default_backend() == "cpu" else 1,
  )
  mean = functools.partial(jnp.mean, axis=0)
  return (
    (mean(loss), (batch_stats, jax.tree.map(mean, metrics))),
    jax.tree.map(lambda g: g / n, grad_sum),
  )


@dataclasses.dataclass(frozen=True)
class StepContext:
  """What a step needs besides (state, batch): static, bound before jax.jit.

  model: the Linen Classifier; method: the adaptation method (methods/base.py); tx: the
  optimizer (optim.build_optimizer); bn: config.method.bn; dtype: the compute dtype;
  total_steps: config.train.steps (training progress = step / total_steps); mean_std:
  input normalisation; grad_accum_steps: micro-batches per update (steps that do not
  accumulate are refused N > 1 by validation, so they may ignore it)."""

  model: Any
  method: Any
  tx: optax.GradientTransformation
  bn: str
  dtype: Any
  total_steps: int
  mean_std: Any = DEFAULT_MEAN_STD
  grad_accum_steps: int = 1


def train_step(
  state: TrainState, batch: dict, extra: PyTree = None, *, ctx: StepContext
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step of classification loss + the method's transfer loss (+ its
  model-level terms: a regulariser, MME; `extra` is method.refresh's result). With
  ctx.grad_accum_steps N > 1, one update from the mean gradient of N micro-batches, every
  loss computed per micro-batch (accumulate_gradients)."""
  model, method, tx = ctx.model, ctx.method, ctx.tx
  rng = jax.random.fold_in(state.rng, state.step)
  progress = state.step.astype(jnp.float32) / ctx.total_steps

  def loss_fn(params, batch_stats, batch, rng):
    model_rng, method_rng = jax.random.split(rng)
    outputs, batch_stats = forward_domains(
      model,
      params["model"],
      batch_stats,
      batch,
      method.domains,
      bn=ctx.bn,
      dtype=ctx.dtype,
      rng=model_rng,
      mean_std=ctx.mean_std,
    )
    sup = method.supervised_outputs(outputs)
    cls_loss = losses.cross_entropy(sup["logits"], sup["labels"], method.config.label_smoothing)
    transfer_loss, more = method.loss(params["method"], outputs, progress, method_rng)
    model_loss, model_metrics = method.model_loss(
      model, params["model"], outputs, batch, extra, progress, jax.random.fold_in(method_rng, 1)
    )
    transfer_loss = jnp.asarray(transfer_loss + model_loss, jnp.float32)
    metrics = {
      "cls_loss": cls_loss,
      "transfer_loss": transfer_loss,
      "train_acc": losses.accuracy(sup["logits"], sup["labels"]),
      **more,
      **model_metrics,
    }
    return cls_loss + transfer_loss, (batch_stats, metrics)

  def grad_fn(batch_stats, batch, rng):
    # Only w.r.t. the leaves tx can move: no backward pass through a frozen backbone prefix.
    return optim.value_and_grad(lambda p: loss_fn(p, batch_stats, batch, rng), state.params, tx)

  (loss, (batch_stats, metrics)), grads = accumulate_gradients(
    grad_fn, state.params, state.batch_stats, batch, rng, ctx.grad_accum_steps
  )
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}
  new_state = state.replace(
    step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  )
  return new_state, metrics


def eval_step(
  params: PyTree, batch_stats: PyTree, batch: dict, *, model, dtype, mean_std=DEFAULT_MEAN_STD
) -> dict[str, jax.Array]:
  """Sums over the real (mask=1) rows of a padded batch."""
  out, _ = apply_model(
    model, params["model"], batch_stats, normalize(batch["image"], dtype, mean_std), train=False
  )
  mask = batch["mask"].astype(jnp.float32)
  logits = out["logits"].astype(jnp.float32)
  correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  probs = jax.nn.softmax(logits)
  entropy = -jnp.sum(probs * jax.nn.log_softmax(logits), -1)
  return {
    "correct": (correct * mask).sum(),
    "nll": (nll * mask).sum(),
    "count": mask.sum(),
    "entropy": (entropy * mask).sum(),
    "probs": (probs * mask[:, None]).sum(0),
  }
