"""Regularisers against over-fitting and forgetting when fine-tuning from model.init_from.

Add-on terms (config.regularizer.*, each off at weight 0) beside the
classification loss and the loss of any method that uses the shared update
step, as BSP is for DANN; "the new data" below is the supervised batches of
the step (source, and/or the labeled target of methods/fewshot.py):
  L2-SP  (Li, Grandvalet & Davoine, ICML 2018)  α/2 ‖w − w⁰‖² over the parameters
         model.init_from supplies + β/2 ‖w‖² over those it leaves new (model.dont_load:
         head, bottleneck), every leaf (kernels, biases, norm scales). Without init_from
         every parameter is new and β alone is the paper's plain-L2 baseline.
         l2sp_alpha α, l2sp_beta β (the paper cross-validates both; 0.1 / 0.01 in
         experiments/transfer/regularized.py, not tuned here).
  DELTA  (Li et al., ICLR 2019)  delta_weight · mean_batch Σ_l Σ_c W_lc ‖FM_lc(w) −
         FM_lc(w⁰)‖² over the feature maps of the modules in delta_layers (channels: the last axis;
         'backbone' is the backbone's flattened output, one "channel" per unit), W_l =
         softmax_c of the loss increase when channel c of layer l is zeroed in the
         starting model, on delta_attention_points rows of the supervised training data,
         computed once per `refresh`. Simplification: the paper measures that increase
         with a head trained on the target first; here the starting model's head is used
         as it is, so start from a probed model (experiments/transfer/lp_ft.py, stage 1,
         with model.dont_load = ()) to get the paper's weights; with a random head the
         weights are close to uniform. The current model's maps come from a second
         forward pass of the new data (training mode), so DELTA costs that pass.
  BSS    (Chen et al., NeurIPS 2019)  bss_weight η · Σ_{i≤k} σ_{−i}² of the feature matrix
         of the new data (its k smallest singular values; paper η = 0.001, k = bss_k = 1).
  LwF    (Li & Hoiem, ECCV 2016)  lwf_weight λ_o · mean_batch KL(softmax(z⁰/T) ‖ softmax(z/T))
         between the starting model's and the current model's logits on the new data
         (paper λ_o = 1, T = lwf_temperature = 2); the KL has the gradient of the paper's
         cross-entropy to the recorded soft targets and is 0 where the two agree. Simplification:
         the old task's head is the model's head (same classes, as in DA), so the starting
         model needs its head: model.dont_load = () (checked); the paper's separate
         new-task head for a new label set is not built.
  Dropout on the head is model.dropout: before the head's output layer and after each
  hidden layer (jaxdapt/models/classifier.py), in training steps only.

The starting model w⁰ (its parameters, BatchNorm statistics and DELTA's weights)
is the update's non-trainable third argument: `refresh` rebuilds it as the step-0
model (the seed's init with model.init_from merged in), at the start and on
resume alike, so it is never a parameter and never in the optimizer state.
Methods with their own update step (MCD, ADDA, SHOT, TENT) refuse regularisers, and LwF
and DELTA refuse method.bn='dsbn' (the starting model has no per-domain branches).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdapt import features, losses, step
from jaxdapt.errors import ConfigError
from jaxdapt.init_from import load_init_from
from jaxdapt.methods.base import METHODS, Method, Outputs, concat
from jaxdapt.peft import adapter, lora
from jaxdapt.tree import named_leaves

PyTree = Any
WEIGHTS = ("l2sp_alpha", "l2sp_beta", "delta_weight", "bss_weight", "lwf_weight")
# Channels zeroed per vmapped forward when DELTA's attention is computed.
ATTENTION_CHUNK = 16


# --- the terms: pure functions, each tested against NumPy (tests/test_regularizers.py) ----


def l2_sp(
  params: PyTree, start: PyTree | None, loaded: Callable[[str], bool], alpha: float, beta: float
) -> jax.Array:
  """α/2 Σ_{loaded w} ‖w − w⁰‖² + β/2 Σ_{new w} ‖w‖² over '/'-joined leaf names;
  `start` has the structure of `params` (only read at loaded leaves, when α > 0)."""
  ref = dict(named_leaves(start)) if start is not None and alpha else {}
  pull, new = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)
  for name, w in named_leaves(params):
    w = w.astype(jnp.float32)
    if not loaded(name):
      new += jnp.sum(w**2)
    elif alpha:
      pull += jnp.sum((w - ref[name].astype(jnp.float32)) ** 2)
  return 0.5 * alpha * pull + 0.5 * beta * new


def smallest_singular_values(features: jax.Array, k: int) -> jax.Array:
  """BSS: Σ_{i≤k} σ_{−i}², the k smallest singular values of a feature matrix [B, D]."""
  sigma = jnp.linalg.svd(features.astype(jnp.float32), compute_uv=False)  # descending
  return jnp.sum(sigma[-k:] ** 2)


def distillation_kl(logits: jax.Array, teacher_logits: jax.Array, temperature: float) -> jax.Array:
  """LwF: mean over the batch of KL(softmax(teacher/T) ‖ softmax(logits/T))."""
  t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, -1)
  s = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, -1)
  return jnp.mean(jnp.sum(jnp.exp(t) * (t - s), -1))


def delta_distance(
  maps: dict[str, jax.Array], start_maps: dict[str, jax.Array], weights: dict[str, jax.Array]
) -> jax.Array:
  """DELTA: mean_b Σ_l Σ_c W_lc Σ_positions (FM_lc − FM⁰_lc)², channels on the last axis."""
  total = jnp.zeros((), jnp.float32)
  for layer, fm in maps.items():
    sq = (fm.astype(jnp.float32) - start_maps[layer].astype(jnp.float32)) ** 2
    per_channel = sq.reshape(sq.shape[0], -1, sq.shape[-1]).sum(1)  # [B, C]
    total += jnp.mean(per_channel @ weights[layer].astype(jnp.float32))
  return total


def attention_weights(loss_increase: np.ndarray) -> np.ndarray:
  """DELTA's channel attention: softmax over a layer's channels of the loss increases."""
  z = np.asarray(loss_increase, np.float64)
  e = np.exp(z - z.max())
  return (e / e.sum()).astype(np.float32)


# --- the model's feature maps and DELTA's attention ----------------------------------------


def _variables(params: PyTree, batch_stats: PyTree) -> dict[str, PyTree]:
  return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}


def _path(module: nn.Module) -> str:
  return "/".join(module.path)


def feature_maps(
  model,
  variables: dict[str, PyTree],
  images: jax.Array,
  layers: Sequence[str],
  *,
  train: bool,
  rng: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """Outputs of the model's modules named in `layers` ('backbone/conv2', 'backbone')."""
  layers = tuple(layers)
  capture = lambda module, method: method == "__call__" and _path(module) in layers
  kwargs = {"rngs": {"dropout": rng}} if train else {}
  _, state = model.apply(
    lora.merged_variables(variables),
    images,
    train=train,
    method="extract",
    capture_intermediates=capture,
    mutable=["intermediates"] + (["batch_stats"] if train else []),
    **kwargs,
  )
  out = {}
  for layer in layers:
    node = state["intermediates"]
    for part in layer.split("/"):
      node = node.get(part, {})
    if "__call__" not in node:
      raise ConfigError(
        f"regularizer.delta_layers: the model has no module {layer!r} "
        f"(names such as 'backbone', 'backbone/conv2')"
      )
    out[layer] = node["__call__"][-1]  # a module calling its parent class's __call__: the outer
  return out


def channel_attention(
  model, variables: dict[str, PyTree], images: jax.Array, labels: jax.Array, layers: Sequence[str]
) -> dict[str, np.ndarray]:
  """{layer: W_l [C]}: softmax_c(CE with channel c of layer l zeroed − CE), evaluation mode."""

  def masked_loss(layer, mask, variables, images, labels):
    def zero_channels(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == "__call__" and _path(context.module) == layer:
        out = out * mask.astype(out.dtype)
      return out

    with nn.intercept_methods(zero_channels):
      logits = model.apply(lora.merged_variables(variables), images, train=False)["logits"]
    return losses.cross_entropy(logits, labels)

  logits = model.apply(lora.merged_variables(variables), images, train=False)["logits"]
  base = losses.cross_entropy(logits, labels)
  shapes = jax.eval_shape(lambda: feature_maps(model, variables, images, layers, train=False))
  out = {}
  for layer in layers:
    channels = shapes[layer].shape[-1]
    batched = jax.jit(
      jax.vmap(
        lambda m, v, x, y, layer=layer: masked_loss(layer, m, v, x, y),
        in_axes=(0, None, None, None),
      )
    )
    increases = []
    for first in range(0, channels, ATTENTION_CHUNK):
      idx = np.arange(first, min(first + ATTENTION_CHUNK, channels))
      masks = np.ones((ATTENTION_CHUNK, channels), np.float32)
      masks[np.arange(len(idx)), idx] = 0.0  # padding rows zero nothing
      increases.append(np.asarray(batched(masks, variables, images, labels))[: len(idx)])
    out[layer] = attention_weights(np.concatenate(increases) - float(base))
  return out


# --- the add-on --------------------------------------------------------------------------


# Leaves PEFT adds to a pretrained model (never in the weights L2-SP anchors to).
PEFT_NEW = (lora.ANY_LEAF, adapter.ADAPTER_LEAF, adapter.PROMPT_LEAF)


@dataclasses.dataclass(frozen=True)
class Regularizer:
  """The active terms of config.regularizer for one experiment (see the module doc)."""

  config: ml_collections.ConfigDict  # config.regularizer
  init_from: str
  dont_load: tuple[str, ...]
  supervised: tuple[str, ...]  # the domains whose batches are the new data
  dtype: Any
  mean_std: Any

  @property
  def needs_start(self) -> bool:
    c = self.config
    return bool(c.l2sp_alpha or c.delta_weight or c.lwf_weight)

  def loaded(self, name: str) -> bool:
    """Whether model.init_from supplies the model parameter `name` ('backbone/conv1/kernel').
    PEFT's added leaves (LoRA factors, adapters, prompts) count as new: L2-SP's β term, not
    a pull back to their random step-0 values."""
    if not self.init_from or any(re.fullmatch(p, name) for p in (*self.dont_load, *PEFT_NEW)):
      return False
    return True

  def refresh(self, exp, state) -> PyTree | None:
    """The step-0 model: {'params', 'batch_stats'[, 'channel_weights']} (None if unused)."""
    del state  # the same starting model at the start and on resume
    if not self.needs_start:
      return None
    step0 = load_init_from(exp, exp.init(jax.random.key(exp.config.seed)))
    start = {"params": step0.params["model"], "batch_stats": step0.batch_stats}
    if self.config.delta_weight:
      start["channel_weights"] = jax.tree.map(jnp.asarray, self._attention(exp, start))
    return start

  def _attention(self, exp, start: PyTree) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(exp.config.seed)
    rows = [
      features.subset(exp.sources[d], self.config.delta_attention_points, rng)
      for d in self.supervised
    ]
    examples = [r[i] for r in rows for i in range(len(r))]
    images = step.normalize(np.stack([e["image"] for e in examples]), self.dtype, self.mean_std)
    labels = jnp.asarray([e["label"] for e in examples], jnp.int32)
    return channel_attention(
      exp.model,
      _variables(start["params"], start["batch_stats"]),
      images,
      labels,
      tuple(self.config.delta_layers),
    )

  def loss(
    self, model, params: PyTree, outputs: Outputs, batch: dict, start: PyTree | None, rng: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The weighted sum of the active terms, and each (weighted) as a metric reg_*."""
    c = self.config
    terms = {}
    if c.l2sp_alpha or c.l2sp_beta:
      terms["reg_l2sp"] = l2_sp(
        params, start and start["params"], self.loaded, c.l2sp_alpha, c.l2sp_beta
      )
    if c.bss_weight:
      feats = concat(outputs, self.supervised, ("features",))["features"]
      terms["reg_bss"] = c.bss_weight * smallest_singular_values(feats, c.bss_k)
    if c.lwf_weight or c.delta_weight:
      start = jax.lax.stop_gradient(start)
      teacher = _variables(start["params"], start["batch_stats"])
      images = jnp.concatenate(
        [step.normalize(batch[d]["image"], self.dtype, self.mean_std) for d in self.supervised]
      )
    if c.lwf_weight:
      old = model.apply(lora.merged_variables(teacher), images, train=False)["logits"]
      new = concat(outputs, self.supervised, ("logits",))["logits"]
      terms["reg_lwf"] = c.lwf_weight * distillation_kl(new, old, c.lwf_temperature)
    if c.delta_weight:
      layers = tuple(c.delta_layers)
      ref = feature_maps(model, teacher, images, layers, train=False)
      # Training mode (batch statistics, dropout) like the step's own forward; the running
      # statistics it would update are dropped.
      cur = feature_maps(
        model, _variables(params, start["batch_stats"]), images, layers, train=True, rng=rng
      )
      terms["reg_delta"] = c.delta_weight * delta_distance(cur, ref, start["channel_weights"])
    return sum(terms.values(), jnp.zeros((), jnp.float32)), terms


def attach(method: Method, config: ml_collections.ConfigDict) -> Method:
  """`method` carrying the Regularizer of config.regularizer (unchanged when all are off)."""
  if not any(config.regularizer[w] for w in WEIGHTS):
    return method
  reg = Regularizer(
    config.regularizer,
    config.model.init_from,
    tuple(config.model.dont_load),
    method.supervised_domains(),
    step.compute_dtype(config),
    step.input_mean_std(config),
  )
  return dataclasses.replace(method, regularizer=reg)


def check_config(config: ml_collections.ConfigDict) -> None:
  """config.regularizer against the model and method (run by config.validate)."""
  r = config.regularizer
  for field in WEIGHTS:
    v = r[field]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
      raise ConfigError(f"regularizer.{field}: must be a number >= 0 (0: off), got {v!r}")
  for field in ("bss_k", "delta_attention_points"):
    if isinstance(r[field], bool) or not isinstance(r[field], int) or r[field] < 1:
      raise ConfigError(f"regularizer.{field}: must be a positive integer, got {r[field]!r}")
  t = r.lwf_temperature
  if isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0:
    raise ConfigError(f"regularizer.lwf_temperature: must be a number > 0, got {t!r}")
  if not r.delta_layers or not all(
    isinstance(l, str) and l.startswith("backbone") for l in r.delta_layers
  ):
    raise ConfigError(
      f"regularizer.delta_layers: must name modules of the pretrained "
      f"backbone ('backbone', 'backbone/conv2', ...), got {r.delta_layers!r}"
    )
  active = [w for w in WEIGHTS if r[w]]
  if not active:
    return
  if METHODS.get(config.method.name).has_own_step:
    raise ConfigError(
      f"regularizer.{active[0]}: method {config.method.name!r} has its own "
      f"update step, which adds no regulariser; set it to 0"
    )
  for field in ("l2sp_alpha", "delta_weight", "lwf_weight"):
    if r[field] and not config.model.init_from:
      raise ConfigError(
        f"regularizer.{field}: pulls towards the starting model, which "
        f"model.init_from names; set it (or the weight to 0)"
      )
  if (r.lwf_weight or r.delta_weight) and config.method.bn == "dsbn":
    field = "lwf_weight" if r.lwf_weight else "delta_weight"
    raise ConfigError(
      f"regularizer.{field}: LwF and DELTA forward the starting model, which "
      f"has no per-domain BatchNorm branch to pick under method.bn='dsbn'; use "
      f"joint or separate"
    )
  if r.lwf_weight and tuple(config.model.dont_load):
    raise ConfigError(
      f"regularizer.lwf_weight: LwF distils the starting model's head, so it "
      f"must be loaded: model.dont_load must be (), got "
      f"{tuple(config.model.dont_load)}"
    )
