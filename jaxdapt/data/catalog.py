"""TFDS catalog datasets used by domain-adaptation and robustness work, read TF-free.

They are read with `tfds.data_source` (ArrayRecord: random access, no TensorFlow) once
prepared; preparing them runs TFDS's own builder, which needs TensorFlow
(`pip install 'jaxdapt[prepare]'`). Names with a '/' pick a builder config
(`domainnet/real`, `mnist_corrupted/shot_noise`, `cifar10_corrupted/fog_3`).
"""
from __future__ import annotations

import os

import tensorflow_datasets as tfds

# Every name here resolves (tests check the missing-data message of each); any other
# catalog name works the same way.
NAMES = (
    "mnist", "mnist_corrupted/shot_noise", "svhn_cropped", "cifar10",
    "cifar10_corrupted/gaussian_noise_5", "stl10",
    *(f"domainnet/{d}" for d in ("real", "painting", "clipart", "quickdraw", "infograph",
                                 "sketch")),
    "visual_domain_decathlon/aircraft", "imagenet2012", "imagenet_r", "imagenet_a",
    "imagenet_sketch", "imagenet_v2", "imagenet2012_corrupted/gaussian_noise_3",
)


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
  return (f"\n{builder.name} needs files you download yourself (TFDS cannot fetch them): "
          f"put them in {manual_dir(data_dir)} before preparing, or pass "
          f"download_config=tfds.download.DownloadConfig(manual_dir=...) to "
          f"download_and_prepare. TFDS says: {text}")
