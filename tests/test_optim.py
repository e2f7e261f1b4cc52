"""The per-parameter rule list: freezing, multipliers, unmatched parameters."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxdapt import config as config_lib
from jaxdapt import optim
from jaxdapt.errors import ConfigError


def _optim_config(rules, **overrides):
  c = config_lib.base_config().optim
  c = ml_collections.ConfigDict(c.to_dict())
  c.rules = rules
  c.schedule = "constant"
  c.momentum = 0.0
  for k, v in overrides.items():
    c[k] = v
  return c


def _tree():
  return {"model": {"backbone": {"kernel": jnp.ones((3, 2))}, "head": {"bias": jnp.ones(2)}}}


def _grads(params):
  return jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)


def test_frozen_leaves_are_bit_identical_and_hold_no_state():
  params = _tree()
  tx = optim.build_optimizer(
    _optim_config(((r"model/backbone/.*", None), (".*", 1.0)), momentum=0.9), 10, params
  )
  state = tx.init(params)
  state_leaves = [x.shape for x in jax.tree.leaves(state)]
  # momentum is kept for the head's bias only
  assert (3, 2) not in state_leaves and (2,) in state_leaves
  p = params
  for _ in range(5):
    updates, state = tx.update(_grads(p), state, p)
    p = optax.apply_updates(p, updates)
  np.testing.assert_array_equal(
    p["model"]["backbone"]["kernel"], params["model"]["backbone"]["kernel"]
  )
  assert not np.array_equal(p["model"]["head"]["bias"], params["model"]["head"]["bias"])


def test_multiplier_scales_sgd_update():
  params = _tree()
  tx = optim.build_optimizer(
    _optim_config(((r"model/backbone/.*", 0.1), (".*", 1.0)), lr=0.2), 10, params
  )
  updates, _ = tx.update(_grads(params), tx.init(params), params)
  np.testing.assert_allclose(updates["model"]["head"]["bias"], -0.2 * 0.5, rtol=1e-6)
  np.testing.assert_allclose(updates["model"]["backbone"]["kernel"], -0.1 * 0.2 * 0.5, rtol=1e-6)


def test_first_matching_rule_wins():
  labels = optim.group_labels(_tree(), ((r"model/.*", 2.0), (r"model/head/.*", None)))
  assert jax.tree.leaves(labels) == ["g0", "g0"]


def test_unmatched_parameter_raises_naming_it():
  with pytest.raises(ConfigError, match="model/head/bias"):
    optim.build_optimizer(_optim_config(((r"model/backbone/.*", 1.0),)), 10, _tree())


def test_weight_decay_skips_vectors():
  params = _tree()
  tx = optim.build_optimizer(_optim_config(((".*", 1.0),), weight_decay=0.1, lr=1.0), 10, params)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates["model"]["backbone"]["kernel"], -0.1)
  np.testing.assert_allclose(updates["model"]["head"]["bias"], 0.0)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_b1_is_the_first_moment_decay(name):
  """optim.b1 reaches Adam: two updates against Adam written out (Kingma & Ba, Alg. 1)."""
  b1, b2, eps, lr = 0.5, 0.999, 1e-8, 0.1
  params = {"model": {"head": {"bias": jnp.zeros(2)}}}
  tx = optim.build_optimizer(_optim_config(((".*", 1.0),), name=name, b1=b1, lr=lr), 10, params)
  state = tx.init(params)
  m = v = np.zeros(2)
  for t, g in enumerate((np.array([1.0, -2.0]), np.array([0.5, 3.0])), start=1):
    updates, state = tx.update({"model": {"head": {"bias": jnp.asarray(g)}}}, state, params)
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    expected = -lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    np.testing.assert_allclose(updates["model"]["head"]["bias"], expected, rtol=1e-5)


def test_warmup_ramps_linearly_then_the_schedule_spans_the_rest():
  """optim.warmup_steps W: lr·t/W for t < W, then cosine over the remaining steps (its value
  at W is the full lr, at the last step 0), written independently of optax here."""
  c = _optim_config(((".*", 1.0),), schedule="cosine", lr=0.2, warmup_steps=10)
  sched = optim.lr_schedule(c, 50)
  for t in (0, 3, 9):
    np.testing.assert_allclose(sched(t), 0.2 * t / 10, rtol=1e-6)
  for t in (10, 25, 40, 50):
    np.testing.assert_allclose(
      sched(t), 0.2 * 0.5 * (1 + np.cos(np.pi * (t - 10) / 40)), rtol=1e-5, atol=1e-8
    )
  c.warmup_steps = 0  # off: the schedule alone
  np.testing.assert_allclose(optim.lr_schedule(c, 50)(0), 0.2)


@pytest.mark.parametrize("bad", [50, 51, -1])
def test_a_bad_warmup_is_one_config_error(bad):
  c = _optim_config(((".*", 1.0),), warmup_steps=bad)
  with pytest.raises(ConfigError, match=r"optim.warmup_steps: must be an integer in \[0, "):
    optim.lr_schedule(c, 50)


def test_dann_lr_schedule():
  c = _optim_config(((".*", 1.0),), schedule="dann", lr=0.01)
  sched = optim.lr_schedule(c, 100)
  np.testing.assert_allclose(sched(0), 0.01)
  np.testing.assert_allclose(sched(100), 0.01 * 11**-0.75, rtol=1e-6)
