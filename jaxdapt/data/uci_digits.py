"""`uci_digits` (real 8x8 handwriting, upsampled) and `uci_digits_m` (MNIST-M style).

Both come from scikit-learn's bundled copy of the UCI digits, so they need no
network. They share one stratified 60/40 split (random_state=0): `train`
(1,078; the unlabeled target set for adaptation, labels kept for oracles) and
`test` (719).
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxdapt.data.features import IMAGE_SHAPE, OfflineBuilder, digit_features
from jaxdapt.data.mnist_m import blend, to_uint8

SPLIT_SEED = 0
TEST_FRACTION = 0.4


@functools.lru_cache(maxsize=1)
def uci_images() -> tuple[np.ndarray, np.ndarray]:
  """float32[1797, 32, 32] ink in [0, 1] (bilinear from 8x8), int64 labels."""
  from sklearn.datasets import load_digits

  digits = load_digits()
  small = digits.images.astype(np.float32) / 16.0
  size = IMAGE_SHAPE[:2][::-1]
  big = np.stack(
    [
      np.asarray(Image.fromarray(x, mode="F").resize(size, Image.Resampling.BILINEAR))
      for x in small
    ]
  )
  return np.clip(big, 0.0, 1.0), digits.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def split_indices() -> dict[str, np.ndarray]:
  """Stratified 60/40 split of the 1,797 digits, sorted indices per split."""
  from sklearn.model_selection import train_test_split

  _, labels = uci_images()
  train, test = train_test_split(
    np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
  )
  return {"train": np.sort(train), "test": np.sort(test)}


class _UciBase(OfflineBuilder, skip_registration=True):
  SPLITS = ("train", "test")

  def _image(self, ink: np.ndarray, index: int) -> np.ndarray:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.__doc__,
      features=digit_features(),
      supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing is downloaded
    return {name: self._generate_examples(idx) for name, idx in split_indices().items()}

  def _generate_examples(self, indices: np.ndarray):
    images, labels = uci_images()
    for i in indices:
      yield int(i), {"image": self._image(images[i], int(i)), "label": int(labels[i])}


class UciDigits(_UciBase):
  """UCI handwritten digits (sklearn load_digits), bilinear 8x8 -> 32x32, white ink on black."""

  name = "uci_digits"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: stratified 60/40 split, random_state=0."}

  def _image(self, ink: np.ndarray, index: int) -> np.ndarray:
    return np.repeat(to_uint8(ink)[..., None], 3, axis=-1)


class UciDigitsM(_UciBase):
  """UCI digits blended as |digit - photo patch| (MNIST-M style), photos bundled offline."""

  name = "uci_digits_m"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: sklearn china/flower + matplotlib grace_hopper."}

  def _image(self, ink: np.ndarray, index: int) -> np.ndarray:
    return to_uint8(blend(ink, index))
