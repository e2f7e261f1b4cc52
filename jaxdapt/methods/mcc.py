"""MCC: minimum class confusion (Jin et al., ECCV 2020).

On the target batch: probabilities at temperature T, p = softmax(z / T);
example weights W_i = B (1 + e^{−H(p_i)}) / Σ_j (1 + e^{−H(p_j)}) (constants);
class confusion C = pᵀ W p normalised row-wise (category normalisation);
loss = (Σ_{j≠j'} C_jj') / |C|. No extra parameters.
Hyperparameters (method.*): mcc_temperature T (paper: 2.5), weight μ
(paper: 1), weight_schedule (digits config: constant).
"""

from __future__ import annotations

import dataclasses

from jaxdapt.methods import checks
from jaxdapt.methods import method_losses as ml
from jaxdapt.methods.base import METHODS, Method


@METHODS.register("mcc")
@dataclasses.dataclass(frozen=True)
class MCC(Method):
  def __post_init__(self):
    checks.positive_number("mcc_temperature", self.config.mcc_temperature)

  def loss(self, params, outputs, progress, rng):
    del params, rng
    value = ml.minimum_class_confusion(outputs["target"]["logits"], self.config.mcc_temperature)
    return self.weight(progress) * value, {"class_confusion": value}
