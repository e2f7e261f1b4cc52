"""MNIST-M style blending, |ink - photo patch|, with colour photos that ship offline.

Shared by `uci_digits_m` and `fashion_mnist_m`: the crop depends only on
(seed, index), so a domain is reproducible image by image.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from jaxdapt.data.features import IMAGE_SHAPE

BLEND_SEED = 0


def to_uint8(x: np.ndarray) -> np.ndarray:
  """[0, 1] floats -> uint8, rounded."""
  return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def photos() -> tuple[np.ndarray, ...]:
  """Colour photos shipped with scikit-learn and matplotlib, float32 RGB in [0, 1]."""
  from matplotlib import cbook
  from sklearn.datasets import load_sample_images

  out = [np.asarray(im, np.float32) / 255.0 for im in load_sample_images().images]
  with cbook.get_sample_data("grace_hopper.jpg") as f:
    out.append(np.asarray(Image.open(f).convert("RGB"), np.float32) / 255.0)
  return tuple(out)


def blend(ink: np.ndarray, index: int, seed: int = BLEND_SEED) -> np.ndarray:
  """|ink - patch| with a random 32x32 crop, chosen by (seed, index) only.

  `ink` is float[32, 32] in [0, 1]; returns float[32, 32, 3] in [0, 1].
  """
  rng = np.random.default_rng((seed, index))
  pics = photos()
  pic = pics[rng.integers(len(pics))]
  h, w = IMAGE_SHAPE[:2]
  y = rng.integers(pic.shape[0] - h + 1)
  x = rng.integers(pic.shape[1] - w + 1)
  return np.abs(ink[..., None] - pic[y : y + h, x : x + w])
