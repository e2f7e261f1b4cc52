"""How a domain's stored images are shown to the trainer: `name@HxWxC` and 224² eval crops.

Protocols pair domains stored at different sizes (MNIST 28x28x1 with SVHN 32x32x3, USPS
16x16x1 with MNIST); rewriting a dataset per pairing would store it many times, so a
name may ask for a view instead: `mnist@32x32x3` is MNIST resized (bicubic, as TLlib's
ResizeImage) to 32x32 and repeated to 3 channels, `usps@28x28x1` is USPS at 28x28.
Domains of variable-size images (DomainNet, Office, ImageNet-R...) are always seen
through `imagenet_pipeline.EvalView` (resize 256, center crop 224), since a batch needs
one shape; nothing is cropped on disk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from jaxdapt.data import imagenet_pipeline
from jaxdapt.errors import ConfigError

SEP = "@"
_SPEC = re.compile(r"(\d+)x(\d+)x([13])")

Shape = tuple[int, int, int]


def split_name(name: str) -> tuple[str, Shape | None]:
  """'mnist@32x32x3' -> ('mnist', (32, 32, 3)); 'mnist' -> ('mnist', None)."""
  base, sep, spec = name.partition(SEP)
  if not sep:
    return name, None
  m = _SPEC.fullmatch(spec)
  if m is None or min(int(m[1]), int(m[2])) < 1:
    raise ConfigError(
      f"dataset: {name!r}: a view is written NAME{SEP}HxWxC with C 1 or 3, e.g. mnist{SEP}32x32x3"
    )
  return base, (int(m[1]), int(m[2]), int(m[3]))


def shown_shape(stored: Sequence[int | None], spec: Shape | None) -> Shape:
  """The (H, W, C) the trainer sees for a domain stored as `stored`."""
  if spec is not None:
    return spec
  if None in tuple(stored):
    return (imagenet_pipeline.CROP, imagenet_pipeline.CROP, 3)
  return tuple(int(d) for d in stored)  # type: ignore[return-value]


def resized(image: np.ndarray, shape: Shape) -> np.ndarray:
  """uint8 HWC -> uint8[shape]: bicubic resize, grey <-> RGB as PIL converts ('L'/'RGB')."""
  h, w, c = shape
  image = np.asarray(image, np.uint8)
  pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  pil = pil.convert("L" if c == 1 else "RGB")
  if pil.size != (w, h):
    pil = pil.resize((w, h), Image.Resampling.BICUBIC)
  return np.asarray(pil).reshape(h, w, c)


class ResizedView(Sequence):
  """A source whose images are `resized` to `shape` on read."""

  def __init__(self, source: Sequence[Mapping[str, Any]], shape: Shape):
    self.source, self.shape = source, shape
    self.name = getattr(source, "name", "?")
    self.split = getattr(source, "split", "?")

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    ex = self.source[index]
    return {"image": resized(ex["image"], self.shape), "label": ex["label"]}

  def __repr__(self) -> str:
    return f"ResizedView({self.source!r}, shape={self.shape})"


def apply(
  source: Sequence[Mapping[str, Any]], stored: Sequence[int | None], spec: Shape | None
) -> Sequence[Mapping[str, Any]]:
  """`source` as the trainer should see it (see the module docstring)."""
  if spec is not None:
    if None in tuple(stored):
      return ResizedView(imagenet_pipeline.EvalView(source), spec)
    return ResizedView(source, spec)
  if None in tuple(stored):
    return imagenet_pipeline.EvalView(source)
  return source
