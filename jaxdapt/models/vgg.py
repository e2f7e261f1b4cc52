"""VGG-11/13/16/19 (configs A, B, D, E), with or without BatchNorm, as in torchvision.

Submodules carry torchvision's Sequential indices, so conversion is by name:
  features.{n}.weight / .bias          -> params/features_{n}/kernel / bias
  features.{n}.{weight,bias}  (BN)     -> params/features_{n}/{scale,bias}
  features.{n}.running_{mean,var}      -> batch_stats/features_{n}/{mean,var}
  classifier.0 / classifier.3 (fc6/7)  -> params/classifier_0 / classifier_3
    (Linear weight [out,in] -> kernel [in,out], i.e. w.T)
  classifier.6 (1000-way fc) is not in the backbone: the Classifier head replaces it.
Conv kernels transpose OIHW -> HWIO (w.permute(2, 3, 1, 0)). Before fc6 the
7x7x512 map is flattened in channel-first (C,H,W) order, so classifier.0's
weight needs only the transpose.

The 7x7 adaptive average pool follows torch exactly: for maps smaller than
7x7 (inputs under 224 px, e.g. a 1x1 map from 32 px) the bins overlap and
cells are repeated, so fc6 still sees 25088 inputs and pretrained fc6
weights still apply. For 32 px digits prefer small_input=True: no 7x7 pool
and no fc6/fc7, the conv features are globally average-pooled (512-d).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdapt.errors import ConfigError
from jaxdapt.models.layers import (
  adaptive_avg_pool,
  batch_norm,
  conv,
  dense,
  global_avg_pool,
  max_pool,
  maybe_remat,
  resolve_norm,
)
from jaxdapt.models.zoo import MODELS

# "M" is a 2x2/2 max-pool, ints are 3x3 conv widths (torchvision cfgs "A".."E").
CONFIGS: dict[str, tuple[int | str, ...]] = {
  "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
  "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
  "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
  "E": (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
  ),
}


def stages(config: tuple[int | str, ...]) -> list[tuple[tuple[int, ...], bool]]:
  """(conv widths, ends with a max-pool) per stage: the convs up to each "M", and any convs
  after the last one (torchvision's configs end with "M"; shorter custom ones may not)."""
  out, widths = [], []
  for v in config:
    if v == "M":
      out.append((tuple(widths), True))
      widths = []
    else:
      widths.append(v)
  if widths:
    out.append((tuple(widths), False))
  return out


def _stage(
  vgg: VGG, x: jnp.ndarray, train: bool, widths: tuple[int, ...], idx: int, pool: bool = True
) -> jnp.ndarray:
  """3x3 conv (+ BN) + ReLU per width, then the 2x2 max-pool; `idx`: the position of its
  first layer in torchvision's `features` Sequential, which names the layers."""
  for v in widths:
    x = conv(v, 3, 1, 1, dtype=vgg.dtype, name=f"features_{idx}")(x)
    idx += 1
    if vgg.use_bn:
      x = batch_norm(train, dtype=vgg.dtype, name=f"features_{idx}")(x)
      idx += 1
    x = nn.relu(x)
    idx += 1
  return max_pool(x, 2) if pool else x


class VGG(nn.Module):
  """torchvision VGG minus its final Linear; outputs fc7 (4096) or GAP (512).

  remat: each conv stage (convs up to a max-pool) under nn.remat, activations recomputed
  in the backward pass; the layers keep their `features_{n}` names."""

  config: tuple[int | str, ...]
  use_bn: bool = False
  small_input: bool = False
  fc_dropout: float = 0.5
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    stage = maybe_remat(_stage, self.remat, static_argnums=(2, 3, 4, 5))
    idx = 0  # position in torchvision's `features` Sequential
    for widths, pool in stages(self.config):
      x = stage(self, x, train, widths, idx, pool)
      idx += len(widths) * (3 if self.use_bn else 2) + int(pool)
    if self.small_input:
      return global_avg_pool(x)
    x = adaptive_avg_pool(x, (7, 7))
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    for idx in (0, 3):
      x = nn.relu(dense(4096, dtype=self.dtype, name=f"classifier_{idx}")(x))
      if self.fc_dropout > 0:
        x = nn.Dropout(self.fc_dropout, deterministic=not train)(x)
    return x


def _vgg(
  name: str,
  config: str,
  bn: bool,
  norm: str,
  dtype: Any,
  small_input: bool,
  fc_dropout: float,
  remat: bool,
) -> VGG:
  # The name fixes the norm (vgg16 vs vgg16_bn) so it matches the weights it loads.
  resolve_norm(name, norm, ("batch",) if bn else ("none",), "batch" if bn else "none")
  if not 0.0 <= fc_dropout < 1.0:
    raise ConfigError(f"model.fc_dropout: must be in [0, 1), got {fc_dropout!r}")
  return VGG(
    CONFIGS[config],
    use_bn=bn,
    small_input=small_input,
    fc_dropout=fc_dropout,
    dtype=dtype,
    remat=remat,
  )


def _register(name: str, config: str, bn: bool) -> None:
  def build(
    *,
    norm: str = "default",
    dtype: Any = jnp.float32,
    small_input: bool = False,
    fc_dropout: float = 0.5,
    remat: bool = False,
  ) -> nn.Module:
    return _vgg(name, config, bn, norm, dtype, small_input, fc_dropout, remat)

  build.__name__ = name
  build.__doc__ = f"torchvision {name} backbone (config {config}{', BatchNorm' if bn else ''})."
  MODELS.register(name)(build)


for _name, _config, _bn in (
  ("vgg11", "A", False),
  ("vgg16", "D", False),
  ("vgg11_bn", "A", True),
  ("vgg16_bn", "D", True),
  ("vgg13", "B", False),
  ("vgg19", "E", False),
  ("vgg13_bn", "B", True),
  ("vgg19_bn", "E", True),
):
  _register(_name, _config, _bn)
