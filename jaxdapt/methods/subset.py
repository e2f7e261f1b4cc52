"""Updates of a subset of the parameters, for methods with their own update step.

MCD, SHOT, TENT and ADDA each train only part of {'model': ..., 'method': ...}
in a (sub-)step. `stop_untrained` cuts the gradient to the rest, and
`apply_update` keeps the rest and its optimizer state bit-identical even where
the optimizer would move a leaf with a zero gradient (momentum, weight decay).
So a method's freezing does not depend on the config's optim.rules; the
rules still decide which leaves hold optimizer state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from jaxdapt.step import StepContext, forward_domains
from jaxdapt.tree import path_name

PyTree = Any
Trainable = Callable[[str], bool]


def is_feature_extractor(name: str) -> bool:
  """'model/...' parameters outside the head ('model/head/...'): the encoder / generator."""
  return name.startswith("model/") and not name.startswith("model/head/")


def param_name(path) -> str | None:
  """The 'model/...' or 'method/...' name of a (params or optimizer-state) leaf
  path, found from its dict keys; None for leaves that are not per-parameter
  (step counts)."""
  keys = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
  for i, k in enumerate(keys):
    if k in ("model", "method"):
      return "/".join(keys[i:])
  return None


def stop_untrained(params: PyTree, trainable: Trainable) -> PyTree:
  return jax.tree_util.tree_map_with_path(
    lambda p, x: x if trainable(path_name(p)) else jax.lax.stop_gradient(x), params
  )


def select(new: PyTree, old: PyTree, trainable: Trainable, advance_count: bool) -> PyTree:
  """`new` at the trainable leaves, `old` elsewhere; step counts from `new` iff advance_count."""

  def pick(path, n, o):
    name = param_name(path)
    if name is None:
      return n if advance_count else o
    return n if trainable(name) else o

  return jax.tree_util.tree_map_with_path(pick, new, old)


def apply_update(
  params: PyTree,
  opt_state: PyTree,
  grads: PyTree,
  tx: optax.GradientTransformation,
  trainable: Trainable,
  advance_count: bool = True,
) -> tuple[PyTree, PyTree]:
  """One optimizer step that changes only the trainable leaves (and their state)."""
  updates, new_opt_state = tx.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  return (
    select(new_params, params, trainable, advance_count=True),
    select(new_opt_state, opt_state, trainable, advance_count=advance_count),
  )


def target_step(state, batch: dict, objective: Callable, trainable: Trainable, *, ctx: StepContext):
  """One update from the target batch alone (SHOT, TENT), BatchNorm in training mode.

  `objective(target_outputs) -> (loss, metrics)` sees the target domain's
  features, logits and labels; only `trainable` leaves change.
  """
  rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    params = stop_untrained(params, trainable)
    outputs, stats = forward_domains(
      ctx.model,
      params["model"],
      state.batch_stats,
      batch,
      ("target",),
      bn=ctx.bn,
      dtype=ctx.dtype,
      rng=rng,
      mean_std=ctx.mean_std,
    )
    loss, metrics = objective(outputs["target"])
    return loss, (stats, metrics)

  (loss, (stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  params, opt_state = apply_update(state.params, state.opt_state, grads, ctx.tx, trainable)
  metrics = {"loss": loss, "transfer_loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}
  return state.replace(
    step=state.step + 1, params=params, batch_stats=stats, opt_state=opt_state
  ), metrics
