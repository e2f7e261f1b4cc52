"""Layer helpers shared by the backbones.

Convolutions use explicit torch-style padding (never 'SAME') so weights
converted from torchvision give the same numbers; params are always float32
while `dtype` sets the computation dtype.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdapt.errors import ConfigError
from jaxdapt.kernels import cpu_conv, xla_conv

Dtype = Any

# torch BatchNorm(momentum=0.1) keeps 0.9 of the old running stats.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


_CONV_KERNEL = contextvars.ContextVar("conv_kernel", default="xla")


@contextlib.contextmanager
def conv_kernel(name: str) -> Iterator[None]:
  """Within: convs built by `conv` run through `name`'s kernel, 'xla' or 'direct' (the
  CPU kernels of jaxdapt/kernels/cpu_conv.py where they apply; config model.conv_kernel
  resolved by cpu_conv.resolve). Read while a model is traced, like batch_norm_override."""
  if name not in ("xla", "direct"):
    raise ValueError(f"conv_kernel: must be 'xla' or 'direct', got {name!r}")
  token = _CONV_KERNEL.set(name)
  try:
    yield
  finally:
    _CONV_KERNEL.reset(token)


def conv(
  features: int,
  kernel: int,
  stride: int = 1,
  padding: int = 0,
  *,
  use_bias: bool = True,
  dtype: Dtype = jnp.float32,
  name: str | None = None,
) -> nn.Conv:
  """A square conv with symmetric explicit padding, as torch.nn.Conv2d pads."""
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((padding, padding), (padding, padding)),
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=jnp.float32,
    conv_general_dilated=conv_hook(),
    name=name,
  )


def conv_hook():
  """nn.Conv's `conv_general_dilated` under the current `conv_kernel`: jaxdapt's direct
  CPU kernels where they apply, else XLA's (kernels/xla_conv.py)."""
  if _CONV_KERNEL.get() == "direct":
    return cpu_conv.conv_general_dilated
  return xla_conv.conv_general_dilated


@dataclasses.dataclass(frozen=True)
class _Override:
  stats: str | None = None  # None: as `train` says; 'running' | 'batch'
  mask: jax.Array | None = None  # [B] rows that count in batch statistics


_OVERRIDE = contextvars.ContextVar("batch_norm_override", default=_Override())  # noqa: B039
BN_STATS = ("running", "batch")


@contextlib.contextmanager
def batch_norm_override(stats: str | None = None, mask: jax.Array | None = None) -> Iterator[None]:
  """Within: BatchNorm layers built by `batch_norm` normalise with `stats` whatever
  `train` says ('running': the stored statistics, which then stay unchanged — frozen BN;
  'batch': the batch's statistics, updating the stored ones — AdaBN's pass), and batch
  statistics count only the rows where `mask` [B] is true (padding excluded).

  Read while a model is traced (inside `apply`), so it is fixed at compile time. The
  outermost setting of each field wins: AdaBN's recomputation ('batch') overrides a
  model whose backbone BN is frozen (`Classifier.frozen_backbone_bn`).
  """
  if stats not in (None,) + BN_STATS:
    raise ValueError(f"batch_norm_override: stats must be one of {BN_STATS}, got {stats!r}")
  outer = _OVERRIDE.get()
  token = _OVERRIDE.set(
    _Override(outer.stats or stats, outer.mask if outer.mask is not None else mask)
  )
  try:
    yield
  finally:
    _OVERRIDE.reset(token)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def normalize_by_batch(
  x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """BatchNorm over all axes but the last with the batch's own statistics:
  (y in float32, mean, var), the statistics as nn.BatchNorm computes them
  (float32, var = E[x²] - E[x]² clipped at 0).

  Its backward is the closed form dx = scale·rstd·(g - mean(g) - x̂·mean(g·x̂))
  (plus the terms from the mean and var outputs): two reductions and one
  elementwise pass, where autodiff through the statistics makes XLA:CPU run
  about twice the passes (BN fwd+bwd at 128×28×28×32: 5.6 vs 11.5 ms).
  """
  return _normalize_by_batch_fwd(x, scale, bias, epsilon)[0]


def _batch_moments(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  axes = tuple(range(x.ndim - 1))
  mean = xf.mean(axes)
  var = jnp.maximum(0.0, (xf * xf).mean(axes) - mean * mean)
  return xf, mean, var


def _normalize_by_batch_fwd(x, scale, bias, epsilon):
  xf, mean, var = _batch_moments(x)
  rstd = jax.lax.rsqrt(var + epsilon)
  y = (xf - mean) * (rstd * scale) + bias
  return (y, mean, var), (x, mean, rstd, scale)


def _normalize_by_batch_bwd(epsilon, residuals, cotangents):
  del epsilon
  x, mean, rstd, scale = residuals
  g, g_mean, g_var = cotangents
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  centred = x.astype(mean.dtype) - mean
  x_hat = centred * rstd
  g_bias = g.sum(axes)
  g_scale = (g * x_hat).sum(axes)
  dx = (scale * rstd) * (g - g_bias / n - x_hat * (g_scale / n))
  dx = dx + g_mean / n + (2.0 / n) * g_var * centred
  return dx.astype(x.dtype), g_scale.astype(scale.dtype), g_bias.astype(scale.dtype)


normalize_by_batch.defvjp(_normalize_by_batch_fwd, _normalize_by_batch_bwd)


class BatchNorm(nn.BatchNorm):
  """nn.BatchNorm that honours `batch_norm_override`'s row mask, and normalises by
  batch statistics through `normalize_by_batch` (same values, cheaper backward)
  where nothing else is asked of it: channels last, scale and bias, float32
  statistics, no mask and no `axis_name` (SPMD `jit` needs none: a batch sharded
  over devices still gets global statistics)."""

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
    rows = _OVERRIDE.get().mask
    if mask is None and rows is not None:
      mask = jnp.broadcast_to(rows.reshape((-1,) + (1,) * (x.ndim - 1)), x.shape)
    running = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
    if (
      running
      or mask is not None
      or self.axis_name is not None
      or self.axis not in (-1, x.ndim - 1)
      or not (self.use_scale and self.use_bias)
      or not self.force_float32_reductions
      or not self.use_fast_variance
    ):
      return super().__call__(x, use_running_average, mask=mask)
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), features)
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
    scale = self.param("scale", self.scale_init, features, self.param_dtype)
    bias = self.param("bias", self.bias_init, features, self.param_dtype)
    y, mean, var = normalize_by_batch(x, scale, bias, self.epsilon)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y.astype(self.dtype or jnp.result_type(x, scale))


def batch_norm(
  train: bool, *, dtype: Dtype = jnp.float32, zero_init: bool = False, name: str | None = None
) -> nn.BatchNorm:
  """BatchNorm with torch's defaults; zero_init starts a residual branch at 0.

  Normalises by batch statistics iff `train`, unless `batch_norm_override` says otherwise.
  """
  stats = _OVERRIDE.get().stats
  return BatchNorm(
    use_running_average=(stats == "running") if stats else not train,
    momentum=BN_MOMENTUM,
    epsilon=BN_EPSILON,
    dtype=dtype,
    param_dtype=jnp.float32,
    scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
    name=name,
  )


def maybe_remat(target: Any, enabled: bool, static_argnums: tuple[int, ...] = ()) -> Any:
  """`target` under nn.remat when `enabled` (config model.remat): its activations are
  recomputed in the backward pass instead of kept until it. `target` is a Module class
  (the wrapped class keeps the name it is given) or a function `f(module, ...)` whose
  layers are built in `module`'s own scope, so parameter paths are the same either way.
  `static_argnums` count the module as 0 and name Python arguments (`train`)."""
  return nn.remat(target, static_argnums=static_argnums) if enabled else target


def dense(features: int, *, dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name)


def max_pool(x: jnp.ndarray, window: int = 2) -> jnp.ndarray:
  """Non-overlapping max pool (window == stride) of NHWC `x`: the elementwise max of
  its window² strided slices.

  Same values as nn.max_pool(x, (k, k), (k, k), 'VALID') (trailing rows and
  columns that do not fill a window are dropped, like torch's floor mode), but
  its backward is elementwise selects that fuse with their neighbours, where
  XLA's select_and_scatter is slow on CPU, and so is the backward of a
  reshape + max (a tie count per window: pool + ReLU fwd+bwd at 128×28×28×32
  took 4.3-4.5 ms that way, 1.4-2.1 ms this way, 2-core EPYC VM, 2026-12-02). On exact ties
  inside a window the
  gradient is split between the tied inputs rather than given to the first one.
  """
  b, h, w, c = x.shape
  ho, wo = h // window, w // window
  if ho == 0 or wo == 0:
    raise ConfigError(
      f"model input: feature map {h}x{w} is smaller than the "
      f"{window}x{window} max-pool window; use a larger input"
    )
  x = x[:, : ho * window, : wo * window, :]
  slices = [x[:, i::window, j::window, :] for i in range(window) for j in range(window)]
  return functools.reduce(jnp.maximum, slices)


def _adaptive_pool_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] averaging weights of torch's adaptive_avg_pool along one axis."""
  m = np.zeros((n_out, n_in), np.float32)
  for i in range(n_out):
    start = (i * n_in) // n_out
    end = -((-(i + 1) * n_in) // n_out)  # ceil
    m[i, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
  """torch.nn.AdaptiveAvgPool2d on NHWC `x`, bins and all.

  Bin i along an axis of length n averages [floor(i*n/s), ceil((i+1)*n/s)).
  When the map is smaller than `size` the bins overlap and cells repeat
  (a 1x1 map becomes 7x7 copies), exactly as torch does.
  """
  _, h, w, _ = x.shape
  if (h, w) == tuple(size):
    return x
  mh = jnp.asarray(_adaptive_pool_matrix(h, size[0]), x.dtype)
  mw = jnp.asarray(_adaptive_pool_matrix(w, size[1]), x.dtype)
  x = jnp.einsum("ih,bhwc->biwc", mh, x)
  return jnp.einsum("jw,biwc->bijc", mw, x)


def global_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
  """Mean over H, W, accumulated in float32 so bf16 sums do not lose bits."""
  return jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)


def resolve_norm(model: str, norm: str, allowed: tuple[str, ...], default: str) -> str:
  """Maps 'default' to the model's own choice and rejects norms it lacks."""
  if norm == "default":
    return default
  if norm not in allowed:
    raise ConfigError(
      f"model.norm: {norm!r} is not supported by {model}; allowed: default, {', '.join(allowed)}"
    )
  return norm
