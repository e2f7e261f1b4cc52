"""Regularisers against forgetting (methods/regularizers.py): NumPy formulas, and in the step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train import tiny_config

from jaxdapt import config as config_lib
from jaxdapt import methods, models, sharding, step, trainer
from jaxdapt.errors import ConfigError
from jaxdapt.methods import regularizers as R


def _tree(seed):
  r = np.random.default_rng(seed)
  f = lambda *shape: r.normal(size=shape).astype(np.float32)
  return {
    "backbone": {"conv": {"kernel": f(3, 4), "bias": f(4)}},
    "head": {"out": {"kernel": f(4, 2), "bias": f(2)}},
  }


def _loaded(name):
  return not name.startswith("head/")


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_l2sp_matches_numpy_and_its_gradient_is_alpha_times_the_offset():
  w, w0 = _tree(0), _tree(1)
  alpha, beta = 0.3, 0.05
  bb, bb0, head = w["backbone"]["conv"], w0["backbone"]["conv"], w["head"]["out"]
  expected = alpha / 2 * sum(np.sum((bb[k] - bb0[k]) ** 2) for k in bb) + beta / 2 * sum(
    np.sum(head[k] ** 2) for k in head
  )
  np.testing.assert_allclose(R.l2_sp(w, w0, _loaded, alpha, beta), expected, rtol=1e-5)
  grads = jax.grad(functools.partial(R.l2_sp, start=w0, loaded=_loaded, alpha=alpha, beta=beta))(w)
  for k in bb:  # the pretrained part: α (w − w⁰); the new head: β w
    np.testing.assert_allclose(grads["backbone"]["conv"][k], alpha * (bb[k] - bb0[k]), rtol=1e-5)
    np.testing.assert_allclose(grads["head"]["out"][k], beta * head[k], rtol=1e-5)
  # α = 0 never reads w⁰: the paper's plain L2 baseline on the new layers.
  np.testing.assert_allclose(
    R.l2_sp(w, None, _loaded, 0.0, beta),
    beta / 2 * sum(np.sum(head[k] ** 2) for k in head),
    rtol=1e-5,
  )


def test_bss_penalises_the_k_smallest_singular_values():
  f = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)
  sigma = np.linalg.svd(f, compute_uv=False)
  for k in (1, 2):
    np.testing.assert_allclose(
      R.smallest_singular_values(f, k), np.sum(np.sort(sigma)[:k] ** 2), rtol=1e-4
    )
  assert np.all(np.isfinite(jax.grad(lambda x: R.smallest_singular_values(x, 1))(f)))


def test_lwf_is_the_tempered_kl_to_the_starting_model():
  r = np.random.default_rng(3)
  z, z0, t = r.normal(size=(5, 3)), r.normal(size=(5, 3)), 2.0
  p0, p = _softmax(z0 / t), _softmax(z / t)
  expected = np.mean(np.sum(p0 * (np.log(p0) - np.log(p)), -1))
  np.testing.assert_allclose(R.distillation_kl(z, z0, t), expected, rtol=1e-5)
  assert abs(float(R.distillation_kl(z0, z0, t))) < 1e-6


def test_delta_distance_weights_each_channel_summed_over_positions():
  r = np.random.default_rng(4)
  maps = {"a": r.normal(size=(3, 2, 2, 4)), "b": r.normal(size=(3, 5))}
  start = {k: v + r.normal(size=v.shape) for k, v in maps.items()}
  weights = {"a": R.attention_weights(r.normal(size=4)), "b": R.attention_weights(r.normal(size=5))}
  expected = sum(
    np.mean(((maps[l] - start[l]) ** 2).reshape(3, -1, maps[l].shape[-1]).sum(1) @ weights[l])
    for l in maps
  )
  np.testing.assert_allclose(R.delta_distance(maps, start, weights), expected, rtol=1e-5)
  np.testing.assert_allclose(weights["a"].sum(), 1.0, rtol=1e-6)


def test_delta_attention_is_the_softmax_of_the_loss_increase_of_each_dropped_channel():
  """Zeroing output channel c of a conv is zeroing its kernel[..., c] and bias[c]: an
  independent way to measure the same loss increases."""
  model = models.get_model("dann_digits", num_classes=3, head_hidden=())
  r = np.random.default_rng(5)
  images = jnp.asarray(r.normal(size=(4, 32, 32, 3)), jnp.float32)
  labels = jnp.asarray([0, 1, 2, 1])
  variables = model.init(jax.random.key(0), images, train=False)
  got = R.channel_attention(model, variables, images, labels, ("backbone/conv1",))

  @jax.jit
  def loss(params):
    logits = model.apply({"params": params}, images, train=False)["logits"]
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])

  params = jax.device_get(variables["params"])
  base = float(loss(params))
  increases = []
  for c in range(32):
    p = jax.tree.map(np.array, params)
    p["backbone"]["conv1"]["kernel"][..., c] = 0
    p["backbone"]["conv1"]["bias"][c] = 0
    increases.append(float(loss(p)) - base)
  np.testing.assert_allclose(
    got["backbone/conv1"], _softmax(np.asarray(increases)), rtol=1e-3, atol=1e-6
  )


def _stage2_config(data_dir, workdir, **reg):
  c = tiny_config(data_dir, "source_only")
  c.model.init_from = workdir
  c.model.dont_load = ()
  for k, v in reg.items():
    c.regularizer[k] = v
  return c


def _pretrained(data_dir, out):
  """An imported-weights directory (the tiny model at another seed's init)."""
  from jaxdapt import weights

  model = step.build_model(tiny_config(data_dir, "source_only"), 10)
  variables = model.init(jax.random.key(42), jnp.zeros((1, 32, 32, 3)), train=False)
  return weights.save_pretrained(out, variables["params"], {}, {"arch": "dann_digits"})


def test_regularised_step_keeps_w0_out_of_the_state_and_starts_at_zero(data_dir, tmp_path):
  pre = _pretrained(data_dir, tmp_path / "pre")
  c = _stage2_config(
    data_dir,
    pre,
    l2sp_alpha=0.5,
    bss_weight=0.001,
    lwf_weight=1.0,
    delta_weight=0.01,
    delta_layers=("backbone/conv1", "backbone"),
    delta_attention_points=4,
  )
  devices = jax.devices()[:1]
  exp = trainer.build(c, devices)
  state = trainer.load_init_from(exp, exp.init(jax.random.key(0)))
  start = exp.method.refresh(exp, state)
  # w⁰ is the init_from model, held outside the state: params and optimizer state have the
  # same leaves as without a regulariser.
  plain_state = jax.eval_shape(
    trainer.build(_stage2_config(data_dir, pre), devices).init, jax.random.key(0)
  )
  for field in ("params", "opt_state"):
    assert jax.tree.structure(getattr(state, field)) == jax.tree.structure(
      getattr(plain_state, field)
    )
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.device_get(start["params"]),
    jax.device_get(state.params["model"]),
  )
  assert set(start["channel_weights"]) == {"backbone/conv1", "backbone"}
  assert start["channel_weights"]["backbone"].shape == (1200,)
  batch = sharding.global_batch(next(trainer.train_iterators(exp)), exp.mesh)
  new_state, metrics = exp.update(state, batch, start)  # donates `state`
  metrics = jax.device_get(metrics)
  new_params = jax.device_get(new_state.params["model"])
  # At w = w⁰ (no BatchNorm, no dropout) L2-SP, LwF and DELTA are 0; BSS is not.
  for key in ("reg_l2sp", "reg_lwf", "reg_delta"):
    assert abs(metrics[key]) < 1e-6, key
  assert metrics["reg_bss"] > 0
  # After the step: α/2 ‖w − w⁰‖² over every (loaded) leaf.
  _, after = exp.update(new_state, batch, start)
  offset = jax.tree.map(
    lambda a, b: np.sum((np.asarray(a) - np.asarray(b)) ** 2),
    new_params,
    jax.device_get(start["params"]),
  )
  np.testing.assert_allclose(
    jax.device_get(after)["reg_l2sp"], 0.25 * sum(jax.tree.leaves(offset)), rtol=1e-4
  )


def test_regularizer_gradient_in_the_method_is_alpha_times_the_offset():
  config = config_lib.base_config().regularizer
  with config.unlocked():
    config.l2sp_alpha = 0.2
  reg = R.Regularizer(config, "pretrained", ("head/.*",), ("source",), jnp.float32, None)
  w, w0 = _tree(6), _tree(7)
  grads = jax.grad(lambda p: reg.loss(None, p, {}, {}, {"params": w0}, None)[0])(w)
  np.testing.assert_allclose(
    grads["backbone"]["conv"]["kernel"],
    0.2 * (w["backbone"]["conv"]["kernel"] - w0["backbone"]["conv"]["kernel"]),
    rtol=1e-5,
  )
  np.testing.assert_array_equal(grads["head"]["out"]["kernel"], 0)  # β = 0, new layer


def test_l2sp_treats_peft_leaves_as_new_not_as_loaded():
  """LoRA factors, adapters and prompts start at random: L2-SP's α term must not pull them
  back to step 0 (they get β, as new layers do)."""
  config = config_lib.base_config().regularizer
  reg = R.Regularizer(config, "pretrained", ("head/.*",), ("source",), jnp.float32, None)
  assert reg.loaded("backbone/layer_0/intermediate/kernel")
  for name in (
    "backbone/layer_0/intermediate/kernel_lora_a",
    "backbone/layer_0/intermediate/kernel_lora_b",
    "backbone/layer_0/adapter_mlp/down/kernel",
    "backbone/blocks_0/prompts",
    "head/out/kernel",
  ):
    assert not reg.loaded(name), name


def test_head_dropout_acts_in_training_only_also_for_a_linear_head():
  from jaxdapt.models.classifier import MLPHead

  head = MLPHead(3, (), dropout=0.5)
  x = jnp.ones((4, 8))
  v = head.init(jax.random.key(0), x, train=False)
  evals = [head.apply(v, x, train=False) for _ in range(2)]
  np.testing.assert_array_equal(evals[0], evals[1])
  trained = head.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(trained, evals[0])


@pytest.mark.parametrize(
  "fields, method, match",
  [
    ({"l2sp_alpha": 0.1}, "source_only", "model.init_from"),
    ({"lwf_weight": 1.0, "init_from": "x"}, "source_only", "dont_load"),
    ({"bss_weight": 0.001}, "mcd", "own update step"),
    ({"bss_weight": -1.0}, "source_only", "bss_weight"),
    ({"delta_layers": ("head/out",)}, "source_only", "delta_layers"),
  ],
)
def test_bad_regulariser_configs_fail_with_the_field(fields, method, match):
  c = config_lib.base_config()
  c.method.name = method
  for k, v in fields.items():
    if k == "init_from":
      c.model.init_from = v
    else:
      c.regularizer[k] = v
  with pytest.raises(ConfigError, match=match):
    trainer.validate(c)


def test_attach_is_a_no_op_when_every_weight_is_zero():
  c = config_lib.base_config()
  method = methods.get_method(c.method)
  assert R.attach(method, c) is method
  with c.unlocked():
    c.regularizer.bss_weight = 0.001
  assert isinstance(R.attach(method, c).regularizer, R.Regularizer)
