"""Target entropy minimisation (Grandvalet & Bengio, NeurIPS 2004).

Transfer loss λ · mean_i H(softmax(z_i)) over the unlabeled target batch:
pushes decision boundaries away from dense target regions. Alone it can
collapse onto few classes; it is a baseline and a building block.
Hyperparameters (method.*): weight λ (digits config: 0.1), weight_schedule.
"""

from __future__ import annotations

import dataclasses

from jaxdapt.methods import method_losses as ml
from jaxdapt.methods.base import METHODS, Method


@METHODS.register("entropy_min")
@dataclasses.dataclass(frozen=True)
class EntropyMin(Method):
  def loss(self, params, outputs, progress, rng):
    del params, rng
    value = ml.entropy(outputs["target"]["logits"]).mean()
    return self.weight(progress) * value, {"target_entropy": value}
