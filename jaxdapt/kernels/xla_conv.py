"""XLA's convolution, routed around one XLA:CPU pathology: inputs smaller than the kernel.

On jaxlib 0.10's CPU backend a 3x3 convolution (padding 1) over a 2x2 map took 2.25 s
for 256×2×2×512 -> 512 channels, 2 GFLOP/s, where the same layer over 3x3 or 4x4 maps
ran at ~180 GFLOP/s. ResNet layer4 hits it at 64 px inputs (its maps are 2x2): the
ResNet-18 step took 4.0 s there against PyTorch's 0.34 s. For such calls (on CPU,
spatial input smaller than the kernel) `conv_general_dilated` forms the k·k shifted,
strided views of the padded input and contracts them with the kernel in one dot
(im2col: 34 ms for that layer); every other call is `lax.conv_general_dilated` itself.
Same values up to float summation order; gradients by autodiff of slices and a dot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def plain_nhwc(
  lhs: Any,
  rhs: Any,
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
) -> bool:
  """A 2-D NHWC ⊛ HWIO call with no dilation and one group (what im2col and the
  direct kernels of cpu_conv compute)."""
  if lhs.ndim != 4 or rhs.ndim != 4:
    return False
  try:
    dims = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  except (TypeError, ValueError):
    return False
  return (
    dims == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    and tuple(lhs_dilation or (1, 1)) == (1, 1)
    and tuple(rhs_dilation or (1, 1)) == (1, 1)
    and feature_group_count == 1
    and batch_group_count == 1
  )


def needs_patches(
  lhs: Any,
  rhs: Any,
  window_strides: Sequence[int],
  padding: Any,
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
) -> bool:
  """Whether this call is the slow case: a `plain_nhwc` call with explicit padding and an
  input map smaller than the kernel in height or width."""
  del window_strides
  if (
    isinstance(padding, str)
    or len(padding) != 2
    or not plain_nhwc(
      lhs,
      rhs,
      lhs_dilation,
      rhs_dilation,
      dimension_numbers,
      feature_group_count,
      batch_group_count,
    )
  ):
    return False
  return lhs.shape[1] < rhs.shape[0] or lhs.shape[2] < rhs.shape[1]


def patches_conv(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: Sequence[tuple[int, int]],
  precision: Any = None,
  preferred_element_type: Any = None,
) -> jax.Array:
  """NHWC ⊛ HWIO with explicit padding, as one dot over the k·k shifted views."""
  kh, kw, c, o = rhs.shape
  (sh, sw), ((p0, p1), (q0, q1)) = window_strides, padding
  x = jnp.pad(lhs, ((0, 0), (p0, p1), (q0, q1), (0, 0)))
  oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  views = [
    x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]
    for i in range(kh)
    for j in range(kw)
  ]
  cols = jnp.concatenate(views, axis=-1)  # [N, oh, ow, kh·kw·C], (i, j, c) order as rhs
  return jnp.dot(
    cols,
    rhs.reshape(kh * kw * c, o),
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


def conv_general_dilated(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: Any,
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
  precision: Any = None,
  preferred_element_type: Any = None,
) -> jax.Array:
  """`lax.conv_general_dilated`, with `needs_patches` calls on CPU as `patches_conv`
  (flax nn.Conv's `conv_general_dilated` hook)."""
  if jax.default_backend() == "cpu" and needs_patches(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    batch_group_count,
  ):
    return patches_conv(
      lhs, rhs, window_strides, [tuple(p) for p in padding], precision, preferred_element_type
    )
  return lax.conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    batch_group_count,
    precision,
    preferred_element_type,
  )
