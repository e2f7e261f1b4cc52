"""ResNet-18/34/50/101/152, Wide ResNet-50-2 and ResNeXt-50 32x4d in torchvision's
layout (v1.5: stride on the 3x3 conv).

All padding is explicit (7x7/2 pad 3, 3x3 pad 1, 1x1 pad 0, stem max-pool
3x3/2 pad 1 with -inf fill) so torchvision weights give the same outputs;
224 px inputs give maps 112 -> 56 -> 56 -> 28 -> 14 -> 7. The backbone
returns globally average-pooled features (512 or 2048; 8 or 32 × the base
width `width` when it is not torchvision's 64); torchvision's `fc` is not part of it.

Weight conversion (torch state_dict key -> Flax path under `backbone/`):
  conv1.weight                      -> params/conv1/kernel
  bn1.{weight,bias}                 -> params/bn1/{scale,bias}
  bn1.{running_mean,running_var}    -> batch_stats/bn1/{mean,var}
  layer{i}.{j}.conv{k}.weight       -> params/layer{i}_{j}/conv{k}/kernel
  layer{i}.{j}.bn{k}.*              -> .../layer{i}_{j}/bn{k}/...  (as bn1)
  layer{i}.{j}.downsample.0.weight  -> params/layer{i}_{j}/downsample_conv/kernel
  layer{i}.{j}.downsample.1.*       -> .../layer{i}_{j}/downsample_bn/...
  (num_batches_tracked and fc.* are dropped)
Conv kernels transpose OIHW -> HWIO, i.e. w.permute(2, 3, 1, 0). ResNeXt's
grouped 3x3 conv uses feature_group_count; torch's [O, I/groups, kh, kw]
transposes to Flax's [kh, kw, I/groups, O] with the same group order.
Wide/ResNeXt bottlenecks are width = planes * width_per_group / 64 * groups
wide, as torchvision computes it. See jaxdapt/weights for the converters.
BN matches torch's momentum 0.1 / eps 1e-5; Flax updates running_var with the
biased batch variance where torch uses the unbiased one (training only).
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxdapt.errors import ConfigError
from jaxdapt.models.layers import (
  batch_norm,
  conv,
  conv_hook,
  global_avg_pool,
  maybe_remat,
  resolve_norm,
)
from jaxdapt.models.zoo import MODELS
from jaxdapt.peft.adapter import maybe_adapt


class BasicBlock(nn.Module):
  """3x3 -> 3x3 residual block (ResNet-18/34)."""

  planes: int
  stride: int = 1
  downsample: bool = False
  zero_init_last_bn: bool = False
  dtype: Any = jnp.float32
  adapter_dim: int = 0
  expansion: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    y = conv(self.planes, 3, self.stride, 1, use_bias=False, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(batch_norm(train, dtype=self.dtype, name="bn1")(y))
    y = conv(self.planes, 3, 1, 1, use_bias=False, dtype=self.dtype, name="conv2")(y)
    y = batch_norm(train, dtype=self.dtype, zero_init=self.zero_init_last_bn, name="bn2")(y)
    return _output(self, nn.relu(y + _shortcut(self, x, train)))


class BottleneckBlock(nn.Module):
  """1x1 -> 3x3 (strided, maybe grouped) -> 1x1 x4 residual block (ResNet-50+)."""

  planes: int
  stride: int = 1
  downsample: bool = False
  zero_init_last_bn: bool = False
  dtype: Any = jnp.float32
  groups: int = 1
  base_width: int = 64
  adapter_dim: int = 0
  expansion: ClassVar[int] = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    width = int(self.planes * (self.base_width / 64.0)) * self.groups
    y = conv(width, 1, 1, 0, use_bias=False, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(batch_norm(train, dtype=self.dtype, name="bn1")(y))
    # Explicit torch padding and the kernels, like layers.conv, plus the group count.
    y = nn.Conv(
      width,
      (3, 3),
      strides=(self.stride, self.stride),
      padding=((1, 1), (1, 1)),
      feature_group_count=self.groups,
      use_bias=False,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      conv_general_dilated=conv_hook(),
      name="conv2",
    )(y)
    y = nn.relu(batch_norm(train, dtype=self.dtype, name="bn2")(y))
    y = conv(self.planes * 4, 1, 1, 0, use_bias=False, dtype=self.dtype, name="conv3")(y)
    y = batch_norm(train, dtype=self.dtype, zero_init=self.zero_init_last_bn, name="bn3")(y)
    return _output(self, nn.relu(y + _shortcut(self, x, train)))


def _output(block: BasicBlock | BottleneckBlock, y: jnp.ndarray) -> jnp.ndarray:
  """The block's output, through a bottleneck adapter (peft.method='adapter', Houlsby et al.)
  when adapter_dim > 0: a 1x1 conv pair with a residual, applied after the block's ReLU so
  the residual stream every later block reads is the adapted one. ReLU inside, as the
  network's own nonlinearity."""
  return maybe_adapt(y, block.adapter_dim, "relu", block.dtype)


def _shortcut(block: BasicBlock | BottleneckBlock, x: jnp.ndarray, train: bool) -> jnp.ndarray:
  """Identity, or strided 1x1 conv + BN when the shape changes (torchvision's downsample)."""
  if not block.downsample:
    return x
  x = conv(
    block.planes * block.expansion,
    1,
    block.stride,
    0,
    use_bias=False,
    dtype=block.dtype,
    name="downsample_conv",
  )(x)
  return batch_norm(train, dtype=block.dtype, name="downsample_bn")(x)


class ResNet(nn.Module):
  """Stem + layer1..layer4; blocks are named `layer{i}_{j}` (torch `layer{i}.{j}`).

  small_input: 3x3/1 stem conv and no max-pool, for 32 px images (the
  usual CIFAR variant); its conv1 does not take torchvision weights.
  width: channels of the stem and layer1; layer2..4 have 2x, 4x, 8x (64: torchvision;
  smaller widths keep every parameter name and only thin the tensors, for CPU budgets).
  groups / width_per_group: ResNeXt and Wide ResNet bottlenecks.
  remat: each block under nn.remat (activations recomputed in the backward pass).
  adapter_dim: > 0 puts a bottleneck adapter of that width after every block
  (`layer{i}_{j}/adapter/...`, jaxdapt/peft/adapter.py); 0 (default) adds nothing.
  """

  block: type
  layers: tuple[int, ...]
  small_input: bool = False
  zero_init_residual: bool = False
  dtype: Any = jnp.float32
  groups: int = 1
  width_per_group: int = 64
  remat: bool = False
  width: int = 64
  adapter_dim: int = 0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if self.small_input:
      x = conv(self.width, 3, 1, 1, use_bias=False, dtype=self.dtype, name="conv1")(x)
    else:
      x = conv(self.width, 7, 2, 3, use_bias=False, dtype=self.dtype, name="conv1")(x)
    x = nn.relu(batch_norm(train, dtype=self.dtype, name="bn1")(x))
    if not self.small_input:
      # Overlapping window: reshape-pooling does not apply; -inf padding as torch.
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    in_planes = self.width
    extra = (
      {}
      if (self.groups, self.width_per_group) == (1, 64)
      else {"groups": self.groups, "base_width": self.width_per_group}
    )
    block = maybe_remat(self.block, self.remat, static_argnums=(2,))  # (self, x, train)
    widths = (self.width, 2 * self.width, 4 * self.width, 8 * self.width)
    for i, (planes, blocks) in enumerate(zip(widths, self.layers), start=1):
      for j in range(blocks):
        stride = 2 if i > 1 and j == 0 else 1
        downsample = j == 0 and (stride != 1 or in_planes != planes * self.block.expansion)
        x = block(
          planes,
          stride,
          downsample,
          self.zero_init_residual,
          dtype=self.dtype,
          adapter_dim=self.adapter_dim,
          name=f"layer{i}_{j}",
          **extra,
        )(x, train)
        in_planes = planes * self.block.expansion
    return global_avg_pool(x)


def _resnet(
  name: str,
  block: type,
  layers: tuple[int, ...],
  norm: str,
  dtype: Any,
  small_input: bool,
  zero_init_residual: bool,
  remat: bool,
  width: int = 64,
  groups: int = 1,
  width_per_group: int = 64,
  adapter_dim: int = 0,
) -> ResNet:
  resolve_norm(name, norm, ("batch",), "batch")
  if isinstance(width, bool) or not isinstance(width, int) or width < 1:
    raise ConfigError(
      f"model.width: {name}'s base width must be a positive integer "
      f"(64: torchvision), got {width!r}"
    )
  _check_adapter_dim(adapter_dim)
  return ResNet(
    block,
    layers,
    small_input=small_input,
    zero_init_residual=zero_init_residual,
    dtype=dtype,
    groups=groups,
    width_per_group=width_per_group,
    remat=remat,
    width=width,
    adapter_dim=adapter_dim,
  )


def _check_adapter_dim(adapter_dim: int) -> None:
  if isinstance(adapter_dim, bool) or not isinstance(adapter_dim, int) or adapter_dim < 0:
    raise ConfigError(
      f"peft.adapter_dim: must be an integer >= 0 (0: no adapters), got {adapter_dim!r}"
    )


# name → (block, blocks per stage, grouped-conv options); torchvision's definitions.
RESNETS: dict[str, tuple[type, tuple[int, ...], dict[str, int]]] = {
  "resnet18": (BasicBlock, (2, 2, 2, 2), {}),
  "resnet34": (BasicBlock, (3, 4, 6, 3), {}),
  "resnet50": (BottleneckBlock, (3, 4, 6, 3), {}),
  "resnet101": (BottleneckBlock, (3, 4, 23, 3), {}),
  "resnet152": (BottleneckBlock, (3, 8, 36, 3), {}),
  "wide_resnet50_2": (BottleneckBlock, (3, 4, 6, 3), {"width_per_group": 128}),
  "resnext50_32x4d": (BottleneckBlock, (3, 4, 6, 3), {"groups": 32, "width_per_group": 4}),
}


def _register(name: str, block: type, layers: tuple[int, ...], options: dict[str, int]) -> None:
  def builder(
    *,
    norm: str = "default",
    dtype: Any = jnp.float32,
    small_input: bool = False,
    zero_init_residual: bool = False,
    remat: bool = False,
    width: int = 64,
    adapter_dim: int = 0,
  ) -> nn.Module:
    return _resnet(
      name,
      block,
      layers,
      norm,
      dtype,
      small_input,
      zero_init_residual,
      remat,
      width,
      adapter_dim=adapter_dim,
      **options,
    )

  builder.__name__ = builder.__qualname__ = name
  MODELS.register(name)(builder)


for _name, _spec in RESNETS.items():
  _register(_name, *_spec)
