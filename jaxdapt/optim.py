"""Config → optax transformation, driven by one per-parameter rule list.

`optim.rules` is a tuple of (regex, multiplier | None) over '/'-joined
parameter paths. The first matching rule decides a parameter's group: a
number scales the learning rate of that group, None freezes it. Frozen
groups go through `optax.set_to_zero` inside `optax.multi_transform`, so they
hold no optimizer state (a multiplier of 0 would still allocate momentum).
Every parameter must match some rule; an unmatched one is a ConfigError,
because a silently untrained layer is worse than a crash.

The fine-tuning policies compile to that list (jaxdapt/finetune.py):
`optim.preset` names a rule list and `optim.llrd` splits it by backbone depth.
`optim.unfreeze` is the one step-dependent extension: a group thaws at a step
inside the compiled chain (`start_at`), so thawing never recompiles. The
returned `Optimizer` also tells the step which leaves can ever move
(`value_and_grad`), so a frozen backbone costs a forward pass only.

Dry run (the groups and multipliers a config gives):
  jaxdapt optim --config experiments/digits/dann.py --set optim.llrd=0.7
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxdapt import finetune
from jaxdapt.errors import ConfigError
from jaxdapt.tree import named_leaves, path_name

PyTree = Any
FROZEN = "frozen"
OPTIMIZERS = ("sgd", "adam", "adamw")  # config.optim.name
# config.optim.schedule; inv: lr·(1+0.001·i)^-0.75 (TLlib), dann: lr·(1+10p)^-0.75
LR_SCHEDULES = ("constant", "dann", "cosine", "inv")


def group_labels(
  params: PyTree,
  rules: Sequence[tuple[str, float | None]],
  unfreeze: Sequence[tuple[int, str]] = (),
) -> PyTree:
  """A tree like `params` holding, per leaf, 'g{i}' (rule i), 'g{i}_from{s}' (rule i,
  thawing at step s: the first `unfreeze` entry matching it) or 'frozen'."""
  compiled = [(re.compile(pattern), mult) for pattern, mult in rules]
  thaws = [(int(step), re.compile(pattern)) for step, pattern in unfreeze]
  unmatched, forever = [], []

  def label(path, _):
    name = path_name(path)
    i = next((i for i, (regex, _) in enumerate(compiled) if regex.fullmatch(name)), None)
    step = next((s for s, regex in thaws if regex.fullmatch(name)), None)
    if i is None:
      unmatched.append(name)
      return FROZEN
    if compiled[i][1] is None:
      if step is not None:
        forever.append(name)
      return FROZEN
    return f"g{i}" if step is None else f"g{i}_from{step}"

  labels = jax.tree_util.tree_map_with_path(label, params)
  if unmatched:
    raise ConfigError(
      f"optim.rules: {len(unmatched)} parameter(s) match no rule: {', '.join(unmatched[:10])}"
      f"{' ...' if len(unmatched) > 10 else ''}; add a rule such as ('.*', 1.0) at the end"
    )
  if forever:
    raise ConfigError(
      f"optim.unfreeze: {forever[0]} is frozen for good by optim.rules (None); give it an lr "
      f"multiplier there, and the unfreeze step keeps it frozen until then"
    )
  return labels


def weight_decay_mask(params: PyTree) -> PyTree:
  """True at conv/dense kernels only: biases, norm scales and biases, ViT tokens and
  position embeddings are not decayed (decay would pull them towards 0, not a prior)."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: path_name(path).rsplit("/", 1)[-1] == "kernel", params
  )


class GateState(NamedTuple):
  count: jax.Array  # updates seen, gated or not
  inner: optax.OptState  # untouched before the gate opens


def start_at(inner: optax.GradientTransformation, step: int) -> optax.GradientTransformation:
  """`inner` from update `step` (0-based) on; before it, zero updates and `inner`'s
  state (momentum, Adam moments, its step count) stays at its initial value.
  A traced condition, so opening the gate does not recompile the step."""

  def init(params):
    return GateState(jnp.zeros([], jnp.int32), inner.init(params))

  def update(updates, state, params=None):
    def hold():
      return jax.tree.map(jnp.zeros_like, updates), state.inner

    new_updates, new_inner = jax.lax.cond(
      state.count >= step, lambda: inner.update(updates, state.inner, params), hold
    )
    return new_updates, GateState(optax.safe_int32_increment(state.count), new_inner)

  return optax.GradientTransformation(init, update)


class Optimizer(NamedTuple):
  """An optax GradientTransformation (init, update) that also says which leaves it can
  ever move, so the step differentiates only those (see `value_and_grad`)."""

  init: Callable
  update: Callable
  trainable: Callable[[PyTree], PyTree]  # params → tree of bools
  rules: tuple = ()  # the compiled rule list (for describe)


def value_and_grad(loss_fn: Callable, params: PyTree, tx) -> tuple[Any, PyTree]:
  """`jax.value_and_grad(loss_fn, has_aux=True)(params)`, differentiating only the leaves
  `tx` can move. Frozen leaves enter as constants, so XLA computes no backward pass
  through a frozen prefix (a frozen backbone costs its forward pass); their gradients
  are returned as zeros, which `tx` ignores."""
  leaves, treedef = jax.tree.flatten(params)
  trainable = getattr(tx, "trainable", None)
  flags = jax.tree.leaves(trainable(params)) if trainable else [True] * len(leaves)
  if all(flags):
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  def merge(moving, rest):
    it = iter(moving)
    return treedef.unflatten([next(it) if f else x for f, x in zip(flags, rest)])

  value, grads = jax.value_and_grad(lambda moving: loss_fn(merge(moving, leaves)), has_aux=True)(
    [x for f, x in zip(flags, leaves) if f]
  )
  return value, merge(grads, [jnp.zeros_like(x) for x in leaves])


INV_GAMMA = 0.001  # 'inv': lr·(1 + 0.001·i)^-0.75, i the update count


def inverse_decay(
  lr: float, gamma: float, period: float = 1.0, power: float = 0.75
) -> optax.Schedule:
  """lr·(1 + gamma·step/period)^-power (Caffe's 'inv' policy; `period` = total steps makes
  gamma act on the training progress p instead of the step)."""
  return lambda step: lr * (1.0 + gamma * step / period) ** -power


def lr_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """config.schedule over the run; with warmup_steps W > 0, a linear ramp from 0 to lr over
  updates 0..W-1 first, and the schedule then runs over the remaining total − W updates
  (what ViTs trained from scratch need; Dosovitskiy et al. 2021)."""
  warmup = config.get("warmup_steps", 0)
  if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup < total_steps:
    raise ConfigError(
      f"optim.warmup_steps: must be an integer in [0, train.steps = {total_steps}), got {warmup!r}"
    )
  decay = _decay_schedule(config, total_steps - warmup)
  if not warmup:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, config.lr, warmup), decay], [warmup])


def _decay_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  lr = config.lr
  if config.schedule == "constant":
    return optax.constant_schedule(lr)
  if config.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, total_steps)
  if config.schedule == "dann":
    # lr_p = lr / (1 + 10 p)^0.75 with p the training progress (DANN paper).
    return inverse_decay(lr, 10.0, total_steps)
  if config.schedule == "inv":
    # Per update, whatever the run length: Transfer-Learning-Library's LambdaLR.
    return inverse_decay(lr, INV_GAMMA)
  raise ConfigError(f"optim.schedule: unknown {config.schedule!r}")


def _base_optimizer(
  config: ml_collections.ConfigDict, learning_rate: optax.Schedule
) -> optax.GradientTransformation:
  if config.name == "sgd":
    return optax.sgd(learning_rate, momentum=config.momentum or None, nesterov=config.nesterov)
  if config.name == "adam":
    return optax.adam(learning_rate, b1=config.b1)
  if config.name == "adamw":
    return optax.adamw(
      learning_rate, b1=config.b1, weight_decay=config.weight_decay, mask=weight_decay_mask
    )
  raise ConfigError(f"optim.name: unknown {config.name!r}")


def _group(
  config: ml_collections.ConfigDict, schedule: optax.Schedule, mult: float, start: int
) -> optax.GradientTransformation:
  """One rule's optimizer: lr mult·schedule(global step), weight decay on kernels,
  gated to start at update `start` (its own count then lags by `start`)."""
  lr: Callable = lambda count: mult * schedule(count + start if start else count)
  parts = []
  if config.weight_decay and config.name != "adamw":
    # L2 (added to the gradient, so scaled by the lr and fed to momentum / Adam) as
    # torch's SGD/Adam weight_decay; adamw decays decoupled (optax.adamw, also × lr).
    parts.append(optax.add_decayed_weights(config.weight_decay, mask=weight_decay_mask))
  parts.append(_base_optimizer(config, lr))
  tx = optax.chain(*parts)
  return start_at(tx, start) if start else tx


def build_optimizer(
  config: ml_collections.ConfigDict, total_steps: int, params: PyTree
) -> Optimizer:
  """The optimizer for `params` (concrete or abstract: only names and structure are read)."""
  names = [name for name, _ in named_leaves(params)]
  rules = finetune.compile_rules(config, names)
  unfreeze = tuple((int(s), p) for s, p in config.unfreeze)
  for step, pattern in unfreeze:
    if not any(re.fullmatch(pattern, n) for n in names):
      raise ConfigError(f"optim.unfreeze: ({step}, {pattern!r}) matches no parameter")
  labels = group_labels(params, rules, unfreeze)  # raise early on unmatched parameters
  schedule = lr_schedule(config, total_steps)
  transforms: dict[str, optax.GradientTransformation] = {FROZEN: optax.set_to_zero()}
  for i, (_, mult) in enumerate(rules):
    if mult is not None:
      transforms[f"g{i}"] = _group(config, schedule, float(mult), 0)
  for label in set(jax.tree.leaves(labels)) - set(transforms):
    i, start = map(int, re.fullmatch(r"g(\d+)_from(\d+)", label).groups())
    transforms[label] = _group(config, schedule, float(rules[i][1]), start)

  def labels_of(p):
    return group_labels(p, rules, unfreeze)

  tx = optax.multi_transform(transforms, labels_of)
  return Optimizer(
    tx.init, tx.update, lambda p: jax.tree.map(lambda label: label != FROZEN, labels_of(p)), rules
  )


def multipliers(config: ml_collections.ConfigDict, params: PyTree) -> dict[str, tuple]:
  """{parameter name: (group label, lr multiplier | None, thaw step | None)}."""
  tx = build_optimizer(config, 1, params)
  labels = group_labels(params, tx.rules, config.unfreeze)
  out = {}
  for name, label in named_leaves(labels):
    m = re.fullmatch(r"g(\d+)(?:_from(\d+))?", label)
    out[name] = (
      (label, None, None)
      if m is None
      else (label, tx.rules[int(m[1])][1], None if m[2] is None else int(m[2]))
    )
  return out


def describe(config: ml_collections.ConfigDict, params: PyTree) -> str:
  """A table of the groups `config` gives `params`: lr multiplier, thaw step, size, blocks."""
  sizes = {name: int(getattr(leaf, "size", 0)) for name, leaf in named_leaves(params)}
  groups: dict[tuple, list[str]] = {}
  table = multipliers(config, params)
  for name, (label, mult, step) in table.items():
    groups.setdefault((label, mult, step), []).append(name)
  lines = [
    f"{'group':<10} {'lr mult':>9} {'lr':>10} {'from step':>9} {'tensors':>7} "
    f"{'params':>11}  blocks"
  ]
  for (label, mult, step), names in sorted(groups.items(), key=lambda kv: -(kv[0][1] or 0)):
    blocks = list(dict.fromkeys(finetune.block_of(n) for n in names))
    lines.append(
      f"{label:<10} {'frozen' if mult is None else f'{mult:.4g}':>9} "
      f"{'-' if mult is None else f'{mult * config.lr:.3g}':>10} "
      f"{'-' if step is None else step:>9} {len(names):>7} "
      f"{sum(sizes[n] for n in names):>11,}  {', '.join(blocks)}"
    )
  if config.weight_decay:
    kind = "decoupled (adamw)" if config.name == "adamw" else "L2 in the gradient"
    decayed = sum(
      keep and table[name][1] is not None for name, keep in named_leaves(weight_decay_mask(params))
    )
    lines.append(
      f"weight decay {config.weight_decay:g}, {kind}, on the {decayed} kernel(s) "
      f"of trained groups; none on biases, norms, tokens"
    )
  return "\n".join(lines)
