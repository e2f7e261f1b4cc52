"""CDAN and CDAN+E: conditional adversarial adaptation (Long et al., NeurIPS 2018).

The domain discriminator sees the features conditioned on the predictions:
the multilinear map T⊗(f, g) = f ⊗ g (flattened outer product of the
features f [D] and the softmax g [C]) or, when D·C > 4096, the randomized
map T⊙(f, g) = (R_f f) ⊙ (R_g g) / √d with fixed Gaussian R_f, R_g (d = 1024).
Gradient reversal (as in `dann`) sits on the map, so the features receive the
reversed gradient; g is treated as a constant there (as in the authors' code).
CDAN+E weights each example's discriminator loss by w = 1 + exp(−H(g)),
normalised to sum 1 per domain (confident examples count more).
Hyperparameters (method.*):
  weight, weight_schedule  GRL coefficient λ (paper: 1, DANN ramp)
  disc_hidden              discriminator MLP (paper: 1024-1024 on ResNet; digits: (100,))
  cdan_random_dim          d of the randomized map (paper: 1024); fixed seed 0
  bsp_weight, bsp_k        optional BSP penalty (see bsp.py)
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

from jaxdapt import losses
from jaxdapt.methods import bsp, checks
from jaxdapt.methods import method_losses as ml
from jaxdapt.methods.base import METHODS
from jaxdapt.methods.dann import DANN


@METHODS.register("cdan")
@dataclasses.dataclass(frozen=True)
class CDAN(DANN):
  entropy_conditioning: ClassVar[bool] = False

  def __post_init__(self):
    checks.positive_int("cdan_random_dim", self.config.cdan_random_dim)
    checks.widths("disc_hidden", self.config.disc_hidden)
    bsp.check_fields(self.config)

  def map_dim(self, feature_dim: int, num_classes: int) -> int:
    full = feature_dim * num_classes
    return full if full <= ml.CDAN_MAX_MULTILINEAR_DIM else self.config.cdan_random_dim

  def conditioned_features(self, features: jax.Array, logits: jax.Array) -> jax.Array:
    probs = jax.nn.softmax(jax.lax.stop_gradient(logits.astype(jnp.float32)), -1)
    d, c = features.shape[-1], probs.shape[-1]
    if d * c <= ml.CDAN_MAX_MULTILINEAR_DIM:
      return ml.multilinear_map(features, probs)
    r_f, r_g = ml.cdan_random_matrices(d, c, self.config.cdan_random_dim)
    return ml.randomized_multilinear_map(features, probs, jnp.asarray(r_f), jnp.asarray(r_g))

  def init(self, rng, feature_dim, num_classes):
    dummy = jnp.zeros((1, self.map_dim(feature_dim, num_classes)))
    return {"discriminator": self.discriminator.init(rng, dummy)["params"]}

  def loss(self, params, outputs, progress, rng):
    del rng
    coeff = self.weight(progress)
    src, tgt = outputs["source"], outputs["target"]
    h = self.conditioned_features(
      jnp.concatenate([src["features"], tgt["features"]]),
      jnp.concatenate([src["logits"], tgt["logits"]]),
    )
    logits = self.discriminator.apply(
      {"params": params["discriminator"]}, losses.gradient_reversal(h, coeff)
    )
    n_src, n_tgt = src["features"].shape[0], tgt["features"].shape[0]
    domain = jnp.concatenate([jnp.ones(n_src), jnp.zeros(n_tgt)])
    per_example = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), domain)
    if self.entropy_conditioning:
      w = jnp.concatenate([ml.entropy_weights(src["logits"]), ml.entropy_weights(tgt["logits"])])
      adv = jnp.sum(w * per_example) / 2.0
    else:
      adv = per_example.mean()
    penalty, extra = bsp.penalty(self.config, outputs)
    domain_acc = ((logits > 0) == (domain > 0.5)).mean()
    return adv + penalty, {
      "domain_loss": adv,
      "domain_acc": domain_acc,
      "grl_coeff": coeff,
      **extra,
    }


@METHODS.register("cdan_e")
@dataclasses.dataclass(frozen=True)
class CDANE(CDAN):
  """CDAN+E: entropy-conditioned example weights on the discriminator loss."""

  entropy_conditioning: ClassVar[bool] = True
