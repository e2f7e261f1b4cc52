"""Fine-tuning policies: LLRD, presets, weight-decay mask, gradual unfreezing, LP-FT, and
no backward pass through a frozen backbone."""

import importlib.util
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxdapt import config as config_lib
from jaxdapt import finetune, methods, models, optim, sharding, step, trainer
from jaxdapt.errors import ConfigError
from jaxdapt.models.vit import ViT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _optim_config(**overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(config_lib.base_config().optim.to_dict())
  c.schedule = "constant"
  c.momentum = 0.0
  for k, v in overrides.items():
    c[k] = v
  return c


def _abstract_params(model, shape):
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  return {"model": variables["params"], "method": {}}


def _resnet18_params():
  model = models.get_model("resnet18", num_classes=5, bottleneck_dim=8, small_input=True)
  return _abstract_params(model, (1, 32, 32, 3))


def _tiny_vit_params():
  model = models.Classifier(backbone=ViT(16, 32, 3, 2, 2.0, img_size=32), num_classes=3)
  return _abstract_params(model, (1, 32, 32, 3))


def _block_multipliers(config, params):
  """{block: lr multiplier}; fails if two leaves of one block disagree."""
  out = {}
  for name, (_, mult, _) in optim.multipliers(config, params).items():
    block = finetune.block_of(name).replace("model/backbone/", "")
    assert out.setdefault(block, mult) == mult, name
  return out


def test_llrd_resnet18_multipliers():
  d = 0.5
  expected = {
    "conv1": d**9,
    "bn1": d**9,
    "layer1_0": d**8,
    "layer1_1": d**7,
    "layer2_0": d**6,
    "layer2_1": d**5,
    "layer3_0": d**4,
    "layer3_1": d**3,
    "layer4_0": d**2,
    "layer4_1": d,
    "model/bottleneck": 1.0,
    "model/head": 1.0,
  }
  assert _block_multipliers(_optim_config(llrd=d), _resnet18_params()) == pytest.approx(expected)
  # Composes with a preset: the discriminative 0.1 times the depth factor.
  disc = _block_multipliers(_optim_config(llrd=d, preset="discriminative"), _resnet18_params())
  assert disc["layer4_1"] == pytest.approx(0.1 * d) and disc["model/head"] == 1.0


def test_llrd_vit_multipliers_and_updates():
  d = 0.5
  params = _tiny_vit_params()
  config = _optim_config(llrd=d)
  expected = {
    "cls_token": d**4,
    "pos_embed": d**4,
    "patch_embed": d**4,
    "blocks_0": d**3,
    "blocks_1": d**2,
    "blocks_2": d,
    "norm": 1.0,
    "model/head": 1.0,
  }
  assert _block_multipliers(config, params) == pytest.approx(expected)
  # The multipliers reach the updates (sgd, no momentum: update = −lr·mult·grad).
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params)
  tx = optim.build_optimizer(config, 10, params)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["model"]["backbone"]["cls_token"], -0.01 * d**4)
  np.testing.assert_allclose(
    updates["model"]["backbone"]["blocks_2"]["mlp"]["fc1"]["kernel"], -0.01 * d
  )
  np.testing.assert_allclose(updates["model"]["head"]["out"]["bias"], -0.01)


def test_llrd_keeps_frozen_rules_and_names_unknown_blocks():
  params = _resnet18_params()
  mults = _block_multipliers(_optim_config(llrd=0.5, preset="linear_probe"), params)
  assert {b: m for b, m in mults.items() if m is not None} == {"model/head": 1.0}
  params["model"]["backbone"]["mystery"] = {"kernel": jnp.zeros((2, 2))}
  with pytest.raises(ConfigError, match="model/backbone/mystery"):
    optim.build_optimizer(_optim_config(llrd=0.5), 10, params)


def test_presets_are_rule_lists_and_exclude_rules():
  c = _optim_config(preset="discriminative")
  assert finetune.compile_rules(c, []) == (("model/backbone/.*", 0.1), (".*", 1.0))
  config = config_lib.base_config()
  config.optim.preset = "discriminative"
  trainer.validate(config)
  config.optim.rules = (("model/head/.*", None), (".*", 1.0))
  with pytest.raises(ConfigError, match="optim.preset"):
    trainer.validate(config)


@pytest.mark.parametrize(
  "field,value,match",
  [
    ("llrd", 1.5, "optim.llrd"),
    ("preset", "lp", "optim.preset"),
    ("unfreeze", ((0, ".*"),), r"optim.unfreeze\[0\]"),
    ("unfreeze", ((5, "(("),), "bad regex"),
    ("weight_decay", -1.0, "optim.weight_decay"),
  ],
)
def test_bad_finetune_fields_are_config_errors(field, value, match):
  config = config_lib.base_config()
  config.optim[field] = value
  with pytest.raises(ConfigError, match=match):
    trainer.validate(config)


def test_weight_decay_mask_excludes_exactly_norm_and_bias_leaves():
  for params in (_resnet18_params(), _tiny_vit_params()):
    names = [n for n, _ in optim.named_leaves(params)]
    excluded = {n for n, keep in optim.named_leaves(optim.weight_decay_mask(params)) if not keep}
    # Hand-written: BatchNorm/LayerNorm scale and bias, every bias, the ViT tokens.
    expected = {
      n
      for n in names
      if re.search(
        r"/(bn\d*|downsample_bn|norm\d*)/(scale|bias)$|/bias$|/(cls_token|pos_embed)$", n
      )
    }
    assert excluded == expected
    assert any("/bn1/scale" in n or "/norm1/scale" in n for n in excluded)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_moves_kernels_only(name):
  params = {
    "model": {
      "dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)},
      "bn": {"scale": jnp.ones(2)},
    }
  }
  tx = optim.build_optimizer(_optim_config(name=name, weight_decay=0.1, lr=1.0), 10, params)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_allclose(updates["model"]["dense"]["kernel"], -0.1)
  np.testing.assert_array_equal(updates["model"]["dense"]["bias"], 0.0)
  np.testing.assert_array_equal(updates["model"]["bn"]["scale"], 0.0)


def _trace_leaves(opt_state, group: str) -> list:
  """The SGD momentum buffers held for `group`."""
  return [
    leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]
    if group in optim.path_name(path) and "trace" in optim.path_name(path)
  ]


def test_unfreeze_holds_updates_and_momentum_until_its_step_without_recompiling():
  thaw = 3
  params = {
    "model": {"backbone": {"kernel": jnp.ones((4, 4))}, "head": {"kernel": jnp.ones((4, 2))}},
    "method": {},
  }
  config = _optim_config(
    momentum=0.9, schedule="dann", lr=0.1, unfreeze=((thaw, "model/backbone/.*"),)
  )
  total = 20
  tx = optim.build_optimizer(config, total, params)
  traces = []

  @jax.jit
  def step(params, opt_state, x):
    traces.append(1)  # runs once per trace, not per call

    def loss(p):
      h = jnp.tanh(x @ p["model"]["backbone"]["kernel"])
      return jnp.sum((h @ p["model"]["head"]["kernel"]) ** 2)

    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, grads

  x = jnp.linspace(-1.0, 1.0, 8).reshape(2, 4)
  opt_state = tx.init(params)
  assert len(_trace_leaves(opt_state, "g0_from3")) == 1
  p = params
  for i in range(thaw + 2):
    before = p
    p, opt_state, grads = step(p, opt_state, x)
    backbone, momentum = p["model"]["backbone"]["kernel"], _trace_leaves(opt_state, "g0_from3")[0]
    assert not np.array_equal(p["model"]["head"]["kernel"], before["model"]["head"]["kernel"])
    if i < thaw:
      np.testing.assert_array_equal(backbone, params["model"]["backbone"]["kernel"])
      np.testing.assert_array_equal(momentum, 0.0)
    elif i == thaw:
      # First open step: momentum = grad, lr from the global schedule at step `thaw`.
      g = grads["model"]["backbone"]["kernel"]
      np.testing.assert_allclose(momentum, g, rtol=1e-6)
      lr = optim.lr_schedule(config, total)(thaw)
      np.testing.assert_allclose(
        backbone, before["model"]["backbone"]["kernel"] - lr * g, rtol=1e-6
      )
    else:
      assert not np.array_equal(backbone, before["model"]["backbone"]["kernel"])
  assert len(traces) == 1


def test_unfreeze_entries_must_apply():
  params = {"model": {"backbone": {"kernel": jnp.ones((2, 2))}, "head": {"bias": jnp.ones(2)}}}
  with pytest.raises(ConfigError, match="matches no parameter"):
    optim.build_optimizer(_optim_config(unfreeze=((5, "model/typo/.*"),)), 10, params)
  with pytest.raises(ConfigError, match="frozen for good"):
    optim.build_optimizer(
      _optim_config(
        rules=(("model/backbone/.*", None), (".*", 1.0)), unfreeze=((5, "model/backbone/.*"),)
      ),
      10,
      params,
    )


# --- LP-FT through the trainer ---------------------------------------------------------


def _lp_ft_config(stage: str, data_dir: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location(
    "lp_ft", os.path.join(ROOT, "experiments", "transfer", "lp_ft.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(stage)
  c.data.data_dir = data_dir
  c.data.batch_size = 16
  c.data.eval_batch_size = 256
  c.train.steps, c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 3, 3, 3, 3
  c.train.progress_bar = False
  if "selection_points" in c.train:  # label-free selection scores: not under test here
    c.train.selection_points = 0
  return c


def _named(tree) -> dict[str, np.ndarray]:
  return {n: np.asarray(v) for n, v in optim.named_leaves(jax.device_get(tree))}


def _final_params(workdir: str) -> dict[str, np.ndarray]:
  from jaxdapt import checkpoint

  params, _, _ = checkpoint.load_model_variables(workdir)
  return _named({"model": params})


def test_lp_ft_two_stages(data_dir, tmp_path, monkeypatch):
  probe = _lp_ft_config("probe", data_dir)
  initial = _named(trainer.build(probe).init(jax.random.key(probe.seed)).params)
  trainer.train_and_evaluate(probe, str(tmp_path / "lp"), devices=jax.devices()[:1])
  probed = _final_params(str(tmp_path / "lp"))
  for name, value in probed.items():
    if name.startswith("model/backbone/"):
      np.testing.assert_array_equal(value, initial[name], err_msg=name)
  assert not np.array_equal(probed["model/head/out/kernel"], initial["model/head/out/kernel"])

  start = {}
  load = trainer.load_init_from

  def spy(exp, state):
    state = load(exp, state)
    start.update(_named(state.params))  # a copy: the step donates the state
    return state

  from jaxdapt.trainer import loop

  monkeypatch.setattr(loop, "load_init_from", spy)
  finetune_config = _lp_ft_config("finetune", data_dir)
  finetune_config.model.init_from = str(tmp_path / "lp")
  trainer.train_and_evaluate(finetune_config, str(tmp_path / "ft"), devices=jax.devices()[:1])
  assert set(probed) <= set(start)
  for name, value in probed.items():  # head included: stage 2 starts from the probe
    np.testing.assert_array_equal(start[name], value, err_msg=name)
  tuned = _final_params(str(tmp_path / "ft"))
  assert not np.array_equal(
    tuned["model/backbone/conv1/kernel"], probed["model/backbone/conv1/kernel"]
  )


# --- no backward pass through a frozen backbone ------------------------------------------


def _step_experiment(rules):
  c = config_lib.base_config()
  c.model.norm = "batch"
  c.model.head_hidden = (32,)
  c.data.batch_size = 16
  c.optim.rules = rules
  return trainer.build_functions(
    c, sharding.make_mesh(), methods.get_method(c.method), (28, 28, 3), 10
  )


def _flops(exp, state, batch) -> float:
  cost = exp.update.lower(state, batch).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def test_frozen_backbone_step_skips_backward_and_matches_set_to_zero():
  rng = np.random.default_rng(0)
  batches = [
    sharding.global_batch(
      {
        d: {
          "image": rng.integers(0, 256, (16, 28, 28, 3)).astype(np.uint8),
          "label": rng.integers(0, 10, 16).astype(np.int32),
        }
        for d in ("source", "target")
      },
      sharding.make_mesh(),
    )
    for _ in range(3)
  ]
  full = _step_experiment(((".*", 1.0),))
  frozen = _step_experiment((("model/backbone/.*", None), (".*", 1.0)))
  state = frozen.init(jax.random.key(0))
  ratio = _flops(frozen, state, batches[0]) / _flops(full, full.init(jax.random.key(0)), batches[0])
  assert ratio < 0.6, ratio

  # The previous step: gradients of every leaf, set_to_zero discards the frozen ones.
  tx = frozen.tx
  previous = jax.jit(
    lambda s, b: step.train_step(
      s,
      b,
      ctx=step.StepContext(
        model=frozen.model,
        method=frozen.method,
        tx=optax.GradientTransformation(tx.init, tx.update),
        bn="joint",
        dtype=jnp.float32,
        total_steps=frozen.config.train.steps,
      ),
    )
  )
  new, old = state, jax.tree.map(jnp.copy, state)
  for batch in batches:
    new, new_metrics = frozen.update(new, batch)
    old, old_metrics = previous(old, batch)
  np.testing.assert_allclose(new_metrics["loss"], old_metrics["loss"], rtol=1e-6)
  new_params, old_params = _named(new.params), _named(old.params)
  initial = _named(frozen.init(jax.random.key(0)).params)
  for name, value in new_params.items():
    if name.startswith("model/backbone/"):
      np.testing.assert_array_equal(value, initial[name], err_msg=name)
    np.testing.assert_allclose(value, old_params[name], rtol=1e-5, atol=1e-7, err_msg=name)
  assert not np.allclose(new_params["model/head/out/kernel"], initial["model/head/out/kernel"])
