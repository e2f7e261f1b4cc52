"""Classifier = backbone -> (bottleneck) -> MLP head, the shape every method sees.

Parameter paths are `backbone/...`, `bottleneck/...` (only with a
bottleneck) and `head/...`, so pretrained backbones load under `backbone/`
and a head is replaced by dropping `head/`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdapt.models.layers import batch_norm, batch_norm_override, conv_kernel, dense


class FeatureBottleneck(nn.Module):
  """Dense -> BatchNorm -> ReLU (Transfer-Learning-Library's bottleneck).

  A narrow, normalised feature layer on which adaptation losses act, so they
  need not reshape the (often pretrained) backbone output directly.
  """

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = dense(self.features, dtype=self.dtype, name="dense")(x)
    x = batch_norm(train, dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


class CosineClassifier(nn.Module):
  """logits = cos(f, w_c) / T: L2-normalised features and class weights, no bias, in
  float32 (MME's classifier, Saito et al., ICCV 2019: T = 0.05)."""

  num_classes: int
  temperature: float

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.num_classes), jnp.float32
    )
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-24))
    w = kernel * jax.lax.rsqrt(jnp.maximum(jnp.sum(kernel * kernel, 0, keepdims=True), 1e-24))
    return x @ w / self.temperature


class MLPHead(nn.Module):
  """Dense+ReLU per hidden width, then the output layer `out` (Dense to the classes, or a
  cosine classifier when cosine_temperature > 0). Dropout (`dropout` > 0, training only)
  acts on the input of every layer after the first, and on the features of a linear head.
  Hidden layers compute in `dtype`; the output layer always in float32 (mixed-precision
  policy, train.compute_dtype: logits carry no bfloat16 rounding into the losses)."""

  num_classes: int
  hidden: Sequence[int] = ()
  dropout: float = 0.0
  dtype: Any = jnp.float32
  cosine_temperature: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    for i, width in enumerate(self.hidden):
      x = nn.relu(dense(width, dtype=self.dtype, name=f"hidden_{i}")(x))
      if self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    if not self.hidden and self.dropout > 0:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    if self.cosine_temperature > 0:
      return CosineClassifier(self.num_classes, self.cosine_temperature, name="out")(x)
    return dense(self.num_classes, dtype=jnp.float32, name="out")(x)


class Classifier(nn.Module):
  """Backbone, optional bottleneck, head; returns float32 features and logits.

  `extract` and `classify` are the two halves of `__call__`, usable through
  `module.apply(variables, ..., method='classify')` by methods that perturb or
  re-classify features. Dropout (head or backbone) needs rngs={'dropout': key}
  when train=True.

  frozen_backbone_bn: the backbone's BatchNorm layers normalise with their running
  statistics in training too and never update them (config model.bn_mode); dropout
  still follows `train`, and the bottleneck's BatchNorm (a new layer) still trains.

  conv_kernel: 'xla' or 'direct', the backbone's convolution kernels (layers.conv_kernel;
  config model.conv_kernel, resolved for the run's devices by kernels/cpu_conv.resolve).
  """

  backbone: nn.Module
  num_classes: int
  bottleneck_dim: int | None = None
  head_hidden: tuple[int, ...] = ()
  dropout: float = 0.0
  dtype: Any = jnp.float32
  frozen_backbone_bn: bool = False
  cosine_temperature: float = 0.0  # > 0: a cosine-classifier output layer (MME)
  conv_kernel: str = "xla"
  # LoRA dropout (config peft.lora_dropout): read by step.apply_model, which applies the
  # LoRA factors; the module itself never sees them.
  lora_dropout: float = 0.0

  def setup(self) -> None:
    if self.bottleneck_dim is not None:
      self.bottleneck = FeatureBottleneck(self.bottleneck_dim, dtype=self.dtype)
    self.head = MLPHead(
      self.num_classes,
      tuple(self.head_hidden),
      self.dropout,
      dtype=self.dtype,
      cosine_temperature=self.cosine_temperature,
    )

  def extract(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """Images [B,H,W,C] -> features [B,D] in the computation dtype."""
    with (
      batch_norm_override("running" if self.frozen_backbone_bn else None),
      conv_kernel(self.conv_kernel),
    ):
      f = self.backbone(x, train=train)
    f = f.reshape(f.shape[0], -1)
    if self.bottleneck_dim is not None:
      f = self.bottleneck(f, train)
    return f

  def classify(self, features: jnp.ndarray, train: bool) -> jnp.ndarray:
    """Features [B,D] -> float32 logits [B,num_classes]."""
    return self.head(features, train)

  def __call__(self, x: jnp.ndarray, train: bool) -> dict[str, jnp.ndarray]:
    f = self.extract(x, train)
    return {"features": f.astype(jnp.float32), "logits": self.classify(f, train)}


def feature_dim(module: nn.Module, input_shape: Sequence[int]) -> int:
  """Width D of the features for inputs of `input_shape` (HWC or BHWC).

  `module` is a Classifier (its 'features') or a bare backbone (its flattened
  output). Uses jax.eval_shape, so nothing is compiled or allocated.
  """
  shape = tuple(input_shape)
  if len(shape) == 3:
    shape = (1,) + shape
  out = jax.eval_shape(
    lambda: module.init_with_output(jax.random.key(0), jnp.zeros(shape, jnp.float32), train=False)[
      0
    ]
  )
  if isinstance(out, dict):
    out = out["features"]
  return int(math.prod(out.shape[1:]))
