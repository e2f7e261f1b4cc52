"""Host input pipelines on grain: resumable shuffled training streams, padded eval batches.

Images stay uint8 on the host; normalisation happens on device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from jaxdapt.errors import ConfigError

SHIFT_PX = 2

Batch = dict[str, np.ndarray]

# Host augmentations this module applies (data.augment; validated by the trainer).
AUGMENTS = ("none", "shift", "imagenet")


@functools.cache
def _clamped_indices(n: int, shift: int, axis: int) -> np.ndarray:
  """arange(n) + shift clamped to [0, n): indexing with it == edge-pad then crop (much
  cheaper than np.pad); shaped to broadcast as rows (axis 0) or columns (axis 1). Cached:
  there are only (2·SHIFT_PX + 1) per image size and axis, and np.clip costs more per
  image than the indexing itself."""
  idx = np.clip(np.arange(n) + shift, 0, n - 1)
  idx.flags.writeable = False
  return idx[:, None] if axis == 0 else idx[None, :]


def _shift(example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
  """Random translation by up to SHIFT_PX pixels: edge-pad then crop (keeps the background)."""
  img = example["image"]
  h, w = img.shape[:2]
  dy, dx = rng.integers(-SHIFT_PX, SHIFT_PX + 1, size=2)
  rows, cols = _clamped_indices(h, int(dy), 0), _clamped_indices(w, int(dx), 1)
  return {"image": img[rows, cols], "label": example["label"]}


def _input_dtype(image: np.ndarray) -> type:
  """int32 rows are token ids (text domains) and stay int32; pixels travel as uint8."""
  return np.int32 if np.asarray(image).dtype == np.int32 else np.uint8


def _stack(examples: Sequence[dict[str, Any]]) -> Batch:
  images = np.stack([e["image"] for e in examples])
  return {
    "image": images.astype(_input_dtype(images), copy=False),
    "label": np.asarray([e["label"] for e in examples], np.int32),
  }


def _check_processes(batch_size: int, process_index: int, process_count: int, field: str) -> None:
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ConfigError(
      f"process_index {process_index} / process_count {process_count}: need "
      "0 <= process_index < process_count"
    )
  if batch_size < 1 or batch_size % process_count:
    raise ConfigError(
      f"{field}: {batch_size} must be a positive multiple of process_count {process_count}"
    )


def train_iterator(
  source: Sequence[dict[str, Any]],
  *,
  global_batch_size: int,
  seed: int,
  augment: str = "shift",
  process_index: int = 0,
  process_count: int = 1,
  prefetch: int = 2,
) -> grain.DatasetIterator:
  """Infinite iterator of `{'image': uint8[B_local, H, W, C], 'label': int32[B_local]}`.

  The global stream (shuffled afresh each epoch, augmented per position) depends
  only on (source, seed, augment); process p takes positions p, p+P, ... of it,
  so at every step the processes' batches are disjoint and together form the
  global batch. `get_state()` is a small JSON-able dict; `set_state` resumes
  the exact same sequence of batches.
  """
  _check_processes(global_batch_size, process_index, process_count, "global_batch_size")
  if augment not in AUGMENTS:
    raise ConfigError(f"augment: unknown {augment!r}; allowed: {', '.join(AUGMENTS)}")
  if len(source) == 0:
    raise ConfigError("train_iterator: the source is empty")
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
  if augment == "shift":
    ds = ds.random_map(_shift)  # before sharding: augmentation is independent of P
  elif augment == "imagenet":  # random-resized crop + flip of the decoded original (224²)
    from jaxdapt.data import imagenet_pipeline

    ds = ds.random_map(imagenet_pipeline.train_augment)
  ds = ds[process_index::process_count]
  ds = ds.batch(global_batch_size // process_count, drop_remainder=True, batch_fn=_stack)
  threads = max(0, int(prefetch))
  options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads)
  return iter(ds.to_iter_dataset(options))


class PairedIterator:
  """Zips one iterator per domain (source, target and, with k target labels, the labeled
  target `target_labeled`); one checkpointable state holding every domain's position."""

  def __init__(
    self, source_it: Iterator[Batch], target_it: Iterator[Batch], **more: Iterator[Batch]
  ):
    self.source_it = source_it
    self.target_it = target_it
    self.iterators = {"source": source_it, "target": target_it, **more}

  def __iter__(self) -> PairedIterator:
    return self

  def __next__(self) -> dict[str, Batch]:
    return {d: next(it) for d, it in self.iterators.items()}

  def get_state(self) -> dict[str, Any]:
    return {d: it.get_state() for d, it in self.iterators.items()}

  def set_state(self, state: dict[str, Any]) -> None:
    missing = sorted(set(self.iterators) - set(state))
    if missing:
      raise ValueError(
        f"PairedIterator.set_state: no saved position for {', '.join(missing)} "
        f"(saved: {', '.join(sorted(state))})"
      )
    for d, it in self.iterators.items():
      it.set_state(state[d])


def num_eval_batches(n: int, batch_size: int, process_count: int = 1) -> int:
  """Same count on every process (so multi-host eval steps stay in lockstep)."""
  return max(1, math.ceil(math.ceil(n / process_count) / batch_size))


def eval_batches(
  source: Sequence[dict[str, Any]],
  *,
  batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[Batch]:
  """Finite, fixed-shape batches `{'image', 'label', 'mask'}` over this process's shard.

  Every batch has exactly `batch_size` rows (the tail is zero-padded and
  `mask` is False there), so a jitted eval step compiles once. Process p
  sees examples p, p+P, ...; every example is seen by exactly one process.
  """
  _check_processes(batch_size * process_count, process_index, process_count, "batch_size")
  indices = np.arange(process_index, len(source), process_count)
  first = source[0]
  image_shape = np.asarray(first["image"]).shape
  image_dtype = _input_dtype(first["image"])
  for b in range(num_eval_batches(len(source), batch_size, process_count)):
    chunk = indices[b * batch_size : (b + 1) * batch_size]
    images = np.zeros((batch_size, *image_shape), image_dtype)
    labels = np.zeros((batch_size,), np.int32)
    mask = np.zeros((batch_size,), bool)
    for row, i in enumerate(chunk):
      ex = source[int(i)]
      images[row], labels[row], mask[row] = ex["image"], ex["label"], True
    yield {"image": images, "label": labels, "mask": mask}
