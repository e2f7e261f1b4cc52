"""TFDS catalog datasets used by domain-adaptation and robustness work, read TF-free.

They are read with `tfds.data_source` (ArrayRecord: random access, no TensorFlow) once
prepared; preparing them runs TFDS's own builder, which needs TensorFlow
(`pip install 'jaxdapt[prepare]'`). Names with a '/' pick a builder config
(`domainnet/real`, `mnist_corrupted/shot_noise`, `cifar10_corrupted/fog_3`).

Text datasets of the catalog (imdb_reviews, yelp_polarity_reviews, ag_news_subset, ...):
a dataset with no 'image' feature, a ClassLabel 'label' and a text feature (TEXT_KEYS, the
first present) is read as token ids: each row is tokenized as it is read, with the packaged
all-MiniLM-L6-v2 tokenizer, into TEXT_LEN ids (int32, 0 = [PAD]), the layout of the
project's text domains, so every text method and model applies unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxdapt.errors import ConfigError, DatasetNotPreparedError

# Every name here resolves (tests check the missing-data message of each); any other
# catalog name works the same way.
NAMES = (
  "mnist",
  "mnist_corrupted/shot_noise",
  "svhn_cropped",
  "cifar10",
  "cifar10_corrupted/gaussian_noise_5",
  "stl10",
  *(f"domainnet/{d}" for d in ("real", "painting", "clipart", "quickdraw", "infograph", "sketch")),
  "visual_domain_decathlon/aircraft",
  "imagenet2012",
  "imagenet_r",
  "imagenet_a",
  "imagenet_sketch",
  "imagenet_v2",
  "imagenet2012_corrupted/gaussian_noise_3",
)


TEXT_KEYS = ("text", "sentence", "description")
TEXT_LEN = 128  # token ids per row, as debian_text and text_files store them


def text_key(features: Any) -> str | None:
  """The text feature a catalog text dataset is read from (None for image datasets)."""
  if "image" in features:
    return None
  return next((k for k in TEXT_KEYS if k in features), None)


def stored_shape(info: tfds.core.DatasetInfo) -> tuple[int | None, ...]:
  """The shape of what a source's 'image' holds: its feature's, or TEXT_LEN token ids."""
  if text_key(info.features):
    return (TEXT_LEN,)
  if "image" not in info.features:
    raise ConfigError(
      f"dataset: {info.full_name} has neither an 'image' nor a text feature "
      f"({', '.join(TEXT_KEYS)}); features: {', '.join(info.features.keys())}"
    )
  return tuple(info.features["image"].shape)


class TokenizedSource(Sequence):
  """Rows of a catalog text dataset as {'image': int32[TEXT_LEN] token ids, 'label'}; the
  tokenizer (data.text.Tokenizer over the packaged tokenizer.json) is built on first read."""

  def __init__(self, source: Any, key: str, name: str, split: str):
    self._source, self._key, self.name, self.split = source, key, name, split
    self._tokenizer = None

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    if self._tokenizer is None:
      from jaxdapt.data.debian_text import tokenizer_path
      from jaxdapt.data.text import Tokenizer

      self._tokenizer = Tokenizer(tokenizer_path(), buckets=(TEXT_LEN,))
    ex = self._source[int(index) % len(self)]
    text = ex[self._key]
    ids, _ = self._tokenizer([text.decode() if isinstance(text, bytes) else str(text)])
    return {"image": ids[0], "label": int(ex["label"])}

  def __repr__(self) -> str:
    return f"TokenizedSource({self.name!r}, split={self.split!r}, len={len(self)})"


def manual_dir(data_dir: str) -> str:
  """Where TFDS looks for files a user downloads by hand, by default."""
  return os.path.join(data_dir, "downloads", "manual")


def manual_download_note(builder: tfds.core.DatasetBuilder, data_dir: str) -> str:
  """For builders that cannot download their own files (imagenet2012, its corruptions):
  where to put them, and TFDS's own instructions. '' for the others."""
  instructions = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
  if not instructions:
    return ""
  text = " ".join(str(instructions).split())
  return (
    f"\n{builder.name} needs files you download yourself (TFDS cannot fetch them): "
    f"put them in {manual_dir(data_dir)} before preparing, or pass "
    f"download_config=tfds.download.DownloadConfig(manual_dir=...) to "
    f"download_and_prepare. TFDS says: {text}"
  )


class DomainSource(Sequence):
  """Random access to `{'image': uint8[H, W, C], 'label': int}`; drops other features."""

  def __init__(self, source: Any, name: str, split: str):
    self._source = source
    self.name = name
    self.split = split

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not -len(self) <= index < len(self):
      raise IndexError(f"{self.name}[{self.split}]: index {index} out of range {len(self)}")
    ex = self._source[int(index) % len(self)]
    image = np.asarray(ex["image"])
    if image.dtype != np.int32:  # int32 'image' rows are token ids (text domains): kept
      image = image.astype(np.uint8, copy=False)
    return {"image": image, "label": int(ex["label"])}

  def __repr__(self) -> str:
    return f"DomainSource({self.name!r}, split={self.split!r}, len={len(self)})"


def prepare_command(name: str, data_dir: str) -> str:
  return (
    'pip install tensorflow && python -c "import tensorflow_datasets as tfds; '
    f"tfds.builder('{name}', data_dir='{data_dir}')"
    ".download_and_prepare(file_format='array_record')\""
  )


def catalog_builder(
  name: str, data_dir: str, project_domains: Sequence[str] = ()
) -> tfds.core.DatasetBuilder:
  """The TFDS builder of a catalog name; an unknown name is a ConfigError that lists the
  project's own domains (`project_domains`) as the alternatives."""
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ConfigError(
      f"dataset: unknown dataset {name!r}; project domains: {', '.join(project_domains)}; "
      "or a TFDS catalog name (e.g. mnist, svhn_cropped) prepared under the data dir"
    ) from None


def check_split(name: str, split: str, allowed: Sequence[str]) -> None:
  base = split.split("[", 1)[0]  # allow TFDS slicing: 'train[:90%]'
  if base not in allowed:
    raise ConfigError(f"split: {name!r} has no split {split!r}; allowed: {', '.join(allowed)}")


def catalog_source(
  name: str, split: str, data_dir: str, project_domains: Sequence[str] = ()
) -> DomainSource | TokenizedSource:
  """One split of a TFDS catalog dataset already prepared as ArrayRecord under `data_dir`."""
  builder = catalog_builder(name, data_dir, project_domains)
  if not builder.is_prepared():
    raise DatasetNotPreparedError(
      f"dataset {name!r} is not prepared under data_dir {data_dir!r} "
      f"(looked for {builder.data_dir}); jaxdapt never downloads. Prepare it once with:\n"
      f"  {prepare_command(name, data_dir)}{manual_download_note(builder, data_dir)}"
    )
  fmt = builder.info.file_format
  if fmt != tfds.core.FileFormat.ARRAY_RECORD:
    raise DatasetNotPreparedError(
      f"dataset {name!r} under {builder.data_dir} is stored as {fmt}, which has no random "
      f"access; re-prepare it as ArrayRecord with:\n  {prepare_command(name, data_dir)}"
    )
  check_split(name, split, list(builder.info.splits.keys()))
  key = text_key(builder.info.features)
  if key:
    return TokenizedSource(builder.as_data_source(split=split), key, name, split)
  return DomainSource(builder.as_data_source(split=split), name, split)
