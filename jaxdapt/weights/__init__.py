"""Pretrained torchvision/timm weights -> jaxdapt checkpoints (`jaxdapt weights`).

The trainer needs only `load_pretrained` and `merge_into`; `read_tensors`
and `convert` are the two halves of the `import` command.
"""

from jaxdapt.weights.convert import ARCHS, Converted, convert, guess_arch
from jaxdapt.weights.errors import WeightsError
from jaxdapt.weights.formats import read_tensors
from jaxdapt.weights.merge import (
  MergeReport,
  PretrainedWeights,
  load_pretrained,
  merge_into,
  save_pretrained,
)

__all__ = [
  "ARCHS",
  "Converted",
  "MergeReport",
  "PretrainedWeights",
  "WeightsError",
  "convert",
  "guess_arch",
  "load_pretrained",
  "merge_into",
  "read_tensors",
  "save_pretrained",
]
