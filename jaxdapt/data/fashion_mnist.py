"""`fashion_mnist` (Fashion-MNIST at 32x32x3) and `fashion_mnist_m` (MNIST-M style blend).

Input, read only while a domain is generated: the original idx files of Debian's
`dataset-fashion-mnist` in $JAXDAPT_FASHION_MNIST_DIR (default
/usr/share/datasets/fashion-mnist), else the TFDS catalog `fashion_mnist` prepared as
ArrayRecord in the data dir. The images are first sorted by content, so both inputs,
whose orders differ (TFDS shuffles on write), give the same bytes.

Splits: the 60,000 train images, permuted with SPLIT_SEED, are cut in two disjoint
halves. The first is the labeled source, `fashion_mnist` train (28,000) + validation
(2,000); the second is the target, `fashion_mnist_m` train (30,000). Both domains' `test`
is the 10,000 t10k images. Images are 28x28 zero-padded by 2 px, grey in 3 channels
(`fashion_mnist`) or |image - photo patch| (`fashion_mnist_m`, see mnist_m.py).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from jaxdapt.data.catalog import catalog_source, prepare_command
from jaxdapt.data.features import OfflineBuilder, digit_features
from jaxdapt.data.mnist_m import blend, to_uint8
from jaxdapt.errors import DatasetNotPreparedError

ENV_VAR = "JAXDAPT_FASHION_MNIST_DIR"
DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CATALOG_NAME = "fashion_mnist"
FILES = {  # split -> (images, labels), as the original distribution names them
  "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASS_NAMES = (
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
)
RAW_SHAPE = (28, 28)
PAD = 2  # 28 + 2 + 2 = 32, as the digit domains
SPLIT_SEED = 0
VALIDATION_FRACTION = 1 / 15  # 2,000 of the 30,000 source images


def idx_dir() -> str:
  """Folder with the four idx.gz files: $JAXDAPT_FASHION_MNIST_DIR, else Debian's."""
  return os.path.expanduser(os.environ.get(ENV_VAR) or DEFAULT_DIR)


class Raw(NamedTuple):
  """All images in canonical order: train ids 0..num_train-1, then the test images."""

  images: np.ndarray  # uint8[N, 28, 28]
  labels: np.ndarray  # int64[N]
  num_train: int


def _corrupt(path: str, why: str) -> DatasetNotPreparedError:
  return DatasetNotPreparedError(
    f"{path}: not a valid idx file ({why}). Reinstall it (apt-get install --reinstall "
    f"dataset-fashion-mnist) or set {ENV_VAR} to a folder with intact copies of "
    f"{', '.join(f for pair in FILES.values() for f in pair)}."
  )


def read_idx(path: str, ndim: int) -> np.ndarray:
  """uint8 array from a gzipped idx file: magic 0x0000080<ndim>, then ndim big-endian sizes."""
  try:
    with gzip.open(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:  # not gzip, or truncated
    raise _corrupt(path, f"cannot be decompressed: {e}") from None
  header = 4 * (1 + ndim)
  if len(raw) < header:
    raise _corrupt(path, f"{len(raw)} bytes, shorter than the {header}-byte header")
  magic = int.from_bytes(raw[:4], "big")
  if magic != 0x800 + ndim:
    raise _corrupt(
      path, f"magic number {magic:#010x}, expected {0x800 + ndim:#010x} (uint8, {ndim}-d)"
    )
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
  size = int(np.prod(shape))
  if len(raw) - header != size:
    raise _corrupt(path, f"{len(raw) - header} bytes of data, the header says {shape} = {size}")
  return np.frombuffer(raw, np.uint8, size, header).reshape(shape)


def _read_idx_split(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  image_file, label_file = (os.path.join(folder, f) for f in FILES[split])
  images, labels = read_idx(image_file, 3), read_idx(label_file, 1)
  if images.shape[1:] != RAW_SHAPE:
    raise _corrupt(image_file, f"images are {images.shape[1:]}, expected {RAW_SHAPE}")
  if len(labels) != len(images):
    raise _corrupt(label_file, f"{len(labels)} labels for {len(images)} images in {image_file}")
  if labels.max(initial=0) >= len(CLASS_NAMES):
    raise _corrupt(label_file, f"label {labels.max()} outside 0..{len(CLASS_NAMES) - 1}")
  return images, labels.astype(np.int64)


def _read_catalog_split(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  src = catalog_source(CATALOG_NAME, split, data_dir)
  examples = [src[i] for i in range(len(src))]
  images = np.stack([ex["image"].reshape(RAW_SHAPE) for ex in examples])
  return images, np.array([ex["label"] for ex in examples], np.int64)


def _canonical(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Sorted by (content hash, label): one order whichever input the images came from."""
  digests = np.array(
    [int.from_bytes(hashlib.blake2b(x.tobytes(), digest_size=8).digest(), "big") for x in images],
    np.uint64,
  )
  order = np.lexsort((labels, digests))
  return images[order], labels[order]


def _missing_input(folder: str, data_dir: str, catalog_error: Exception) -> DatasetNotPreparedError:
  missing = [
    f for pair in FILES.values() for f in pair if not os.path.isfile(os.path.join(folder, f))
  ]
  return DatasetNotPreparedError(
    f"Fashion-MNIST is not available, and jaxdapt never downloads. Looked for:\n"
    f"  - the idx files in {folder} (${ENV_VAR}, default {DEFAULT_DIR}); missing: "
    f"{', '.join(missing)}\n"
    f"  - the TFDS catalog dataset as ArrayRecord: {str(catalog_error).split(';')[0]}\n"
    f"Get it in one of three ways:\n"
    f"  sudo apt-get install dataset-fashion-mnist\n"
    f"  export {ENV_VAR}=/a/folder/with/the/four/idx.gz/files\n"
    f"  {prepare_command(CATALOG_NAME, data_dir)}"
  )


@functools.lru_cache(maxsize=1)
def load(folder: str, data_dir: str) -> Raw:
  """The train and test images from the idx files in `folder`, else the prepared catalog."""
  if all(os.path.isfile(os.path.join(folder, f)) for pair in FILES.values() for f in pair):
    parts = [_read_idx_split(folder, split) for split in FILES]
  else:
    try:
      parts = [_read_catalog_split(data_dir, split) for split in FILES]
    except DatasetNotPreparedError as e:
      raise _missing_input(folder, data_dir, e) from None
  parts = [_canonical(*p) for p in parts]
  return Raw(
    np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), len(parts[0][1])
  )


def split_ids(num_train: int, num_test: int) -> dict[str, np.ndarray]:
  """Example ids of each part: 'source', 'validation', 'target' (train ids), 'test'."""
  perm = np.random.default_rng(SPLIT_SEED).permutation(num_train)
  source, target = perm[: num_train // 2], perm[num_train // 2 :]
  num_val = round(len(source) * VALIDATION_FRACTION)
  return {
    "source": source[: len(source) - num_val],
    "validation": source[len(source) - num_val :],
    "target": target,
    "test": num_train + np.arange(num_test),
  }


def pad(image: np.ndarray) -> np.ndarray:
  """uint8[28, 28] -> uint8[32, 32], black border."""
  return np.pad(image, PAD)


class _FashionBase(OfflineBuilder, skip_registration=True):
  PARTS: dict[str, str] = {}  # split -> part of split_ids

  def _image(self, image: np.ndarray, example_id: int) -> np.ndarray:
    """uint8[32, 32] padded grey -> uint8[32, 32, 3]."""
    raise NotImplementedError

  def _raw(self) -> Raw:
    return load(idx_dir(), os.fspath(self.data_dir_root))

  def check_inputs(self) -> None:
    self._raw()

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.__doc__,
      features=digit_features(CLASS_NAMES),
      supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing is downloaded
    raw = self._raw()
    ids = split_ids(raw.num_train, len(raw.labels) - raw.num_train)
    return {split: self._generate_examples(raw, ids[part]) for split, part in self.PARTS.items()}

  def _generate_examples(self, raw: Raw, ids: np.ndarray):
    for i in ids:
      yield int(i), {"image": self._image(pad(raw.images[i]), int(i)), "label": int(raw.labels[i])}


class FashionMnistLocal(_FashionBase):
  """Fashion-MNIST source half (train + validation) and t10k test, 32x32 grey in 3 channels."""

  name = "fashion_mnist_local"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: content-sorted, permuted with seed 0, halved."}
  PARTS = {"train": "source", "validation": "validation", "test": "test"}
  SPLITS = tuple(PARTS)

  def _image(self, image: np.ndarray, example_id: int) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=-1)


class FashionMnistM(_FashionBase):
  """Fashion-MNIST target half and t10k test blended as |image - photo patch| (MNIST-M style)."""

  name = "fashion_mnist_m"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: sklearn china/flower + matplotlib grace_hopper."}
  PARTS = {"train": "target", "test": "test"}
  SPLITS = tuple(PARTS)

  def _image(self, image: np.ndarray, example_id: int) -> np.ndarray:
    return to_uint8(blend(image.astype(np.float32) / 255.0, example_id))
