"""BSP: batch spectral penalization (Chen et al., ICML 2019), an add-on term.

Adversarial alignment lets a few large singular values dominate the feature
matrices, which hurts discriminability; BSP penalises them on each domain's
batch feature matrix F [B, D]:  L_bsp = β Σ_{i≤k} (σ_{s,i}² + σ_{t,i}²).
Hyperparameters (method.*): bsp_weight β (paper: 1e-4; 0 = off), bsp_k k
(paper: 1). Applied by `dann` and `cdan`/`cdan_e`; other methods ignore it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jaxdapt.methods import checks
from jaxdapt.methods.base import Outputs
from jaxdapt.methods.method_losses import batch_spectral_penalty


def check_fields(config: ml_collections.ConfigDict) -> None:
  checks.positive_number("bsp_weight", config.bsp_weight, allow_zero=True)
  checks.positive_int("bsp_k", config.bsp_k)


def penalty(
  config: ml_collections.ConfigDict, outputs: Outputs
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """β × (source + target penalty) and its metric; (0, {}) when bsp_weight is 0."""
  if not config.bsp_weight:
    return jnp.zeros((), jnp.float32), {}
  value = sum(
    batch_spectral_penalty(outputs[d]["features"], config.bsp_k) for d in ("source", "target")
  )
  return config.bsp_weight * value, {"bsp": value}
