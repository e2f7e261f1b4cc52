"""Printed-digit renderer for `syn_digits`: Pillow + numpy, no network, no TF.

Every image draws its parameters from `np.random.default_rng((seed, index))`,
so any index can be rendered alone, in any order, in any process, and the
bytes only depend on (params, seed, index).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

SIZE = 32
SUPERSAMPLE = 4
GLYPH_PX = 96

# matplotlib's bundled fonts whose digit glyphs are real digits (see
# shared/notes/offline-digits-first-measurements.md for the ones that are not).
FONTS: tuple[str, ...] = (
  "DejaVuSans.ttf",
  "DejaVuSans-Bold.ttf",
  "DejaVuSans-Oblique.ttf",
  "DejaVuSans-BoldOblique.ttf",
  "DejaVuSansMono.ttf",
  "DejaVuSansMono-Bold.ttf",
  "DejaVuSansMono-Oblique.ttf",
  "DejaVuSansMono-BoldOblique.ttf",
  "DejaVuSerif.ttf",
  "DejaVuSerif-Bold.ttf",
  "DejaVuSerif-Italic.ttf",
  "DejaVuSerif-BoldItalic.ttf",
  "STIXGeneral.ttf",
  "STIXGeneralBol.ttf",
  "STIXGeneralItalic.ttf",
  "STIXGeneralBolIta.ttf",
  "cmr10.ttf",
  "cmb10.ttf",
  "cmss10.ttf",
  "cmti10.ttf",
  "cmtt10.ttf",
)


@dataclasses.dataclass(frozen=True)
class RenderParams:
  """All knobs of the renderer; ranges are (low, high), sampled uniformly."""

  fonts: tuple[str, ...] = FONTS
  height: tuple[float, float] = (0.6, 1.0)  # glyph height as a fraction of 32 px
  aspect: tuple[float, float] = (0.8, 1.2)  # width multiplier on the font's own
  jitter: int = 3  # max |offset| of the centre, px
  stroke: tuple[int, int] = (0, 6)  # stroke width at 96 px, inclusive
  rotate: float = 15.0  # max |rotation|, degrees
  shear: float = 0.0  # max |horizontal shear|
  elastic: float = 0.0  # max elastic displacement, px at 32
  elastic_sigma: float = 4.0  # smoothness of the field, px at 32
  blur: tuple[float, float] = (0.0, 1.2)  # Gaussian blur sigma, px
  noise: tuple[float, float] = (0.0, 0.08)  # Gaussian noise std, [0, 1] units
  colour: str = "mixed"  # 'mixed' or 'light_on_dark'
  grey_fraction: float = 0.5  # 'mixed': share of grey images
  min_contrast: float = 0.3  # min |luma(fg) - luma(bg)|


def font_dir() -> str:
  import matplotlib

  return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@functools.cache
def _font(name: str) -> ImageFont.FreeTypeFont:
  return ImageFont.truetype(os.path.join(font_dir(), name), GLYPH_PX)


@functools.lru_cache(maxsize=4096)
def _glyph(font: str, digit: int, stroke: int) -> np.ndarray:
  """Ink coverage of one digit cropped to its ink box, float32 in [0, 1].

  Cached: there are only fonts x 10 x strokes distinct glyphs.
  """
  canvas = Image.new("L", (3 * GLYPH_PX, 3 * GLYPH_PX), 0)
  ImageDraw.Draw(canvas).text(
    (1.5 * GLYPH_PX, 1.5 * GLYPH_PX),
    str(digit),
    fill=255,
    font=_font(font),
    anchor="mm",
    stroke_width=stroke,
    stroke_fill=255,
  )
  box = canvas.getbbox()
  if box is None:
    raise ValueError(f"font {font} has no ink for digit {digit}")
  return np.asarray(canvas.crop(box), np.float32) / 255.0


def _luma(rgb: np.ndarray) -> float:
  return float(rgb @ np.array([0.299, 0.587, 0.114]))


def _colours(p: RenderParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Foreground and background RGB in [0, 1] with at least min_contrast luma gap."""
  if p.colour == "light_on_dark":
    while True:
      fg, bg = rng.uniform(0, 1, 2)
      if fg - bg >= p.min_contrast:
        return np.full(3, fg), np.full(3, bg)
  if p.colour != "mixed":
    raise ValueError(f"colour: unknown mode {p.colour!r}; allowed: mixed, light_on_dark")
  grey = rng.uniform() < p.grey_fraction
  while True:
    if grey:
      fg, bg = np.full(3, rng.uniform()), np.full(3, rng.uniform())
    else:
      fg, bg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    if abs(_luma(fg) - _luma(bg)) >= p.min_contrast:
      return fg, bg


def _elastic(alpha: np.ndarray, p: RenderParams, rng: np.random.Generator) -> np.ndarray:
  """Smooth random warp: field drawn at 32x32, smoothed, scaled to max p.elastic px."""
  n = alpha.shape[0]
  field = rng.uniform(-1, 1, (2, SIZE, SIZE))
  field = np.stack([ndimage.gaussian_filter(f, p.elastic_sigma) for f in field])
  field *= p.elastic / max(np.abs(field).max(), 1e-8)
  field = np.stack(
    [  # bilinear x4 upsample in C (PIL), no BLAS threads
      np.asarray(
        Image.fromarray(f.astype(np.float32), mode="F").resize((n, n), Image.Resampling.BILINEAR)
      )
      for f in field
    ]
  ) * (n / SIZE)
  yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
  return ndimage.map_coordinates(alpha, [yy + field[0], xx + field[1]], order=1, mode="constant")


def render(p: RenderParams, seed: int, index: int, label: int) -> np.ndarray:
  """One uint8[32, 32, 3] image of `label`, fully determined by (p, seed, index)."""
  rng = np.random.default_rng((seed, index))
  font = p.fonts[rng.integers(len(p.fonts))]
  stroke = int(rng.integers(p.stroke[0], p.stroke[1] + 1))
  glyph = _glyph(font, label, stroke)
  n = SIZE * SUPERSAMPLE
  h = rng.uniform(*p.height) * n
  w = h * glyph.shape[1] / glyph.shape[0] * rng.uniform(*p.aspect)
  shear = rng.uniform(-p.shear, p.shear) if p.shear else 0.0
  angle = np.deg2rad(rng.uniform(-p.rotate, p.rotate))
  centre = n / 2 + rng.uniform(-p.jitter, p.jitter, 2) * SUPERSAMPLE
  # Forward map from glyph pixels (centred) to canvas: R @ Shear @ Scale.
  scale = np.diag([w / glyph.shape[1], h / glyph.shape[0]])
  shear_m = np.array([[1.0, shear], [0.0, 1.0]])
  c, s = np.cos(angle), np.sin(angle)
  rot = np.array([[c, -s], [s, c]])
  fwd = rot @ shear_m @ scale
  inv = np.linalg.inv(fwd)
  g_centre = np.array([glyph.shape[1], glyph.shape[0]]) / 2
  offset = g_centre - inv @ centre
  coeffs = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
  alpha = np.asarray(
    Image.fromarray(glyph, mode="F").transform(
      (n, n), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR
    )
  )
  if p.elastic:
    alpha = _elastic(alpha, p, rng)
  alpha = alpha.reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE).mean(axis=(1, 3))
  fg, bg = _colours(p, rng)
  img = bg + alpha[..., None] * (fg - bg)
  sigma = rng.uniform(*p.blur)
  if sigma > 0.05:
    img = ndimage.gaussian_filter(img, (sigma, sigma, 0))
  grey = bool((fg == fg[0]).all() and (bg == bg[0]).all())
  noise_shape = img.shape[:2] + ((1,) if grey else (3,))  # grey images stay grey
  img = img + rng.normal(0, rng.uniform(*p.noise), noise_shape)
  return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def render_range(p: RenderParams, seed: int, start: int, stop: int) -> np.ndarray:
  """Images for indices [start, stop); label of index i is i % 10 (balanced)."""
  return np.stack([render(p, seed, i, i % 10) for i in range(start, stop)])


def label_of(index: int) -> int:
  return index % 10


def params_to_json(p: RenderParams) -> str:
  return json.dumps(dataclasses.asdict(p))


def params_from_json(text: str) -> RenderParams:
  raw = json.loads(text)
  return RenderParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def main(argv: list[str]) -> None:
  """Worker entry: `python render.py PARAMS_JSON SEED START STOP OUT.npy`.

  Run as a plain script in a fresh interpreter (not fork, not multiprocessing
  spawn) so the parent may hold JAX threads and need no `__main__` guard.
  """
  params, seed, start, stop, out = argv
  np.save(out, render_range(params_from_json(params), int(seed), int(start), int(stop)))


if __name__ == "__main__":
  main(sys.argv[1:])
