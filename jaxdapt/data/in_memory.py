"""Small splits held in RAM: every row read once into two arrays, then indexed.

Reading a row of a prepared domain costs a record read and a TFDS deserialisation,
about 0.1-0.2 ms; on the digits DANN step (batch 64 + 64, 2-core VM) that was 30 ms of
host work per step, against 43-52 ms for the step itself (README "Benchmark"). A digit split is
a few tens of MB (syn_digits train: 20,000 x 32x32x3 = 61 MB), so it is read once when
the experiment is built and then served from arrays. Rows, order and values are the
same, so training is unchanged; only fixed-shape {'image', 'label'} sources are held
(`EvalView` rows also carry the decoded original for the train crop and stay lazy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class ArraySource(Sequence):
  """Random access to `{'image': uint8[H, W, C], 'label': int}` rows held in arrays."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, name: str = "?", split: str = "?"):
    if len(images) != len(labels):
      raise ValueError(f"ArraySource: {len(images)} images but {len(labels)} labels")
    self.images, self.labels = images, labels
    self.name, self.split = name, split

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not -len(self) <= index < len(self):
      raise IndexError(f"{self.name}[{self.split}]: index {index} out of range {len(self)}")
    return {"image": self.images[index], "label": int(self.labels[index])}

  def __repr__(self) -> str:
    return f"ArraySource({self.name!r}, split={self.split!r}, len={len(self)})"


def _plain_row(row: Mapping[str, Any]) -> bool:
  return (
    set(row.keys()) == {"image", "label"}
    and isinstance(row["image"], np.ndarray)
    and row["image"].dtype in (np.uint8, np.int32)  # pixels, or token ids (text)
  )


def hold(source: Sequence[Mapping[str, Any]], max_bytes: int) -> Sequence[Mapping[str, Any]]:
  """`source` as an ArraySource if its images fit in `max_bytes` (<= 0: never), else as is."""
  if max_bytes <= 0 or len(source) == 0 or isinstance(source, ArraySource):
    return source
  first = source[0]
  if not _plain_row(first) or first["image"].nbytes * len(source) > max_bytes:
    return source
  images = np.empty((len(source), *first["image"].shape), first["image"].dtype)
  labels = np.empty((len(source),), np.int64)
  for i in range(len(source)):
    row = source[i]
    if row["image"].shape != images.shape[1:] or row["image"].dtype != images.dtype:
      return source
    images[i], labels[i] = row["image"], row["label"]
  images.flags.writeable = False  # rows are views: an in-place edit would change the split
  return ArraySource(images, labels, getattr(source, "name", "?"), getattr(source, "split", "?"))
