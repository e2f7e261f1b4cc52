"""Evaluation: per-domain states (DSBN branches, AdaBN statistics), accuracy and
label-free signals of a split, and the label-free selection criteria (sel_*)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdapt import batchnorm, data, features, methods, sharding
from jaxdapt.analysis import selection
from jaxdapt.errors import ConfigError
from jaxdapt.models.layers import BN_MOMENTUM, batch_norm_override
from jaxdapt.peft import lora
from jaxdapt.step import TrainState, compute_dtype, input_mean_std, normalize
from jaxdapt.trainer.experiment import Experiment
from jaxdapt.tree import named_leaves, path_name

PyTree = Any
DOMAINS = batchnorm.DOMAINS


def eval_target(config: ml_collections.ConfigDict) -> str:
  """The statistics target splits are evaluated with: train.eval_target_bn, or 'target'
  for a method that is AdaBN (Method.recomputes_target_bn)."""
  if methods.METHODS.get(config.method.name).recomputes_target_bn:
    return "target"
  return config.train.eval_target_bn


def _batch_moments(
  params: PyTree, batch_stats: PyTree, batch: dict, *, model, dtype, mean_std
) -> dict[str, Any]:
  """Per BN layer, the mean and biased variance of its input over the batch's real
  (mask) rows, every BN layer normalising by these batch statistics, dropout off."""
  zeros = jax.tree.map(jnp.zeros_like, batch_stats)
  with batch_norm_override("batch", batch["mask"]):
    _, mutated = model.apply(
      {"params": lora.merged(params), "batch_stats": zeros},
      normalize(batch["image"], dtype, mean_std),
      train=False,
      mutable=["batch_stats"],
    )
  # From zero, one update leaves (1 − momentum) × the batch statistic.
  stats = jax.tree.map(lambda x: x / (1.0 - BN_MOMENTUM), mutated["batch_stats"])
  return {"count": batch["mask"].sum(), "stats": stats}


@functools.lru_cache(maxsize=16)
def _moments_fn(model, dtype, mean_std, mesh):
  return jax.jit(
    functools.partial(_batch_moments, model=model, dtype=dtype, mean_std=mean_std),
    out_shardings=sharding.replicated(mesh),
  )


def target_statistics(exp, params: PyTree, batch_stats: PyTree, source) -> PyTree:
  """AdaBN: every BN layer's statistics := the mean and (biased) variance of its input
  over all images of `source` (the target train split; labels unread).

  One pass, no gradient, BN normalising each batch by its own statistics (padding rows
  excluded) and dropout off; per-batch moments are pooled exactly in float64 (Chan et
  al.'s parallel update), so the first BN layer gets the population statistics and
  deeper layers those of inputs normalised batch by batch, as in the paper's
  implementation. `params`, `batch_stats`: one branch (plain layout). Returns
  statistics replicated over exp.mesh.
  """
  fn = _moments_fn(
    exp.model, compute_dtype(exp.config, exp.mesh), input_mean_std(exp.config), exp.mesh
  )
  local = exp.config.data.eval_batch_size // jax.process_count()
  n, mean, m2 = 0.0, None, None
  for batch in data.eval_batches(
    source, batch_size=local, process_index=jax.process_index(), process_count=jax.process_count()
  ):
    out = jax.device_get(fn(params, batch_stats, sharding.global_batch(batch, exp.mesh)))
    nb = float(out["count"])
    if nb == 0:
      continue
    mb = {k: np.asarray(v["mean"], np.float64) for k, v in _by_module(out["stats"]).items()}
    vb = {k: np.asarray(v["var"], np.float64) for k, v in _by_module(out["stats"]).items()}
    if mean is None:
      mean, m2 = mb, {k: vb[k] * nb for k in vb}
    else:
      for k in mean:
        delta, total = mb[k] - mean[k], n + nb
        mean[k] = mean[k] + delta * nb / total
        m2[k] = m2[k] + vb[k] * nb + delta**2 * n * nb / total
    n += nb
  if mean is None:
    raise ConfigError("train.eval_target_bn: the target split has no images to adapt to")

  def pooled(path, leaf):
    module, _, stat = path_name(path).rpartition("/")
    value = mean[module] if stat == "mean" else m2[module] / n
    return np.asarray(value, np.asarray(leaf).dtype)

  stats = jax.tree_util.tree_map_with_path(pooled, jax.device_get(batch_stats))
  return jax.device_put(stats, sharding.replicated(exp.mesh))


def _by_module(stats: PyTree) -> dict[str, dict[str, Any]]:
  out: dict[str, dict[str, Any]] = {}
  for name, leaf in named_leaves(stats):
    module, _, stat = name.rpartition("/")
    out.setdefault(module, {})[stat] = leaf
  return out


def eval_states(exp: Experiment, state: TrainState) -> dict[str, TrainState]:
  """Per domain, the state its splits are evaluated with (jaxdapt/batchnorm.py): under
  method.bn='dsbn' that domain's BN branch; for the target under AdaBN
  (train.eval_target_bn='target' or method adabn) BN statistics recomputed on the
  target train images. Source splits keep the statistics training left."""
  views = {}
  for domain in DOMAINS:
    params, batch_stats = state.params["model"], state.batch_stats
    if exp.config.method.bn == "dsbn":
      params, batch_stats = batchnorm.branch(params, batch_stats, domain)
    if domain == "target" and eval_target(exp.config) == "target":
      batch_stats = target_statistics(exp, params, batch_stats, exp.sources["target"])
    views[domain] = state.replace(params={**state.params, "model": params}, batch_stats=batch_stats)
  return views


def evaluate(exp: Experiment, state: TrainState, split: str) -> dict[str, float]:
  """Metrics of `split` under `state`'s model (one BN branch: see eval_states)."""
  totals = None
  local_batch = exp.config.data.eval_batch_size // jax.process_count()
  for batch in data.eval_batches(
    exp.sources[split],
    batch_size=local_batch,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  ):
    sums = exp.evaluate_batch(
      state.params, state.batch_stats, sharding.global_batch(batch, exp.mesh)
    )
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals["count"])
  mean_entropy = float(totals["entropy"]) / count
  marginal = np.asarray(totals["probs"], np.float64) / count
  marginal_entropy = float(-(marginal * np.log(np.maximum(marginal, 1e-12))).sum())
  # Label-free signals (no labels used): mean prediction entropy, and information
  # maximisation H(E[p]) - E[H(p)] (confident and diverse predictions score high).
  return {
    f"{split}_acc": float(totals["correct"]) / count,
    f"{split}_nll": float(totals["nll"]) / count,
    f"{split}_entropy": mean_entropy,
    f"{split}_im": marginal_entropy - mean_entropy,
  }


SELECTION_SPLITS = ("source", "source_val", "target")


def selection_sources(exp: Experiment) -> dict[str, Any]:
  """Fixed subsets (one draw per run, from the seed) scored at every evaluation."""
  rng = np.random.default_rng(exp.config.seed)
  limit = exp.config.train.selection_points
  return {s: features.subset(exp.sources[s], limit, rng) for s in SELECTION_SPLITS}


def selection_metrics(
  exp: Experiment, views: dict[str, TrainState], forward, subsets
) -> dict[str, float]:
  """Label-free criteria on target TRAIN images (never target labels), logged as sel_*:
  neg_entropy, info_max, snd (softmax), snd_features, neg_dev; all higher = better.
  `views`: eval_states (each split's features from its domain's model)."""
  f = {
    s: features.extract(exp, forward, views[batchnorm.domain_of(s)], subsets[s])
    for s in SELECTION_SPLITS
  }
  scores = selection.criteria(
    target_logits=f["target"]["logits"],
    target_features=f["target"]["features"],
    source_val_logits=f["source_val"]["logits"],
    source_val_labels=f["source_val"]["labels"],
    source_val_features=f["source_val"]["features"],
    source_train_features=f["source"]["features"],
    seed=exp.config.seed,
  )
  return {f"sel_{k}": v for k, v in scores.items() if k != "source_val_acc"}
