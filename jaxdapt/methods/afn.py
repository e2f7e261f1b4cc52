"""AFN: adaptive feature norm, stepwise variant SAFN (Xu et al., ICCV 2019).

Larger-norm features transfer better; SAFN enlarges each example's feature
norm by Δr per step:  L = λ [mean_s (‖h‖ − (sg‖h‖ + Δr))² + mean_t (same)],
where sg is stop-gradient (the loss value is always 2Δr²; only its gradient
matters). Applied to the model's features on both domains.
Hyperparameters (method.*): afn_delta_r Δr (paper: 1.0), weight λ (paper:
0.05) with weight_schedule 'constant' (digits config).
"""

from __future__ import annotations

import dataclasses

from jaxdapt.methods import checks
from jaxdapt.methods import method_losses as ml
from jaxdapt.methods.base import METHODS, Method


@METHODS.register("afn")
@dataclasses.dataclass(frozen=True)
class AFN(Method):
  def __post_init__(self):
    checks.positive_number("afn_delta_r", self.config.afn_delta_r)

  def loss(self, params, outputs, progress, rng):
    del params, rng
    value = sum(
      ml.stepwise_feature_norm(outputs[d]["features"], self.config.afn_delta_r)
      for d in ("source", "target")
    )
    norm = ml.safe_norm(outputs["target"]["features"]).mean()
    return self.weight(progress) * value, {"afn": value, "target_feature_norm": norm}
