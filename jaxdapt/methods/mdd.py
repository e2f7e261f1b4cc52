"""MDD: margin disparity discrepancy (Zhang et al., ICML 2019).

An auxiliary head f' (this method's parameters, an MLP like the model head)
reads the features through gradient reversal. With h_f = argmax of the main
head (a constant), the transfer loss is
  γ · mean_s −log σ(f'(x))[h_f(x)]  +  mean_t −log(1 − σ(f'(x))[h_f(x)]):
f' minimises it (agree with f on source, disagree on target, i.e. it
maximises the disparity D_γ = −loss); the features receive the reversed
gradient and minimise the disparity. The main head gets no gradient from it.
Hyperparameters (method.*):
  mdd_margin        γ (paper: 2-4; here 4)
  aux_head_hidden   f' hidden widths (set equal to model.head_hidden)
  weight, weight_schedule  GRL coefficient on the features, ramped (the auxiliary head
                    always takes the full loss, trade-off η = 1); the authors' code
                    (thuml/MDD) and Transfer-Learning-Library ramp it to GRL_MAX = 0.1
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jaxdapt import losses
from jaxdapt.methods import checks
from jaxdapt.methods import method_losses as ml
from jaxdapt.methods.base import METHODS, Method, aux_head, init_aux_head
from jaxdapt.models.classifier import MLPHead

GRL_MAX = 0.1  # thuml/MDD GradientReverseLayer, TLlib WarmStartGradientReverseLayer: hi=0.1


@METHODS.register("mdd")
@dataclasses.dataclass(frozen=True)
class MDD(Method):
  def __post_init__(self):
    checks.positive_number("mdd_margin", self.config.mdd_margin)
    checks.widths("aux_head_hidden", self.config.aux_head_hidden)

  def head(self, num_classes: int) -> MLPHead:
    return aux_head(self.config, num_classes)

  def init(self, rng, feature_dim, num_classes):
    return {"aux_head": init_aux_head(self.config, rng, feature_dim, num_classes)}

  def loss(self, params, outputs, progress, rng):
    del rng
    coeff = self.weight(progress)
    src, tgt = outputs["source"], outputs["target"]
    n_src = src["features"].shape[0]
    head = self.head(src["logits"].shape[-1])
    feats = losses.gradient_reversal(jnp.concatenate([src["features"], tgt["features"]]), coeff)
    aux = head.apply({"params": params["aux_head"]}, feats, train=False)
    src_term = ml.mdd_source_disparity(aux[:n_src], src["logits"])
    tgt_term = ml.mdd_target_disparity(aux[n_src:], tgt["logits"])
    value = self.config.mdd_margin * src_term + tgt_term
    return value, {
      "mdd_source": src_term,
      "mdd_target": tgt_term,
      "disparity": -value,
      "grl_coeff": coeff,
    }
