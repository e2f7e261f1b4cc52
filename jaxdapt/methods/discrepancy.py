"""Statistic-matching methods: the transfer loss is a distance between the
source and target feature distributions of each batch.

- `dan`  multi-kernel MMD (Long et al., ICML 2015), Gaussian kernels with
         bandwidths method.mmd_bandwidths × the mean pairwise squared
         distance, unbiased estimator; on the bottleneck/backbone features.
- `deep_coral` covariance alignment (Sun & Saenko, ECCV-W 2016).
Both use weight × weight_schedule(progress) as the trade-off.
"""

from __future__ import annotations

import dataclasses

from jaxdapt import losses
from jaxdapt.methods.base import METHODS, Method


@METHODS.register("dan")
@dataclasses.dataclass(frozen=True)
class DAN(Method):
  def loss(self, params, outputs, progress, rng):
    del params, rng
    mmd = losses.mk_mmd(
      outputs["source"]["features"],
      outputs["target"]["features"],
      tuple(self.config.mmd_bandwidths),
    )
    return self.weight(progress) * mmd, {"mmd": mmd}


@METHODS.register("deep_coral")
@dataclasses.dataclass(frozen=True)
class DeepCORAL(Method):
  def loss(self, params, outputs, progress, rng):
    del params, rng
    value = losses.coral(outputs["source"]["features"], outputs["target"]["features"])
    return self.weight(progress) * value, {"coral": value}
