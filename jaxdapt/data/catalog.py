"""TFDS catalog datasets used by domain-adaptation and robustness work, read TF-free.

They are read with `tfds.data_source` (ArrayRecord: random access, no TensorFlow) once
prepared; preparing them runs TFDS's own builder, which needs TensorFlow
(`pip install 'jaxdapt[prepare]'`). Names with a '/' pick a builder config
(`domainnet/real`, `mnist_corrupted/shot_noise`, `cifar10_corrupted/fog_3`).

Text datasets of the catalog (imdb_reviews, yelp_polarity_reviews, ag_news_subset, ...):
a dataset with no 'image' feature, a ClassLabel 'label' and a text feature (TEXT_KEYS, the
first present), or a NESTED_TEXT layout (amazon_us_reviews: data/review_body, 1-5 stars as
classes 0-4), is read as token ids: each row is tokenized as it is read, with the packaged
all-MiniLM-L6-v2 tokenizer, into TEXT_LEN ids (int32, 0 = [PAD]), the layout of the
project's text domains, so every text method and model applies unchanged.
"""

from __future__ import annotations

import dataclasses
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
# Layouts without a top-level text and ClassLabel 'label': (text path, label path, number
# of classes, the label's smallest value). amazon_us_reviews: the review body, 1-5 stars.
NESTED_TEXT = (("data/review_body", "data/star_rating", 5, 1),)


@dataclasses.dataclass(frozen=True)
class TextLayout:
  """Where a catalog text dataset keeps its text and label ('/'-joined feature paths)."""

  text: str
  label: str = "label"
  num_classes: int | None = None  # None: the ClassLabel's
  label_offset: int = 0  # subtracted from the stored label (stars 1-5 -> classes 0-4)


def _has(features: Any, path: str) -> bool:
  for key in path.split("/"):
    if not hasattr(features, "keys") or key not in features.keys():
      return False
    features = features[key]
  return True


def text_layout(features: Any) -> TextLayout | None:
  """How a catalog text dataset is read (None for image datasets and unknown layouts)."""
  if "image" in features:
    return None
  for key in TEXT_KEYS:
    if key in features and "label" in features:
      return TextLayout(key)
  for text, label, n, offset in NESTED_TEXT:
    if _has(features, text) and _has(features, label):
      return TextLayout(text, label, n, offset)
  return None


def num_label_classes(info: tfds.core.DatasetInfo) -> int | None:
  """Classes of a dataset's label: a text layout's count, else the ClassLabel's (None if
  it has none)."""
  layout = text_layout(info.features)
  if layout and layout.num_classes:
    return layout.num_classes
  label = info.features["label"] if "label" in info.features else None
  return int(label.num_classes) if hasattr(label, "num_classes") else None


def stored_shape(info: tfds.core.DatasetInfo) -> tuple[int | None, ...]:
  """The shape of what a source's 'image' holds: its feature's, or TEXT_LEN token ids."""
  if text_layout(info.features):
    return (TEXT_LEN,)
  if "image" not in info.features:
    raise ConfigError(
      f"dataset: {info.full_name} has neither an 'image' feature nor a text layout jaxdapt "
      f"reads ({', '.join(TEXT_KEYS)} + 'label', or {NESTED_TEXT[0][0]}); features: "
      f"{', '.join(info.features.keys())}"
    )
  return tuple(info.features["image"].shape)


def _get(example: Any, path: str) -> Any:
  for key in path.split("/"):
    example = example[key]
  return example


class TokenizedSource(Sequence):
  """Rows of a catalog text dataset as {'image': int32[TEXT_LEN] token ids, 'label'}; the
  tokenizer (data.text.Tokenizer over the packaged tokenizer.json) is built on first read."""

  def __init__(self, source: Any, layout: TextLayout, name: str, split: str):
    self._source, self._layout, self.name, self.split = source, layout, name, split
    self._tokenizer = None

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    if self._tokenizer is None:
      from jaxdapt.data.debian_text import tokenizer_path
      from jaxdapt.data.text import Tokenizer

      self._tokenizer = Tokenizer(tokenizer_path(), buckets=(TEXT_LEN,))
    ex = self._source[int(index) % len(self)]
    text = _get(ex, self._layout.text)
    ids, _ = self._tokenizer([text.decode() if isinstance(text, bytes) else str(text)])
    label = int(_get(ex, self._layout.label)) - self._layout.label_offset
    return {"image": ids[0], "label": label}

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
  layout = text_layout(builder.info.features)
  if layout:
    return TokenizedSource(builder.as_data_source(split=split), layout, name, split)
  return DomainSource(builder.as_data_source(split=split), name, split)
