"""The contract between the trainer and an adaptation method.

A method adds a loss over the model's outputs on source and target batches
(features, logits, labels, training progress) and may own parameters of its
own (a domain discriminator). It also says which domains the step must
forward and which domain's labels train the classifier, so `source_only`
never pays for a target forward pass and `target_oracle` trains on target
labels without a flag in the trainer.

Methods whose step has a different shape (MCD, ADDA, SHOT, TENT) override
`update_fn` and return their own pure update function; the trainer uses it
instead of the shared one. Such a step that does not split its batch into
micro-batches sets `accumulates_gradients = False`, so train.grad_accum_steps > 1
is refused for it (config.validate) instead of silently ignored.

Methods that need non-trainable inputs computed outside the step (SHOT's
class centroids over the whole target set, ADDA's frozen source encoder)
override `refresh`: the trainer calls it before the first step (also on
resume) and then every method.refresh_every steps, and passes its result as
a third argument to the update, `update(state, batch, extra)`. Methods that
adapt a trained model (`adapts_trained_model`) must start from
model.init_from with nothing left out (config.validate checks it). A method
with `recomputes_target_bn` (AdaBN) has the trainer evaluate target splits with
BatchNorm statistics recomputed on the target (jaxdapt/batchnorm.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections

from jaxdapt.losses import dann_schedule
from jaxdapt.models.classifier import MLPHead
from jaxdapt.registry import Registry

PyTree = Any
# The k labeled target examples per class (data.target_labeled_per_class) travel as a
# third domain of this name (methods/fewshot.py).
LABELED = "target_labeled"
# outputs[domain] = {'features': [B, D], 'logits': [B, C], 'labels': [B]}
Outputs = dict[str, dict[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Method:
  """Base method: no transfer loss (plain supervised training on `supervised_domain`)."""

  config: ml_collections.ConfigDict
  domains: tuple[str, ...] = ("source", "target")
  supervised_domain: str | tuple[str, ...] = "source"  # a tuple: CE over their concatenation
  # Add-on term against forgetting (methods/regularizers.py), from config.regularizer.
  regularizer: Any = None
  adapts_trained_model: ClassVar[bool] = False
  recomputes_target_bn: ClassVar[bool] = False
  # The update splits its batch over ctx.grad_accum_steps (the shared step.train_step, or a
  # step built on it).
  accumulates_gradients: ClassVar[bool] = True
  # update_fn returns a step of its own: no k-shot target batch, no regulariser.
  has_own_step: ClassVar[bool] = False

  def init(self, rng: jax.Array, feature_dim: int, num_classes: int) -> PyTree:
    """Method-owned trainable parameters ({} when none)."""
    del rng, feature_dim, num_classes
    return {}

  def loss(
    self, params: PyTree, outputs: Outputs, progress: jax.Array, rng: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Transfer loss added to the classification loss, and scalar metrics."""
    del params, outputs, progress, rng
    return 0.0, {}

  def model_loss(
    self,
    model,
    params: PyTree,
    outputs: Outputs,
    batch: dict,
    extra: PyTree,
    progress: jax.Array,
    rng: jax.Array,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Terms that need the model itself (`params`: the model's): the attached regulariser,
    plus what a method that re-applies the head adds (MME). `extra`: `refresh`'s result."""
    del progress
    if self.regularizer is None:
      return 0.0, {}
    return self.regularizer.loss(model, params, outputs, batch, extra, rng)

  def update_fn(self) -> Callable | None:
    """A replacement for the shared update step (set has_own_step), or None to use it.
    It is called as `update(state, batch[, extra], *, ctx)` with a step.StepContext."""
    return None

  def supervised_domains(self) -> tuple[str, ...]:
    """The domains whose labels train the classifier (`supervised_domain`: a name or a tuple)."""
    d = self.supervised_domain
    return (d,) if isinstance(d, str) else tuple(d)

  def supervised_outputs(self, outputs: Outputs) -> dict[str, jax.Array]:
    """Logits and labels of the supervised domains, concatenated (one domain: as is)."""
    domains = self.supervised_domains()
    if len(domains) == 1:
      return outputs[domains[0]]
    return concat(outputs, domains, ("logits", "labels"))

  def refresh(self, exp, state) -> PyTree | None:
    """The update's non-trainable third argument, from the experiment (`train.Experiment`:
    model, data, config) and the current state; None: the update takes two arguments.
    By default the regulariser's starting model (None without one)."""
    return None if self.regularizer is None else self.regularizer.refresh(exp, state)

  def summarize(self, train_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Method-specific entries of summary.json, from the logged train rows."""
    del train_rows
    return {}

  def weight(self, progress: jax.Array) -> jax.Array:
    """Trade-off weight for the transfer loss at this point of training."""
    w = self.config.weight
    if self.config.weight_schedule == "dann":
      return w * dann_schedule(progress)
    return w * 1.0


@dataclasses.dataclass(frozen=True)
class SourceFreeMethod(Method):
  """Adapts a trained source model (model.init_from) from target batches alone (SHOT, TENT)."""

  domains: tuple[str, ...] = ("target",)
  adapts_trained_model: ClassVar[bool] = True
  accumulates_gradients: ClassVar[bool] = False  # subset.target_step: one batch


def concat(
  outputs: Outputs, domains: tuple[str, ...], keys: tuple[str, ...]
) -> dict[str, jax.Array]:
  """outputs[d][key] of the listed domains, concatenated along the batch."""
  return {k: jnp.concatenate([outputs[d][k] for d in domains]) for k in keys}


def aux_head(config: ml_collections.ConfigDict, num_classes: int):
  """The extra classifier MCD and MDD train beside the model's head (method.aux_head_hidden)."""
  return MLPHead(num_classes, tuple(config.aux_head_hidden))


def init_aux_head(
  config: ml_collections.ConfigDict, rng: jax.Array, feature_dim: int, num_classes: int
) -> PyTree:
  return aux_head(config, num_classes).init(rng, jnp.zeros((1, feature_dim)), train=False)["params"]


METHODS: Registry[type[Method]] = Registry("method", "method.name")
WEIGHT_SCHEDULES = ("constant", "dann")


def get_method(config: ml_collections.ConfigDict) -> Method:
  return METHODS.get(config.name)(config)
