"""Digit backbones of the published protocols (experiments/protocols/digits_*.py).

  lenet_tllib  Transfer-Learning-Library's current `lenet` (MNIST <-> USPS, 28x28x1): the
               `lenet` convs with Dropout2d(0.5), then FC500 -> ReLU -> Dropout(0.5);
               500 features.
  dtn          TLlib's `dtn` (SVHN -> MNIST, 32x32x3): three conv5x5/2 (64, 128, 256),
               each BN -> Dropout2d (0.1, 0.3, 0.5) -> ReLU, then FC512 -> BN -> ReLU ->
               Dropout(0.5); 512 features.
  dann_svhn    the DANN paper's SVHN network (Ganin et al., JMLR 2016): conv5x5-64,
               max-pool 3x3/2, conv5x5-64, max-pool 3x3/2, conv5x5-128, all ReLU; the
               paper's label predictor (FC3072, FC2048) is the head (model.head_hidden).
               The paper gives no padding; convs pad 2 and pools pad 1 here, so 32 px
               inputs keep an 8x8 map (8192 features) instead of vanishing.
All are written from their published descriptions and trained from scratch; dropout
needs a 'dropout' rng in training, which the trainer passes.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdapt.models.digits import LeNet
from jaxdapt.models.layers import batch_norm, conv, dense, resolve_norm
from jaxdapt.models.zoo import MODELS


def _dropout2d(rate: float, train: bool) -> nn.Dropout:
  """Drops whole channels, like torch.nn.Dropout2d."""
  return nn.Dropout(rate, broadcast_dims=(1, 2), deterministic=not train)


class LeNetTLlib(nn.Module):
  use_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = LeNet(use_bn=self.use_bn, dropout2d=0.5, dtype=self.dtype, name="convs")(x, train)
    x = nn.relu(dense(500, dtype=self.dtype, name="fc")(x))
    return nn.Dropout(0.5, deterministic=not train)(x)


class DTN(nn.Module):
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    for i, (ch, rate) in enumerate(((64, 0.1), (128, 0.3), (256, 0.5)), start=1):
      x = conv(ch, 5, 2, 2, dtype=self.dtype, name=f"conv{i}")(x)
      x = batch_norm(train, dtype=self.dtype, name=f"bn{i}")(x)
      x = nn.relu(_dropout2d(rate, train)(x))
    x = dense(512, dtype=self.dtype, name="fc")(x.reshape(x.shape[0], -1))
    x = nn.relu(batch_norm(train, dtype=self.dtype, name="bn_fc")(x))
    return nn.Dropout(0.5, deterministic=not train)(x)


class DANNSvhn(nn.Module):
  use_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    for i, ch in enumerate((64, 64, 128), start=1):
      x = conv(ch, 5, 1, 2, dtype=self.dtype, name=f"conv{i}")(x)
      if self.use_bn:
        x = batch_norm(train, dtype=self.dtype, name=f"bn{i}")(x)
      x = nn.relu(x)
      if i < 3:
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    return x.reshape(x.shape[0], -1)


@MODELS.register("lenet_tllib")
def lenet_tllib(*, norm: str = "default", dtype: Any = jnp.float32) -> nn.Module:
  norm = resolve_norm("lenet_tllib", norm, ("none", "batch"), "none")
  return LeNetTLlib(use_bn=norm == "batch", dtype=dtype)


@MODELS.register("dtn")
def dtn(*, norm: str = "default", dtype: Any = jnp.float32) -> nn.Module:
  resolve_norm("dtn", norm, ("batch",), "batch")
  return DTN(dtype=dtype)


@MODELS.register("dann_svhn")
def dann_svhn(*, norm: str = "default", dtype: Any = jnp.float32) -> nn.Module:
  norm = resolve_norm("dann_svhn", norm, ("none", "batch"), "none")
  return DANNSvhn(use_bn=norm == "batch", dtype=dtype)
