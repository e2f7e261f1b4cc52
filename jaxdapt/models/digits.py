"""Small CNNs for 28-32 px digit images (MNIST, SVHN, USPS, MNIST-M).

Pooling comes before ReLU: max-pool and ReLU commute, and ReLU on the pooled
map is 4x cheaper. Pools are the reshape-based `max_pool` (fast backward).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdapt.errors import ConfigError
from jaxdapt.models.layers import batch_norm, conv, max_pool, maybe_remat, resolve_norm
from jaxdapt.models.zoo import MODELS


class DANNDigits(nn.Module):
  """Ganin et al. 2016 (JMLR) MNIST feature extractor.

  conv5x5-32 -> (BN) -> ReLU -> pool2 -> conv5x5-48 -> (BN) -> ReLU -> pool2
  -> flatten (NHWC order); unpadded convs as in the paper, so 28 px inputs
  give 4*4*48 = 768 features and 32 px give 5*5*48 = 1200. `width` scales the
  channel counts. remat: each conv block under nn.remat (same parameter paths).
  """

  use_bn: bool = False
  width: int = 1
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    block = maybe_remat(_dann_block, self.remat, static_argnums=(2, 3, 4))
    for i, ch in enumerate((32, 48), start=1):
      x = block(self, x, train, i, ch * self.width)
    return x.reshape(x.shape[0], -1)


def _dann_block(net: DANNDigits, x: jnp.ndarray, train: bool, i: int, ch: int) -> jnp.ndarray:
  """conv5x5 `conv{i}` -> (BN `bn{i}`) -> pool2 -> ReLU, built in `net`'s scope."""
  x = conv(ch, 5, dtype=net.dtype, name=f"conv{i}")(x)
  if net.use_bn:
    x = batch_norm(train, dtype=net.dtype, name=f"bn{i}")(x)
  return nn.relu(max_pool(x, 2))


class LeNet(nn.Module):
  """LeNet-5 style extractor as in Transfer-Learning-Library's `lenet`.

  conv5x5-20 -> pool2 -> ReLU -> conv5x5-50 -> Dropout2d -> pool2 -> ReLU ->
  flatten; 28 px inputs give 4*4*50 = 800 features. TLL uses dropout2d=0.5;
  it defaults to 0 here (needs a 'dropout' rng in training when set).
  """

  use_bn: bool = False
  dropout2d: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = conv(20, 5, dtype=self.dtype, name="conv1")(x)
    if self.use_bn:
      x = batch_norm(train, dtype=self.dtype, name="bn1")(x)
    x = nn.relu(max_pool(x, 2))
    x = conv(50, 5, dtype=self.dtype, name="conv2")(x)
    if self.use_bn:
      x = batch_norm(train, dtype=self.dtype, name="bn2")(x)
    if self.dropout2d > 0:
      # Drops whole channels, like torch.nn.Dropout2d.
      x = nn.Dropout(self.dropout2d, broadcast_dims=(1, 2), deterministic=not train)(x)
    x = nn.relu(max_pool(x, 2))
    return x.reshape(x.shape[0], -1)


@MODELS.register("dann_digits")
def dann_digits(
  *, norm: str = "default", dtype: Any = jnp.float32, width: int = 1, remat: bool = False
) -> nn.Module:
  if not isinstance(width, int) or width < 1:
    raise ConfigError(f"model.width: must be a positive int, got {width!r}")
  norm = resolve_norm("dann_digits", norm, ("none", "batch"), "none")
  return DANNDigits(use_bn=norm == "batch", width=width, dtype=dtype, remat=remat)


@MODELS.register("lenet")
def lenet(*, norm: str = "default", dtype: Any = jnp.float32, dropout2d: float = 0.0) -> nn.Module:
  if not 0.0 <= dropout2d < 1.0:
    raise ConfigError(f"model.dropout2d: must be in [0, 1), got {dropout2d!r}")
  norm = resolve_norm("lenet", norm, ("none", "batch"), "none")
  return LeNet(use_bn=norm == "batch", dropout2d=dropout2d, dtype=dtype)
