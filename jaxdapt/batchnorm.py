"""BatchNorm across domains: DSBN branches, AdaBN statistics, BN freezing for fine-tuning.

Two knobs, one concept each:
  config.method.bn — how a training step's forward shares BatchNorm between the
    domains it sees (step.forward_domains):
      joint     one pass over all forwarded images: statistics over both domains;
      separate  one pass per domain, each normalised by its own batch statistics; one
                set of running statistics and scale/bias, updated by both in turn;
      dsbn      domain-specific BN (Chang et al., CVPR 2019): one pass per domain, and
                every BN layer keeps its own scale/bias and running statistics per
                domain; convolutions and dense layers are shared. Source splits are
                evaluated with the source branch, target splits with the target branch.
  config.model.bn_mode — whether the backbone's BN trains at all (domain-agnostic,
    the fine-tuning choice; models/classifier.py; a bottleneck's BN, a new layer,
    always trains):
      train         batch statistics in training, running statistics updated;
      frozen_stats  running statistics in training too, never updated (the usual
                    choice for a pretrained backbone fine-tuned with small batches);
      frozen        frozen_stats + scale/bias frozen (detectron2's FrozenBatchNorm2d);
                    compiled to one optimizer rule (their names, None) put before
                    optim.rules, so freezing has one mechanism (optim.py).
  Freezing is not a method.bn value: with frozen statistics no batch statistics are
  used, so joint and separate coincide, and dsbn + frozen_stats is still meaningful
  (per-domain statistics that training does not move, e.g. set by AdaBN).

DSBN layout: each BN leaf (scale and bias of a module holding batch statistics, and its
mean and var) gets a leading axis of len(DOMAINS) = 2, index 0 source, 1 target; names
are unchanged, so optim rules and LLRD treat both branches alike and checkpoints hold
both. model.init_from a single-branch model (a source run, imported weights) loads the
one branch into both (`stack`); a DSBN workdir loads as it is, into a DSBN model only.

AdaBN (Li et al., ICLR-W 2017 / Pattern Recognition 2018): trainer/evaluate.py's
`target_statistics` recomputes every BN layer's statistics on the target domain
(train.eval_target_bn='target', or method adabn).
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdapt import finetune
from jaxdapt.errors import ConfigError
from jaxdapt.tree import named_leaves, path_name

PyTree = Any
DOMAINS = ("source", "target")
BN_POLICIES = ("joint", "separate", "dsbn")  # config.method.bn
BN_MODES = ("train", "frozen_stats", "frozen")  # config.model.bn_mode
EVAL_TARGET_BN = ("running", "target")  # config.train.eval_target_bn


def domain_of(key: str) -> str:
  """Batch keys and splits are named after their domain: 'source_val' → 'source',
  'target_test' and 'target_strong' (FixMatch's strong view) → 'target'."""
  domain = key.split("_", 1)[0]
  if domain not in DOMAINS:
    raise ValueError(f"{key!r} does not name a domain ({', '.join(DOMAINS)})")
  return domain


def modules(batch_stats: PyTree) -> frozenset[str]:
  """'/'-joined paths of the modules holding BatchNorm statistics ('backbone/bn1')."""
  return frozenset(name.rpartition("/")[0] for name, _ in named_leaves(batch_stats))


def _map_bn(fn, params: PyTree, batch_stats: PyTree) -> tuple[PyTree, PyTree]:
  """`fn` on the BN leaves: params under a BN module, and every statistic."""
  bn = modules(batch_stats)
  params = jax.tree_util.tree_map_with_path(
    lambda p, x: fn(x) if path_name(p).rpartition("/")[0] in bn else x, params
  )
  return params, jax.tree.map(fn, batch_stats)


def stack(params: PyTree, batch_stats: PyTree) -> tuple[PyTree, PyTree]:
  """Model variables with one BN branch → the DSBN layout, every branch a copy of it."""
  return _map_bn(lambda x: jnp.stack([jnp.asarray(x)] * len(DOMAINS)), params, batch_stats)


def branch(params: PyTree, batch_stats: PyTree, domain: str) -> tuple[PyTree, PyTree]:
  """The plain model variables of `domain`'s branch (differentiable in params)."""
  i = DOMAINS.index(domain)
  return _map_bn(lambda x: x[i], params, batch_stats)


def with_branch_stats(batch_stats: PyTree, stats: PyTree, domain: str) -> PyTree:
  """DSBN statistics with `domain`'s branch replaced by `stats`; the other stays bit-identical."""
  i = DOMAINS.index(domain)
  return jax.tree.map(lambda s, b: s.at[i].set(b), batch_stats, stats)


def holds_branches(pretrained_stats: PyTree, model_stats: PyTree) -> bool:
  """Do `pretrained_stats` have one more leading axis than the model's plain layout?"""
  pre, mod = jax.tree.leaves(pretrained_stats), jax.tree.leaves(model_stats)
  return bool(pre and mod) and np.ndim(pre[0]) == np.ndim(mod[0]) + 1


def check(config: ml_collections.ConfigDict, batch_stats: PyTree, eval_target: str) -> None:
  """BN policies that need BatchNorm layers the model (abstract `batch_stats`) lacks;
  `eval_target`: the statistics target splits are evaluated with (trainer.eval_target)."""
  uses = (
    ("method.bn", config.method.bn, config.method.bn == "dsbn", bool(batch_stats)),
    (
      "model.bn_mode",
      config.model.bn_mode,
      config.model.bn_mode != "train",
      "backbone" in batch_stats,
    ),
    ("train.eval_target_bn", eval_target, eval_target == "target", bool(batch_stats)),
  )
  for field, value, needs, present in uses:
    if needs and not present:
      where = "backbone" if field == "model.bn_mode" else "model"
      raise ConfigError(
        f"{field}: {value!r} acts on BatchNorm layers, but the {where} of "
        f"{config.model.name} (model.norm={config.model.norm!r}) has none; use "
        f"model.norm='batch' or a model with BatchNorm"
      )


def optim_config(
  config: ml_collections.ConfigDict, batch_stats: PyTree
) -> ml_collections.ConfigDict:
  """config.optim, and for model.bn_mode='frozen' a copy whose rule list starts with
  (the backbone BN scale/bias names, None): the affine freeze is an optimizer rule."""
  if config.model.bn_mode != "frozen":
    return config.optim
  names = sorted(m for m in modules(batch_stats) if m.startswith("backbone/"))
  rule = (f"model/(?:{'|'.join(map(re.escape, names))})/(?:scale|bias)", None)
  optim = config.optim.copy_and_resolve_references()
  rules = finetune.PRESETS[optim.preset] if optim.preset else optim.rules
  optim.rules = (rule,) + tuple(map(tuple, rules))
  optim.preset = ""
  return optim
