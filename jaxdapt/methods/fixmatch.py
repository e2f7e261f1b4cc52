"""FixMatch self-training (Sohn et al., NeurIPS 2020) for domain adaptation, as the
FixMatch baselines of UDA papers use it: the labeled set is the source, the unlabeled
set the target.

  L = CE_source + λ · (1/B) Σ_i 1[max_c p_ic ≥ τ] · CE(z_i^strong, argmax_c p_ic),
  p_i = softmax(z_i^weak), averaged over all B target images (not only the confident).

The weak view is the target batch as the pipeline delivers it (data.augment='shift');
the strong view is RandAugment-lite + Cutout of the same images, made on device inside
the step (jaxdapt/data/augment.py). The pseudo-labels and the mask carry no gradient.
Source, weak and strong views are forwarded under the step's BatchNorm policy (joint:
one pass over all three, as FixMatch does; separate / dsbn: the two target views in
one pass). Paper: τ = 0.95, λ = 1 constant, μ = 7 unlabeled per labeled image; here one
target image per source image (data.batch_size each). Config: method.fixmatch_threshold
τ, method.weight λ with method.weight_schedule (experiments/digits/fixmatch.py:
constant), method.fixmatch_ops (RandAugment N, 2), method.fixmatch_cutout (0.5 side).
Logged: pseudo_mask (fraction of confident target images) and pseudo_acc (accuracy of
the confident pseudo-labels; target labels serve this metric only).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

from jaxdapt.data import augment
from jaxdapt.errors import ConfigError
from jaxdapt.methods import checks
from jaxdapt.methods.base import METHODS, Method
from jaxdapt.step import StepContext, train_step

STRONG_VIEW = "target_strong"
_AUGMENT_STREAM = 0x5F  # folded into the step's key: the strong view's own random stream


def fixmatch_loss(
  weak_logits: jax.Array, strong_logits: jax.Array, threshold: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(loss, hard pseudo-labels, mask): masked CE of the strong view, mean over the batch."""
  probs = jax.nn.softmax(jax.lax.stop_gradient(weak_logits).astype(jnp.float32))
  pseudo = jnp.argmax(probs, -1)
  mask = (probs.max(-1) >= threshold).astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(strong_logits.astype(jnp.float32), pseudo)
  return (mask * ce).mean(), pseudo, mask


@METHODS.register("fixmatch")
@dataclasses.dataclass(frozen=True)
class FixMatch(Method):
  def __post_init__(self):
    c = self.config
    checks.positive_int("fixmatch_ops", c.fixmatch_ops)
    for field, value, ok, allowed in (
      ("fixmatch_threshold", c.fixmatch_threshold, lambda v: 0 < v <= 1, "(0, 1]"),
      ("fixmatch_cutout", c.fixmatch_cutout, lambda v: 0 <= v < 1, "[0, 1)"),
    ):
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        raise ConfigError(f"method.{field}: must be in {allowed}, got {value!r}")

  has_own_step: ClassVar[bool] = True

  def update_fn(self):
    return fixmatch_train_step

  def loss(self, params, outputs, progress, rng):
    del params, rng
    target = outputs["target"]
    loss, pseudo, mask = fixmatch_loss(
      target["logits"], outputs[STRONG_VIEW]["logits"], self.config.fixmatch_threshold
    )
    correct = (pseudo == target["labels"]).astype(jnp.float32)
    return self.weight(progress) * loss, {
      "pseudo_ce": loss,
      "pseudo_mask": mask.mean(),
      "pseudo_acc": (mask * correct).sum() / jnp.maximum(mask.sum(), 1.0),
    }


def fixmatch_train_step(state, batch: dict, extra=None, *, ctx: StepContext):
  """The shared step (step.train_step) with the target's strong view added to the batch;
  `extra`: refresh's result, passed on (an attached regulariser's)."""
  method = ctx.method
  key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), _AUGMENT_STREAM)
  target = batch["target"]
  strong = augment.strong_augment(
    target["image"],
    key,
    num_ops=method.config.fixmatch_ops,
    cutout_frac=method.config.fixmatch_cutout,
  )
  batch = {**batch, STRONG_VIEW: {"image": strong, "label": target["label"]}}
  with_strong = dataclasses.replace(method, domains=method.domains + (STRONG_VIEW,))
  return train_step(state, batch, extra, ctx=dataclasses.replace(ctx, method=with_strong))
