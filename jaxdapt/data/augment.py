"""RandAugment-lite on device: FixMatch's strong view of uint8 images, in JAX.

Runs inside the jitted training step on the [B, H, W, C] uint8 batch, with per-image
randomness from one key, so the host input pipeline is unchanged and the strong view
comes from the same batch (and the same weak, shifted images) as the weak view.

Each image gets `num_ops` ops drawn uniformly with replacement from OPS, each at a
magnitude m drawn uniformly from [0, 1] and a random sign (FixMatch's RandAugment
variant samples magnitudes instead of fixing one: Sohn et al., NeurIPS 2020, App. D),
then Cutout of a square of side round(cutout · min(H, W)) at a uniform position inside
the image. At magnitude 1: brightness/contrast factor 1 ± 0.9, solarize threshold 0
(m = 0: 256, no pixel), posterize to 4 bits (m = 0: 8), rotate ±30°, shear ±0.3,
translate ±30% of the side. Geometric ops resample bilinearly about the image centre;
pixels from outside and the Cutout square are FILL grey (FixMatch fills with grey too).
Values are rounded to integers after every op, as PIL does on uint8 images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

FILL = 128.0
OPS = (
  "identity",
  "autocontrast",
  "equalize",
  "brightness",
  "contrast",
  "solarize",
  "posterize",
  "rotate",
  "shear_x",
  "shear_y",
  "translate_x",
  "translate_y",
)
_GEOMETRIC = OPS.index("rotate")  # OPS[_GEOMETRIC:] share one affine resampling
MAX_FACTOR, MAX_DEGREES, MAX_SHEAR, MAX_TRANSLATE = 0.9, 30.0, 0.3, 0.3

# Ops on one float32 image [H, W, C] holding integers in [0, 255].


def identity(x: jax.Array) -> jax.Array:
  return x


def autocontrast(x: jax.Array) -> jax.Array:
  """Per channel, stretch [min, max] to [0, 255] (a constant channel is kept):
  ⌊(x − min)·255 / (max − min)⌋, PIL's ImageOps.autocontrast up to its float rounding."""
  v = x.astype(jnp.int32)  # integer division: exact (XLA may divide floats by reciprocal)
  lo, hi = v.min(axis=(0, 1)), v.max(axis=(0, 1))
  return jnp.where(hi > lo, (v - lo) * 255 // jnp.maximum(hi - lo, 1), v).astype(x.dtype)


def _equalize_channel(c: jax.Array) -> jax.Array:
  """PIL's ImageOps.equalize of one channel: lut[i] = (step // 2 + #pixels < i) // step,
  step = (#pixels − #pixels at the top value) // 255; identity when step is 0."""
  v = c.astype(jnp.int32)
  hist = jnp.zeros(256, jnp.int32).at[v.ravel()].add(1)
  top = hist[255 - jnp.argmax(hist[::-1] > 0)]
  step = (v.size - top) // 255
  lut = jnp.minimum((step // 2 + jnp.cumsum(hist) - hist) // jnp.maximum(step, 1), 255)
  return jnp.where(step > 0, lut[v], v).astype(c.dtype)


def equalize(x: jax.Array) -> jax.Array:
  return jax.vmap(_equalize_channel, in_axes=-1, out_axes=-1)(x)


def brightness(x: jax.Array, factor: jax.Array) -> jax.Array:
  """Blend with black (PIL ImageEnhance.Brightness)."""
  return x * factor


def contrast(x: jax.Array, factor: jax.Array) -> jax.Array:
  """Blend with the mean grey level (PIL ImageEnhance.Contrast)."""
  grey = x @ jnp.asarray([0.299, 0.587, 0.114]) if x.shape[-1] == 3 else x.mean(-1)
  return grey.mean() + factor * (x - grey.mean())


def solarize(x: jax.Array, threshold: jax.Array) -> jax.Array:
  """Invert the pixels at or above `threshold`."""
  return jnp.where(x >= threshold, 255.0 - x, x)


def posterize(x: jax.Array, bits: jax.Array) -> jax.Array:
  """Keep the top `bits` bits of each 8-bit value."""
  mask = jnp.left_shift(0xFF, 8 - bits) & 0xFF
  return (x.astype(jnp.int32) & mask).astype(x.dtype)


def affine(x: jax.Array, matrix: jax.Array, offset: jax.Array) -> jax.Array:
  """Output pixel p samples the input at matrix @ (p − centre) + centre + offset
  ((row, col) coordinates), bilinear, FILL outside."""
  h, w = x.shape[:2]
  centre = jnp.asarray([(h - 1) / 2, (w - 1) / 2])
  grid = jnp.stack(jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij"), -1)
  src = (grid - centre) @ matrix.T + centre + offset
  coords = [src[..., 0], src[..., 1]]
  return jax.vmap(
    lambda c: ndimage.map_coordinates(c, coords, order=1, mode="constant", cval=FILL),
    in_axes=-1,
    out_axes=-1,
  )(x)


def geometric(x: jax.Array, kind: jax.Array, signed: jax.Array) -> jax.Array:
  """Rotate, shear_x, shear_y, translate_x, translate_y (kind 0..4) at signed magnitude."""
  h, w = x.shape[:2]
  theta = jnp.deg2rad(MAX_DEGREES * signed)
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  s, t = MAX_SHEAR * signed, MAX_TRANSLATE * signed
  eye = jnp.eye(2)
  matrices = jnp.stack(
    [
      jnp.asarray([[cos, -sin], [sin, cos]]),
      jnp.asarray([[1.0, 0.0], [s, 1.0]]),  # shear_x: col += s·row
      jnp.asarray([[1.0, s], [0.0, 1.0]]),  # shear_y: row += s·col
      eye,
      eye,
    ]
  )
  offsets = jnp.stack(
    [jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), jnp.asarray([0.0, t * w]), jnp.asarray([t * h, 0.0])]
  )
  kind = jnp.clip(kind, 0, 4)  # other ops pass their (discarded) index here too
  return affine(x, matrices[kind], offsets[kind])


def cutout(x: jax.Array, key: jax.Array, size: int) -> jax.Array:
  """A size × size square (all channels) at a uniform position inside the image := FILL."""
  h, w = x.shape[:2]
  if size <= 0:
    return x
  ky, kx = jax.random.split(key)
  y0 = jax.random.randint(ky, (), 0, h - size + 1)
  x0 = jax.random.randint(kx, (), 0, w - size + 1)
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  inside = (rows >= y0) & (rows < y0 + size) & (cols >= x0) & (cols < x0 + size)
  return jnp.where(inside[..., None], FILL, x)


def apply_op(x: jax.Array, op: jax.Array, magnitude: jax.Array, sign: jax.Array) -> jax.Array:
  """OPS[op] at `magnitude` in [0, 1] (`sign` ±1 for the symmetric ops), rounded."""
  signed = sign * magnitude
  factor = 1.0 + MAX_FACTOR * signed
  branches = (
    identity,
    autocontrast,
    equalize,
    lambda v: brightness(v, factor),
    lambda v: contrast(v, factor),
    lambda v: solarize(v, 256.0 * (1.0 - magnitude)),
    lambda v: posterize(v, 8 - jnp.round(4 * magnitude).astype(jnp.int32)),
    lambda v: geometric(v, op - _GEOMETRIC, signed),
  )
  out = jax.lax.switch(jnp.minimum(op, _GEOMETRIC), branches, x)
  return jnp.clip(jnp.round(out), 0.0, 255.0)


def _strong_one(image: jax.Array, key: jax.Array, num_ops: int, cutout_size: int) -> jax.Array:
  k_ops, k_mag, k_sign, k_cut = jax.random.split(key, 4)
  ops = jax.random.randint(k_ops, (num_ops,), 0, len(OPS))
  mags = jax.random.uniform(k_mag, (num_ops,))
  signs = jnp.where(jax.random.bernoulli(k_sign, 0.5, (num_ops,)), 1.0, -1.0)
  x = image.astype(jnp.float32)
  for i in range(num_ops):
    x = apply_op(x, ops[i], mags[i], signs[i])
  return cutout(x, k_cut, cutout_size).astype(jnp.uint8)


def strong_augment(
  images: jax.Array, key: jax.Array, *, num_ops: int = 2, cutout_frac: float = 0.5
) -> jax.Array:
  """uint8 [B, H, W, C] → its strong view, each image with its own draw from `key`."""
  size = int(round(cutout_frac * min(images.shape[1:3])))
  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(lambda im, k: _strong_one(im, k, num_ops, size))(images, keys)
