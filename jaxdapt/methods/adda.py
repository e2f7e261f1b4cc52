"""ADDA: adversarial discriminative domain adaptation (Tzeng et al., CVPR 2017).

Stage 1 trains a source encoder M_s and classifier C on labeled source
(source_only). Stage 2 (this method) starts from that run (model.init_from,
all of it loaded):
  M_s   the stage-1 encoder, fixed. It is not a parameter: `refresh` loads it
        from model.init_from (at start and on resume, so it is never the
        adapted encoder) and the update takes it as a constant; it runs in
        evaluation mode (stage-1 running statistics).
  M_t   the target encoder: the model's backbone (+ bottleneck), initialised
        from M_s and trained (BatchNorm in training mode on target batches).
  C     the model head, loaded and fixed: evaluation is C(M_t(x)), the usual one.
  D     a domain discriminator on the features (`method/discriminator`,
        hidden widths method.disc_hidden; paper digits: 500-500, ReLU).
Each step alternates
  D step  min_D   BCE(D(M_s(x_s)), 1) + BCE(D(M_t(x_t)), 0)   (mean over both batches)
  M step  min_M_t BCE(D(M_t(x_t)), 1)                          (inverted labels, GAN loss)
with one optimizer (its step count advances once per step); no labels are
used. method.bn and method.weight are not used.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from jaxdapt import losses
from jaxdapt.init_from import load_init_from
from jaxdapt.methods import checks, subset
from jaxdapt.methods.base import METHODS, Method
from jaxdapt.methods.dann import DomainDiscriminator
from jaxdapt.step import StepContext, apply_model, forward_domains, normalize

PyTree = Any
SUBSTEPS = ("D", "M")


def is_discriminator(name: str) -> bool:
  return name.startswith("method/discriminator/")


@METHODS.register("adda")
@dataclasses.dataclass(frozen=True)
class ADDA(Method):
  adapts_trained_model: ClassVar[bool] = True
  accumulates_gradients: ClassVar[bool] = False  # D and M sub-steps on the whole batch

  def __post_init__(self):
    checks.widths("disc_hidden", self.config.disc_hidden)

  @property
  def discriminator(self) -> DomainDiscriminator:
    return DomainDiscriminator(tuple(self.config.disc_hidden))

  def init(self, rng, feature_dim, num_classes):
    del num_classes
    return {"discriminator": self.discriminator.init(rng, jnp.zeros((1, feature_dim)))["params"]}

  has_own_step: ClassVar[bool] = True

  def update_fn(self):
    return adda_train_step

  def refresh(self, exp, state) -> dict[str, PyTree]:
    """The source encoder M_s: the model variables of model.init_from (the stage-1 run)."""
    source = load_init_from(exp, state)
    return {"params": source.params["model"], "batch_stats": source.batch_stats}


def adda_loss(
  kind: str,
  params: PyTree,
  source_model: dict[str, PyTree],
  batch_stats: PyTree,
  batch: dict,
  rng: jax.Array,
  *,
  model,
  method: ADDA,
  dtype,
  mean_std,
) -> tuple[jax.Array, tuple[PyTree, dict[str, jax.Array]]]:
  """The 'D' or 'M' sub-step's loss and (target encoder batch_stats, metrics).

  Gradients reach only that sub-step's parameters (D, or M_t), never `source_model`.
  """
  if kind not in SUBSTEPS:
    raise ValueError(f"ADDA sub-step must be one of {SUBSTEPS}, got {kind!r}")
  params = subset.stop_untrained(
    params, is_discriminator if kind == "D" else subset.is_feature_extractor
  )
  outputs, new_stats = forward_domains(
    model,
    params["model"],
    batch_stats,
    batch,
    ("target",),
    bn="separate",
    dtype=dtype,
    rng=rng,
    mean_std=mean_std,
  )
  target = outputs["target"]["features"]
  disc = functools.partial(
    method.discriminator.apply, {"params": params["method"]["discriminator"]}
  )
  if kind == "M":
    loss = losses.binary_cross_entropy_with_logits(disc(target), jnp.ones(target.shape[0]))
    return loss, (new_stats, {"generator_loss": loss})
  source_model = jax.lax.stop_gradient(source_model)
  out, _ = apply_model(
    model,
    source_model["params"],
    source_model["batch_stats"],
    normalize(batch["source"]["image"], dtype, mean_std),
    train=False,
  )
  logits = disc(jnp.concatenate([out["features"], target]))
  domain = jnp.concatenate([jnp.ones(out["features"].shape[0]), jnp.zeros(target.shape[0])])
  loss = losses.binary_cross_entropy_with_logits(logits, domain)
  return loss, (
    new_stats,
    {"domain_loss": loss, "domain_acc": ((logits > 0) == (domain > 0.5)).mean()},
  )


def adda_train_step(state, batch: dict, source_model: dict[str, PyTree], *, ctx: StepContext):
  """The trainer's update for `adda`: a D step, then an M step (see module doc)."""
  rng = jax.random.fold_in(state.rng, state.step)
  tx = ctx.tx
  loss = functools.partial(
    adda_loss,
    source_model=source_model,
    batch=batch,
    model=ctx.model,
    method=ctx.method,
    dtype=ctx.dtype,
    mean_std=ctx.mean_std,
  )
  grad = jax.value_and_grad(loss, argnums=1, has_aux=True)
  # D step: its forward's running statistics are dropped, so they move once per step.
  (_, (_, d_metrics)), grads = grad(
    "D", state.params, batch_stats=state.batch_stats, rng=jax.random.fold_in(rng, 0)
  )
  params, opt_state = subset.apply_update(
    state.params, state.opt_state, grads, tx, is_discriminator, advance_count=True
  )
  (m_loss, (stats, m_metrics)), grads = grad(
    "M", params, batch_stats=state.batch_stats, rng=jax.random.fold_in(rng, 1)
  )
  params, opt_state = subset.apply_update(
    params, opt_state, grads, tx, subset.is_feature_extractor, advance_count=False
  )
  metrics = {
    "loss": m_loss,
    "transfer_loss": m_loss,
    "grad_norm": optax.tree.norm(grads),
    **d_metrics,
    **m_metrics,
  }
  return state.replace(
    step=state.step + 1, params=params, batch_stats=stats, opt_state=opt_state
  ), metrics
