"""Config → optax transformation, driven by one per-parameter rule list.

`optim.rules` is a tuple of (regex, multiplier | None) over '/'-joined
parameter paths. The first matching rule decides a parameter's group: a
number scales the learning rate of that group, None freezes it. Frozen
groups go through `optax.set_to_zero` inside `optax.multi_transform`, so they
hold no optimizer state (a multiplier of 0 would still allocate momentum).
Every parameter must match some rule; an unmatched one is a ConfigError,
because a silently untrained layer is worse than a crash.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxdapt.errors import ConfigError

PyTree = Any
FROZEN = "frozen"


def path_name(path: Sequence[Any]) -> str:
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def named_leaves(tree: PyTree) -> list[tuple[str, Any]]:
  return [(path_name(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def group_labels(params: PyTree, rules: Sequence[tuple[str, float | None]]) -> PyTree:
  """A tree like `params` holding, per leaf, 'g{i}' (rule i) or 'frozen'."""
  compiled = [(re.compile(pattern), mult) for pattern, mult in rules]
  unmatched = []

  def label(path, _):
    name = path_name(path)
    for i, (regex, mult) in enumerate(compiled):
      if regex.fullmatch(name):
        return FROZEN if mult is None else f"g{i}"
    unmatched.append(name)
    return FROZEN

  labels = jax.tree_util.tree_map_with_path(label, params)
  if unmatched:
    raise ConfigError(
        f"optim.rules: {len(unmatched)} parameter(s) match no rule: {', '.join(unmatched[:10])}"
        f"{' ...' if len(unmatched) > 10 else ''}; add a rule such as ('.*', 1.0) at the end")
  return labels


def lr_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  lr = config.lr
  if config.schedule == "constant":
    return optax.constant_schedule(lr)
  if config.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, total_steps)
  if config.schedule == "dann":
    # lr_p = lr / (1 + 10 p)^0.75 with p the training progress (DANN paper).
    return lambda step: lr * (1.0 + 10.0 * step / total_steps) ** -0.75
  raise ConfigError(f"optim.schedule: unknown {config.schedule!r}")


def _base_optimizer(config: ml_collections.ConfigDict,
                    learning_rate: optax.Schedule) -> optax.GradientTransformation:
  if config.name == "sgd":
    return optax.sgd(learning_rate, momentum=config.momentum or None, nesterov=config.nesterov)
  if config.name == "adam":
    return optax.adam(learning_rate)
  if config.name == "adamw":
    return optax.adamw(learning_rate, weight_decay=config.weight_decay)
  raise ConfigError(f"optim.name: unknown {config.name!r}")


def build_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                    params: PyTree) -> optax.GradientTransformation:
  """The optimizer for `params`; `params` is only used to check the rules."""
  group_labels(params, config.rules)  # raise early on unmatched parameters
  schedule = lr_schedule(config, total_steps)
  transforms: dict[str, optax.GradientTransformation] = {FROZEN: optax.set_to_zero()}
  for i, (_, mult) in enumerate(config.rules):
    if mult is None:
      continue
    scaled: Callable = (lambda m: (lambda step: m * schedule(step)))(float(mult))
    parts = []
    if config.weight_decay and config.name != "adamw":
      # L2 on weight matrices and kernels only: no decay on biases and norm scales.
      parts.append(optax.add_decayed_weights(
          config.weight_decay, mask=lambda p: jax.tree.map(lambda x: jnp.ndim(x) > 1, p)))
    parts.append(_base_optimizer(config, scaled))
    transforms[f"g{i}"] = optax.chain(*parts)
  return optax.multi_transform(transforms, lambda p: group_labels(p, config.rules))
