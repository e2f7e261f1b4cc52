"""TENT: fully test-time adaptation by entropy minimization (Wang et al., ICLR 2021).

Starts from a source model (model.init_from, all of it loaded) and adapts
online to the stream of target batches: each batch is predicted and then
used once to minimise the mean prediction entropy mean_i H(softmax(z_i)).
Only the BatchNorm affine parameters (scale, bias) train — the leaves of the
modules that hold BatchNorm statistics, whatever their names; everything else
stays bit-identical. BatchNorm runs in training mode, so each batch is
normalised by its own statistics (the running statistics follow the target
too, which is what the periodic evaluation in evaluation mode uses).
Online accuracy (the paper's protocol): the predictions on each batch come
from the forward pass that computes its loss, before its update. It is
logged as the train metric `online_acc` (target labels serve this metric
only) and reported over the whole run as `target_online_acc` in summary.json.
Paper settings: Adam lr 1e-3, batch 128 (CIFAR); SGD momentum 0.9, lr 2.5e-4,
batch 64 (ImageNet); one pass over the test set. Digits config: see
experiments/digits/tent.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import numpy as np

from jaxdapt import losses
from jaxdapt.errors import ConfigError
from jaxdapt.methods import method_losses as ml
from jaxdapt.methods import subset
from jaxdapt.methods.base import METHODS, SourceFreeMethod
from jaxdapt.step import StepContext
from jaxdapt.tree import named_leaves

PyTree = Any


def batchnorm_affine(batch_stats: PyTree) -> subset.Trainable:
  """Is a 'model/...' parameter the scale or bias of a module holding BatchNorm statistics?"""
  modules = {name.rpartition("/")[0] for name, _ in named_leaves(batch_stats)}

  def trainable(name: str) -> bool:
    module, _, leaf = name.partition("/")[2].rpartition("/")
    return name.startswith("model/") and leaf in ("scale", "bias") and module in modules

  return trainable


@METHODS.register("tent")
@dataclasses.dataclass(frozen=True)
class TENT(SourceFreeMethod):
  has_own_step: ClassVar[bool] = True

  def update_fn(self):
    return tent_train_step

  def summarize(self, train_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """target_online_acc: online accuracy over all steps (rows weighted by the steps they cover)."""
    rows = [r for r in train_rows if "online_acc" in r]
    if not rows:
      return {}
    steps = np.diff([0] + [r["step"] for r in rows])
    acc = np.asarray([r["online_acc"] for r in rows])
    return {"target_online_acc": float((steps * acc).sum() / steps.sum())}


def tent_train_step(state, batch: dict, *, ctx: StepContext):
  """The trainer's update for `tent`: entropy of the target batch, BN affine parameters only."""
  if not state.batch_stats:
    raise ConfigError("method tent: the model has no BatchNorm to adapt; set model.norm='batch'")

  def objective(target):
    entropy = ml.entropy(target["logits"]).mean()
    return entropy, {
      "target_entropy": entropy,
      "online_acc": losses.accuracy(jax.lax.stop_gradient(target["logits"]), target["labels"]),
    }

  return subset.target_step(state, batch, objective, batchnorm_affine(state.batch_stats), ctx=ctx)
