"""The contract between the trainer and an adaptation method.

A method adds a loss over the model's outputs on source and target batches
(features, logits, labels, training progress) and may own parameters of its
own (a domain discriminator). It also says which domains the step must
forward and which domain's labels train the classifier, so `source_only`
never pays for a target forward pass and `target_oracle` trains on target
labels without a flag in the trainer.

Methods whose step has a different shape (MCD, ADDA, SHOT, TENT) override
`update_fn` and return their own pure update function; the trainer uses it
instead of the shared one.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import ml_collections

from jaxdapt.registry import Registry

PyTree = Any
# outputs[domain] = {'features': [B, D], 'logits': [B, C], 'labels': [B]}
Outputs = dict[str, dict[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Method:
  """Base method: no transfer loss (plain supervised training on `supervised_domain`)."""

  config: ml_collections.ConfigDict
  domains: tuple[str, ...] = ("source", "target")
  supervised_domain: str = "source"

  def init(self, rng: jax.Array, feature_dim: int, num_classes: int) -> PyTree:
    """Method-owned trainable parameters ({} when none)."""
    del rng, feature_dim, num_classes
    return {}

  def loss(self, params: PyTree, outputs: Outputs, progress: jax.Array,
           rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Transfer loss added to the classification loss, and scalar metrics."""
    del params, outputs, progress, rng
    return 0.0, {}

  def update_fn(self) -> Optional[Callable]:
    """A replacement for the shared update step, or None to use it."""
    return None

  def weight(self, progress: jax.Array) -> jax.Array:
    """Trade-off weight for the transfer loss at this point of training."""
    from jaxdapt.losses import dann_schedule
    w = self.config.weight
    if self.config.weight_schedule == "dann":
      return w * dann_schedule(progress)
    return w * 1.0


def aux_head(config: ml_collections.ConfigDict, num_classes: int):
  """The extra classifier MCD and MDD train beside the model's head (method.aux_head_hidden)."""
  from jaxdapt.models.classifier import MLPHead
  return MLPHead(num_classes, tuple(config.aux_head_hidden))


def init_aux_head(config: ml_collections.ConfigDict, rng: jax.Array, feature_dim: int,
                  num_classes: int) -> PyTree:
  import jax.numpy as jnp
  return aux_head(config, num_classes).init(rng, jnp.zeros((1, feature_dim)), train=False)["params"]


METHODS: Registry[type[Method]] = Registry("method", "method.name")
WEIGHT_SCHEDULES = ("constant", "dann")


def get_method(config: ml_collections.ConfigDict) -> Method:
  return METHODS.get(config.name)(config)
