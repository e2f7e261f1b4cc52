"""USPS, MNIST-M and SynNumbers from the files their releases ship, never downloaded.

Stored as uint8 pixels at their native size (`tfds.features.Tensor`: 16x16x1, 28x28x3,
32x32x3), unlike the folder datasets: the images are tiny, so pixels cost no more than
PNGs and reading needs no decoding. A protocol asks for another size with a view name
(`usps@28x28x1`, views.py). Folders are found as in folder_builders.py
($JAXDAPT_<NAME>_DIR, $JAXDAPT_MANUAL_DIR/<name>, <data_dir>/downloads/manual/<name>).

  usps         usps.h5 (groups train/test, data [N,256] in [0,1], target) (needs h5py),
               or LIBSVM's usps.bz2 + usps.t.bz2 (labels 1..10 -> 0..9, pixels in [-1,1]),
               or TLlib's image_list/usps_{train,test}.txt + the images they list
  mnist_m      Ganin's mnist_m/ folder: mnist_m_{train,test}/*.png +
               mnist_m_{train,test}_labels.txt ('00000000.png 5' per line)
  syn_numbers  Ganin's SynNumbers ('SynDigits'): synth_{train,test}_32x32.mat (X [32,32,3,N],
               y [N,1]; SVHN's convention 10 -> 0 is undone when present)
"""

from __future__ import annotations

import bz2
import os
from collections.abc import Callable

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxdapt.data.features import OfflineBuilder
from jaxdapt.data.folder_builders import (
  find_root,
  image_label_info,
  incomplete,
  read_image_list,
  shorten,
)
from jaxdapt.errors import DatasetNotPreparedError

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (uint8 images, int64 labels)


class _DigitFiles(OfflineBuilder, skip_registration=True):
  """A digit domain read from its release files into memory, then written as pixels."""

  TITLE = ""
  SHAPE: tuple[int, int, int] = (0, 0, 0)
  SPLITS = ("train", "test")
  LAYOUT = ""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: native size, uint8 pixels."}

  def _read(self, root: str) -> Arrays:
    raise NotImplementedError

  def arrays(self) -> Arrays:
    """Every split, validated; read once per builder (check_inputs, then generation)."""
    if getattr(self, "_arrays", None) is None:
      root = find_root(
        f"{self.TITLE} ({self.name})", self.name, os.fspath(self.data_dir_root), self.LAYOUT
      )
      arrays = self._read(root)
      for split, (images, labels) in arrays.items():
        if images.shape[1:] != self.SHAPE or len(images) != len(labels) or not len(labels):
          raise incomplete(
            self.TITLE,
            root,
            f"split {split}: {images.shape} images, "
            f"{len(labels)} labels; expected N x {self.SHAPE}",
            self.LAYOUT,
          )
        if labels.min() < 0 or labels.max() > 9:
          raise incomplete(self.TITLE, root, f"split {split}: labels outside 0..9", self.LAYOUT)
      self._arrays = arrays
    return self._arrays

  def check_inputs(self) -> None:
    self.arrays()

  def _info(self) -> tfds.core.DatasetInfo:
    return image_label_info(
      self, tfds.features.Tensor(shape=self.SHAPE, dtype=np.uint8), [str(d) for d in range(10)]
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing is downloaded
    return {split: self._generate_examples(*pair) for split, pair in self.arrays().items()}

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": int(label)}


def read_files(
  root: str,
  rows: list[tuple[str, int]],
  load: Callable[[str], np.ndarray],
  title: str,
  layout: str,
  what: str,
) -> tuple[np.ndarray, np.ndarray]:
  """Images `load`ed from root/path for each (path, label) row; all missing ones named."""
  missing = [p for p, _ in rows if not os.path.isfile(os.path.join(root, p))]
  if missing:
    raise incomplete(
      title,
      root,
      f"{what} lists {len(missing)} image(s) that are not there: {shorten(missing)}",
      layout,
    )
  images = np.stack([load(os.path.join(root, p)) for p, _ in rows])
  return images, np.array([label for _, label in rows], np.int64)


def _grey16(path: str) -> np.ndarray:
  with Image.open(path) as im:
    im = im.convert("L")
    if im.size != (16, 16):
      im = im.resize((16, 16), Image.Resampling.BICUBIC)
    return np.asarray(im)[..., None]


def read_libsvm(path: str) -> tuple[np.ndarray, np.ndarray]:
  """LIBSVM USPS: 'label i:v ...' with label 1..10 and v in [-1, 1] -> uint8[N,16,16,1], 0..9.

  Pixels are floor((v + 1) / 2 * 255), as torchvision's USPS computes them.
  """
  images, labels = [], []
  with bz2.open(path, "rt") as f:
    for line in f:
      parts = line.split()
      if not parts:
        continue
      x = np.zeros(256, np.float32)  # LIBSVM omits zeros
      for item in parts[1:]:
        i, v = item.split(":")
        x[int(i) - 1] = float(v)
      images.append(((x + 1) / 2 * 255).astype(np.uint8).reshape(16, 16, 1))
      labels.append(int(float(parts[0])) - 1)
  return np.stack(images), np.array(labels, np.int64)


class Usps(_DigitFiles):
  """USPS handwritten digits (Hull, 1994): 7,291 train and 2,007 test, 16x16 grey."""

  name = "usps"
  TITLE, SHAPE = "USPS", (16, 16, 1)
  BZ2 = {"train": "usps.bz2", "test": "usps.t.bz2"}
  LISTS = {"train": "image_list/usps_train.txt", "test": "image_list/usps_test.txt"}
  LAYOUT = (
    "  <dir>/usps.h5   (groups train/ and test/ with data and target; needs h5py)\n"
    "  or <dir>/usps.bz2 + <dir>/usps.t.bz2   (LIBSVM's release)\n"
    "  or <dir>/image_list/usps_train.txt + usps_test.txt + the images they list "
    "(Transfer-Learning-Library)"
  )

  def _read(self, root: str) -> Arrays:
    has = lambda files: all(os.path.isfile(os.path.join(root, f)) for f in files)
    if has(["usps.h5"]):
      return self._read_h5(os.path.join(root, "usps.h5"))
    if has(self.BZ2.values()):
      return {s: read_libsvm(os.path.join(root, f)) for s, f in self.BZ2.items()}
    if has(self.LISTS.values()):
      return {
        s: read_files(
          root, read_image_list(os.path.join(root, f)), _grey16, self.TITLE, self.LAYOUT, f
        )
        for s, f in self.LISTS.items()
      }
    present = [
      f
      for f in ("usps.h5", *self.BZ2.values(), *self.LISTS.values())
      if os.path.isfile(os.path.join(root, f))
    ]
    raise incomplete(
      self.TITLE,
      root,
      f"no complete release found (present: {', '.join(present) or 'none of them'})",
      self.LAYOUT,
    )

  def _read_h5(self, path: str) -> Arrays:
    try:
      import h5py
    except ImportError:
      raise DatasetNotPreparedError(
        f"{path}: reading .h5 needs h5py (pip install h5py, or 'jaxdapt[prepare]'); or use "
        "LIBSVM's usps.bz2 + usps.t.bz2 instead"
      ) from None
    out = {}
    with h5py.File(path, "r") as f:
      for split in self.SPLITS:
        data = np.asarray(f[split]["data"], np.float32)
        images = np.clip(np.round(data * 255), 0, 255).astype(np.uint8).reshape(-1, 16, 16, 1)
        out[split] = images, np.asarray(f[split]["target"], np.int64).reshape(-1)
    return out


class MnistM(_DigitFiles):
  """MNIST-M (Ganin & Lempitsky, 2015): MNIST digits blended over BSDS500 patches, 28x28
  colour; 59,001 train and 9,001 test in the original release."""

  name = "mnist_m"
  TITLE, SHAPE = "MNIST-M", (28, 28, 3)
  LAYOUT = (
    "  <dir>/mnist_m_train/*.png + <dir>/mnist_m_train_labels.txt\n"
    "  <dir>/mnist_m_test/*.png + <dir>/mnist_m_test_labels.txt\n"
    "  ('00000000.png 5' per line; <dir> may also hold them in a mnist_m/ folder)"
  )

  def _read(self, root: str) -> Arrays:
    if os.path.isdir(os.path.join(root, "mnist_m")):
      root = os.path.join(root, "mnist_m")
    out = {}
    for split in self.SPLITS:
      labels_file = f"mnist_m_{split}_labels.txt"
      if not os.path.isfile(os.path.join(root, labels_file)):
        raise incomplete(self.TITLE, root, f"{labels_file} is missing", self.LAYOUT)
      rows = [
        (os.path.join(f"mnist_m_{split}", p), label)
        for p, label in read_image_list(os.path.join(root, labels_file))
      ]
      out[split] = read_files(root, rows, _rgb, self.TITLE, self.LAYOUT, labels_file)
    return out


def _rgb(path: str) -> np.ndarray:
  with Image.open(path) as im:
    return np.asarray(im.convert("RGB"))


class SynNumbers(_DigitFiles):
  """SynNumbers / 'SynDigits' (Ganin & Lempitsky, 2015): rendered digits, 32x32 colour."""

  name = "syn_numbers"
  TITLE, SHAPE = "SynNumbers", (32, 32, 3)
  FILES = {"train": "synth_train_32x32.mat", "test": "synth_test_32x32.mat"}
  LAYOUT = (
    "  <dir>/synth_train_32x32.mat + <dir>/synth_test_32x32.mat   (MATLAB v5: X "
    "[32,32,3,N] uint8, y [N,1])"
  )

  def _read(self, root: str) -> Arrays:
    from scipy.io import loadmat

    missing = [f for f in self.FILES.values() if not os.path.isfile(os.path.join(root, f))]
    if missing:
      raise incomplete(self.TITLE, root, f"missing {', '.join(missing)}", self.LAYOUT)
    out = {}
    for split, f in self.FILES.items():
      try:
        mat = loadmat(os.path.join(root, f), variable_names=["X", "y"])
      except (ValueError, NotImplementedError, OSError) as e:
        raise incomplete(
          self.TITLE, root, f"{f}: not a readable MATLAB v5 file ({e})", self.LAYOUT
        ) from None
      if "X" not in mat or "y" not in mat:
        raise incomplete(self.TITLE, root, f"{f} has no X and y", self.LAYOUT)
      labels = np.asarray(mat["y"], np.int64).reshape(-1)
      out[split] = (
        np.ascontiguousarray(np.moveaxis(np.asarray(mat["X"], np.uint8), -1, 0)),
        np.where(labels == 10, 0, labels),
      )
    return out
