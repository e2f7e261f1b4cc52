"""AdaBN: adaptive batch normalization (Li, Wang, Shi, Liu & Hou, ICLR-W 2017; Pattern
Recognition 2018).

Train on labeled source only (as source_only), then evaluate the target with every
BatchNorm layer's statistics replaced by the mean and variance of its input over the
target train images; the weights are the source model's. Source splits keep the source
statistics. The recomputation (jaxdapt/batchnorm.py `target_statistics`) runs at each
evaluation; no hyperparameters. The same evaluation after any other method is
train.eval_target_bn='target' ("+AdaBN" in a table). Needs a model with BatchNorm.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from jaxdapt.methods.base import METHODS, Method


@METHODS.register("adabn")
@dataclasses.dataclass(frozen=True)
class AdaBN(Method):
  domains: tuple[str, ...] = ("source",)
  recomputes_target_bn: ClassVar[bool] = True
