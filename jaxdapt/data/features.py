"""Feature spec shared by the project's builders: uint8 RGB 32x32 + class id."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10


def digit_features(names: Sequence[str] | None = None) -> tfds.features.FeaturesDict:
  """Tensor (not Image) so writing needs no TF PNG encoder; ClassLabel is TF-free.

  `names`: the class names (default '0'..'9').
  """
  names = list(names) if names is not None else [str(d) for d in range(NUM_CLASSES)]
  return tfds.features.FeaturesDict(
    {
      "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
      "label": tfds.features.ClassLabel(names=names),
    }
  )


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

  def check_inputs(self) -> None:
    """Raises DatasetNotPreparedError if generating would fail for want of input files.

    Called before generation starts, so a missing input stops with its message
    instead of a half-written dataset. Builders that need nothing from disk keep this.
    """
