"""Feature spec shared by the project's builders: uint8 RGB 32x32 + class id."""
from __future__ import annotations

import inspect

import numpy as np
from etils import epath
import tensorflow_datasets as tfds

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10


def digit_features() -> tfds.features.FeaturesDict:
  """Tensor (not Image) so writing needs no TF PNG encoder; ClassLabel is TF-free."""
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
      "label": tfds.features.ClassLabel(names=[str(d) for d in range(NUM_CLASSES)]),
  })


class OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base for builders whose data is made locally; `SPLITS` lists their split names.

  Declaring the splits on the class lets `get_source` reject a bad split name
  before spending time generating.
  """
  SPLITS: tuple[str, ...] = ()

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's default probes `importlib_resources` (not installed) for any
    # builder outside its own package; the module file is all it needs.
    return epath.Path(inspect.getfile(cls))

  def split_names(self) -> tuple[str, ...]:
    return self.SPLITS
