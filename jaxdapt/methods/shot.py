"""SHOT: source hypothesis transfer (Liang et al., ICML 2020, "Do we really need to
access the source data? Source hypothesis transfer for unsupervised domain adaptation").

Stage 1 trains a source model with label smoothing ε = 0.1
(experiments/digits/shot_source.py). Stage 2 (this method) starts from it
(model.init_from, the head loaded too) and sees neither source data nor any
label: the hypothesis (the head, `model/head/...`) stays fixed and the feature
extractor minimises, on target batches,
  L = L_ent + L_div + β · CE(z, ŷ)     (information maximisation + self-supervision)
with L_ent = mean_i H(p_i), L_div = −H(p̄) and ŷ the pseudo-labels of
`method_losses.shot_centroids`: class centroids in (L2-normalised) feature
space, weighted by the predictions, refined once by nearest-centroid
assignment (cosine distance). `refresh` recomputes the centroids over the
whole target train split in evaluation mode every method.refresh_every steps
(paper: every epoch). A batch's pseudo-labels are the nearest centroids of its
evaluation-mode features under the current parameters: batches carry no
example index, so the per-example labels of the authors' code (fixed for an
epoch) are not available. (Their code also appends a constant 1 to the
features before normalising; not done here.)
Hyperparameters: β = method.shot_beta (0.3); SGD, momentum 0.9, lr 0.01 with
the (1 + 10p)^-0.75 decay (digits config); the head frozen.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax

from jaxdapt import features, losses, sharding
from jaxdapt.methods import checks, subset
from jaxdapt.methods import method_losses as ml
from jaxdapt.methods.base import METHODS, SourceFreeMethod
from jaxdapt.step import StepContext, apply_model, normalize

PyTree = Any


@METHODS.register("shot")
@dataclasses.dataclass(frozen=True)
class SHOT(SourceFreeMethod):
  _cache: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

  def __post_init__(self):
    checks.positive_number("shot_beta", self.config.shot_beta, allow_zero=True)

  has_own_step: ClassVar[bool] = True

  def update_fn(self):
    return shot_train_step

  def refresh(self, exp, state) -> dict[str, jax.Array]:
    """Centroids (c¹, valid) over the target train split's evaluation-mode features."""

    if "forward" not in self._cache:  # one jitted forward per experiment (= per Method)
      self._cache["forward"] = features.forward_fn(exp)
    target = features.extract(exp, self._cache["forward"], state, exp.sources["target"])
    centroids, valid = _centroids(target["features"], target["logits"])  # labels unread
    return jax.device_put({"centroids": centroids, "valid": valid}, sharding.replicated(exp.mesh))


_centroids = jax.jit(ml.shot_centroids)


def shot_train_step(state, batch: dict, extra: dict[str, jax.Array], *, ctx: StepContext):
  """The trainer's update for `shot`: IM + β·CE(pseudo-labels) on the target batch alone."""
  out, _ = apply_model(
    ctx.model,
    state.params["model"],
    state.batch_stats,
    normalize(batch["target"]["image"], ctx.dtype, ctx.mean_std),
    train=False,
  )
  pseudo = ml.nearest_centroid(
    jax.lax.stop_gradient(out["features"]), extra["centroids"], extra["valid"]
  )
  beta = ctx.method.config.shot_beta

  def objective(target):
    im, mean_entropy, diversity = ml.information_maximization(target["logits"])
    pseudo_ce = losses.cross_entropy(target["logits"], pseudo)
    return im + beta * pseudo_ce, {
      "im_loss": im,
      "target_entropy": mean_entropy,
      "diversity": diversity,
      "pseudo_ce": pseudo_ce,
    }

  return subset.target_step(state, batch, objective, subset.is_feature_extractor, ctx=ctx)
