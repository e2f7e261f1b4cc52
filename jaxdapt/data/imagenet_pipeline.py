"""ImageNet-style input for 224² training: decode, resize, crops, flip, as grain ops.

The recipe is Transfer-Learning-Library's (TLlib), which the Office/VisDA/DomainNet
protocols follow: train = ResizeImage(256) (both sides to 256, aspect not kept) then
RandomResizedCrop(224, scale 0.08–1, ratio 3/4–4/3) and a horizontal flip; eval =
ResizeImage(256) then CenterCrop(224). Each crop is done in one PIL resize of the
matching box of the original image (`Image.resize(box=...)`), so an image is resampled
once, not twice.

Images stay uint8 on the host. The trainer normalises on device with the mean/std the
imported weights recorded (`train.input_mean_std`: ImageNet's for torchvision/timm
imports), so the host ships 1 byte per channel, not 4; `normalize` is the same formula
for code outside the trainer.

Ops, in the shape `pipeline.train_iterator` takes (grain `random_map` / `map`):
  train_augment(example, rng) -> example   random crop + flip from example['full']
  EvalView(source)                         a source whose 'image' is the 224² eval crop

Host-side throughput (decode + crop, images/s per core): jaxdapt/data/throughput.py.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

RESIZE = 256
CROP = 224
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
# TLlib's ResizeImage is PIL's resize default (bicubic); torchvision's RandomResizedCrop
# resamples bilinearly. The one-step crops keep that split.
EVAL_RESAMPLE = Image.Resampling.BICUBIC
TRAIN_RESAMPLE = Image.Resampling.BILINEAR

Box = tuple[float, float, float, float]  # (left, top, right, bottom) in source pixels


def to_rgb(image: np.ndarray) -> np.ndarray:
  """uint8 HW, HW1, HW3 or HW4 -> HW3 (grey repeated, alpha dropped)."""
  image = np.asarray(image, np.uint8)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    return np.repeat(image, 3, axis=-1)
  return image[..., :3]


def decode(data: bytes) -> np.ndarray:
  """Encoded JPEG/PNG/... bytes -> uint8[H, W, 3]."""
  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert("RGB"))


def _pixels(image: Any) -> np.ndarray:
  return decode(image) if isinstance(image, (bytes, bytearray)) else to_rgb(image)


def resize_box(image: np.ndarray, size: int, box: Box, resample) -> np.ndarray:
  """The `box` region of `image` resampled to size x size."""
  pil = Image.fromarray(to_rgb(image))
  return np.asarray(pil.resize((size, size), resample, box=box))


def _grid_box(h: int, w: int, top: float, left: float, height: float, width: float) -> Box:
  """A box given on the RESIZE x RESIZE grid, in the original image's pixels."""
  sy, sx = h / RESIZE, w / RESIZE
  return (left * sx, top * sy, (left + width) * sx, (top + height) * sy)


def eval_crop(image: Any, crop: int = CROP) -> np.ndarray:
  """ResizeImage(256) + CenterCrop(crop), in one resample."""
  image = _pixels(image)
  margin = (RESIZE - crop) / 2
  box = _grid_box(*image.shape[:2], margin, margin, crop, crop)
  return resize_box(image, crop, box, EVAL_RESAMPLE)


def random_resized_box(
  rng: np.random.Generator,
  h: int = RESIZE,
  w: int = RESIZE,
  scale: tuple[float, float] = SCALE,
  ratio: tuple[float, float] = RATIO,
) -> tuple[int, int, int, int]:
  """(top, left, height, width) of a random crop of an h x w image: area fraction from
  `scale`, aspect ratio log-uniform in `ratio`; after 10 misses, the central crop
  clamped to `ratio` (the usual RandomResizedCrop sampling)."""
  area = h * w
  log_ratio = np.log(ratio)
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = float(np.exp(rng.uniform(*log_ratio)))
    cw, ch = round(np.sqrt(target * aspect)), round(np.sqrt(target / aspect))
    if 0 < cw <= w and 0 < ch <= h:
      return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
  aspect = w / h
  if aspect < ratio[0]:
    cw, ch = w, round(w / ratio[0])
  elif aspect > ratio[1]:
    ch, cw = h, round(h * ratio[1])
  else:
    cw, ch = w, h
  return (h - ch) // 2, (w - cw) // 2, ch, cw


def train_crop(
  image: Any,
  rng: np.random.Generator,
  crop: int = CROP,
  flip: bool = True,
  scale: tuple[float, float] = SCALE,
  ratio: tuple[float, float] = RATIO,
) -> np.ndarray:
  """ResizeImage(256) + RandomResizedCrop(crop) + horizontal flip, in one resample."""
  image = _pixels(image)
  top, left, ch, cw = random_resized_box(rng, scale=scale, ratio=ratio)
  out = resize_box(image, crop, _grid_box(*image.shape[:2], top, left, ch, cw), TRAIN_RESAMPLE)
  if flip and rng.random() < 0.5:
    out = out[:, ::-1]
  return np.ascontiguousarray(out)


def train_augment(example: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
  """grain random_map op: the train crop of example['full'] (EvalView rows carry the
  decoded original there) or of example['image'] (pixels or encoded bytes)."""
  source = example["full"] if "full" in example else example["image"]
  return {"image": train_crop(source, rng), "label": example["label"]}


class _Row(Mapping):
  """{'image': eval crop (computed on first read), 'label', 'full': the decoded original}.

  Lazy so that a training op reading 'full' never pays for the eval crop.
  """

  def __init__(self, full: np.ndarray, label: int, crop: int):
    self._full, self._label, self._crop, self._image = full, label, crop, None

  def __getitem__(self, key: str) -> Any:
    if key == "image":
      if self._image is None:
        self._image = eval_crop(self._full, self._crop)
      return self._image
    if key == "label":
      return self._label
    if key == "full":
      return self._full
    raise KeyError(key)

  def __iter__(self) -> Iterator[str]:
    return iter(("image", "label", "full"))

  def __len__(self) -> int:
    return 3


class EvalView(Sequence):
  """A source of variable-size images seen as crop x crop eval crops (TLlib's val transform).

  Fixed-size rows are what the trainer's batching and `image_shape` need; the decoded
  original stays reachable as row['full'] for `train_augment`.
  """

  def __init__(self, source: Sequence[Mapping[str, Any]], crop: int = CROP):
    self.source, self.crop = source, crop
    self.name = getattr(source, "name", "?")
    self.split = getattr(source, "split", "?")

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> _Row:
    ex = self.source[index]
    return _Row(_pixels(ex["image"]), int(ex["label"]), self.crop)

  def __repr__(self) -> str:
    return f"EvalView({self.source!r}, crop={self.crop})"


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """uint8 -> float32 (x/255 - mean)/std per channel: what the trainer does on device."""
  x = np.asarray(images, np.float32) / 255.0
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
