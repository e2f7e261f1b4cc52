"""MME: minimax entropy (Saito et al., ICCV 2019), semi-supervised DA.

The classifier C is a cosine-similarity layer, logits = cos(f, w_c)/T with
L2-normalised features and class weights (model.cosine_temperature T = 0.05,
jaxdapt/models/classifier.py). Besides cross-entropy on the labeled source and
labeled target batches (data.target_labeled_per_class, methods/fewshot.py), the
entropy H of C's predictions on the unlabeled target is
  maximised by C     (moves the class prototypes towards the target features)
  minimised by F     (clusters the target features around the prototypes)
with one gradient reversal between F and C: the loss adds −λ·H(C(GRL(F(x_t)))),
so descent raises H through C and lowers it through F. λ = method.weight (paper
0.1, method.weight_schedule 'constant'). The official code takes two optimizer
steps per iteration (cross-entropy, then the entropy term); here one step on the
sum. The head is re-applied to the reversed target features, so MME works
through `model_loss` and composes with the regularisers.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from jaxdapt import losses
from jaxdapt.errors import ConfigError
from jaxdapt.methods.base import METHODS, Method
from jaxdapt.methods.method_losses import entropy


def adversarial_entropy(
  model, params, features: jax.Array, weight: jax.Array, rng: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """(−λ·mean H(C(GRL(f))), mean H): the head C applied to gradient-reversed features."""
  reversed_features = losses.gradient_reversal(features, jnp.asarray(1.0, jnp.float32))
  logits = model.apply(
    {"params": params}, reversed_features, train=True, method="classify", rngs={"dropout": rng}
  )
  h = entropy(logits).mean()
  return -weight * h, h


@METHODS.register("mme")
@dataclasses.dataclass(frozen=True)
class MME(Method):
  def model_loss(self, model, params, outputs, batch, extra, progress, rng):
    reg, metrics = super().model_loss(model, params, outputs, batch, extra, progress, rng)
    loss, h = adversarial_entropy(
      model,
      params,
      outputs["target"]["features"],
      self.weight(progress),
      jax.random.fold_in(rng, 1),
    )
    return reg + loss, {**metrics, "target_entropy": h}


def check_config(config: ml_collections.ConfigDict) -> None:
  """model.cosine_temperature (run by config.validate)."""
  t = config.model.cosine_temperature
  if isinstance(t, bool) or not isinstance(t, (int, float)) or t < 0:
    raise ConfigError(
      f"model.cosine_temperature: must be a number >= 0 (0: a linear output layer), got {t!r}"
    )
  if config.method.name == "mme" and not t:
    raise ConfigError(
      "model.cosine_temperature: MME's classifier is a cosine layer; set it (paper: 0.05)"
    )
