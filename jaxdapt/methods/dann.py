"""DANN: domain-adversarial training (Ganin & Lempitsky, ICML 2015; JMLR 2016).

A domain classifier learns to tell source features from target features;
features pass through a gradient reversal layer, so the feature extractor is
pushed to make them indistinguishable. Hyperparameters (method.*):
  weight            GRL coefficient λ (paper: 1), ramped by weight_schedule
  weight_schedule   'dann': λ_p = 2/(1+exp(-10p)) - 1 (paper) or 'constant'
  disc_hidden       hidden widths of the domain MLP (paper digits: (100,))
  bsp_weight, bsp_k optional BSP penalty on the features (see bsp.py; 0 = off)
The discriminator's learning rate is set with an optimizer rule on
`method/discriminator/.*` (see jaxdapt/optim.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdapt import losses
from jaxdapt.methods import bsp
from jaxdapt.methods.base import METHODS, Method


class DomainDiscriminator(nn.Module):
  hidden: Sequence[int]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(1)(x)[:, 0]


@METHODS.register("dann")
@dataclasses.dataclass(frozen=True)
class DANN(Method):
  def __post_init__(self):
    bsp.check_fields(self.config)

  @property
  def discriminator(self) -> DomainDiscriminator:
    return DomainDiscriminator(tuple(self.config.disc_hidden))

  def init(self, rng, feature_dim, num_classes):
    del num_classes
    params = self.discriminator.init(rng, jnp.zeros((1, feature_dim)))["params"]
    return {"discriminator": params}

  def loss(self, params, outputs, progress, rng):
    del rng
    coeff = self.weight(progress)
    feats = jnp.concatenate([outputs["source"]["features"], outputs["target"]["features"]])
    feats = losses.gradient_reversal(feats, coeff)
    logits = self.discriminator.apply({"params": params["discriminator"]}, feats)
    n_src = outputs["source"]["features"].shape[0]
    domain = jnp.concatenate([jnp.ones(n_src), jnp.zeros(feats.shape[0] - n_src)])
    loss = losses.binary_cross_entropy_with_logits(logits, domain)
    domain_acc = ((logits > 0) == (domain > 0.5)).mean()
    penalty, extra = bsp.penalty(self.config, outputs)
    return loss + penalty, {
      "domain_loss": loss,
      "domain_acc": domain_acc,
      "grl_coeff": coeff,
      **extra,
    }
