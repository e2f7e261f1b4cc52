"""BatchNorm policies (jaxdapt/batchnorm.py): DSBN branches, frozen BN, AdaBN statistics.

Unit tests use a 1×1 conv → BN model, whose BN input is a matmul of the pixels, so
every statistic has a NumPy reference; the integration runs are 2-step tiny configs.
"""

import dataclasses
import json
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train import tiny_config

from jaxdapt import batchnorm, checkpoint, sharding, step, trainer
from jaxdapt import config as config_lib
from jaxdapt.errors import ConfigError
from jaxdapt.models import layers
from jaxdapt.tree import named_leaves

EPS = layers.BN_EPSILON


class OneConv(nn.Module):
  """1×1 conv (2 channels) → BN → spatial mean as features and logits."""

  @nn.compact
  def __call__(self, x, train: bool):
    h = layers.batch_norm(train, name="bn")(layers.conv(2, 1, name="conv")(x))
    f = h.mean((1, 2))
    return {"features": f, "logits": f}


def _images(n, lo, hi, seed):
  return np.random.default_rng(seed).integers(lo, hi, (n, 4, 4, 3)).astype(np.uint8)


def _conv_np(params, images):
  """The BN input, [N·H·W, 2] in float64: normalize(x) @ K + b."""
  x = images.reshape(-1, 3).astype(np.float64) / 127.5 - 1.0
  k = np.asarray(params["conv"]["kernel"], np.float64)[0, 0]
  return x @ k + np.asarray(params["conv"]["bias"], np.float64)


def _bn_eval_np(params_bn, stats, h):
  return (h - stats["mean"]) / np.sqrt(stats["var"] + EPS) * params_bn["scale"] + params_bn["bias"]


def _one_conv_dsbn():
  """OneConv variables in the DSBN layout, the two branches made different."""
  model = OneConv()
  v = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)), train=False)
  params, stats = batchnorm.stack(v["params"], v["batch_stats"])
  params["bn"] = {
    "scale": jnp.asarray([[1.0, 2.0], [3.0, -1.0]]),
    "bias": jnp.asarray([[0.0, 0.5], [-2.0, 1.0]]),
  }
  stats["bn"] = {
    "mean": jnp.asarray([[0.1, -0.2], [0.7, 0.3]]),
    "var": jnp.asarray([[1.5, 0.5], [0.25, 2.0]]),
  }
  return model, params, stats


def test_dsbn_forward_normalises_and_updates_each_domain_in_its_own_branch():
  model, params, stats = _one_conv_dsbn()
  images = {"source": _images(6, 0, 120, 1), "target": _images(5, 100, 256, 2)}
  batch = {
    d: {"image": jnp.asarray(x), "label": jnp.zeros(len(x), jnp.int32)} for d, x in images.items()
  }
  kw = dict(bn="dsbn", dtype=jnp.float32, rng=jax.random.key(0))
  # A source-only step leaves the target branch bit-identical.
  _, only_source = step.forward_domains(model, params, stats, batch, ("source",), **kw)
  for k in ("mean", "var"):
    np.testing.assert_array_equal(only_source["bn"][k][1], stats["bn"][k][1])
  outputs, new = step.forward_domains(model, params, stats, batch, ("source", "target"), **kw)
  for i, d in enumerate(("source", "target")):
    h = _conv_np(params, images[d])
    mean, var = h.mean(0), h.var(0)
    np.testing.assert_allclose(
      new["bn"]["mean"][i], 0.9 * stats["bn"]["mean"][i] + 0.1 * mean, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
      new["bn"]["var"][i], 0.9 * stats["bn"]["var"][i] + 0.1 * var, rtol=1e-5, atol=1e-6
    )
    # Training mode: batch statistics, this branch's scale and bias.
    bn_i = {k: np.asarray(v[i]) for k, v in params["bn"].items()}
    want = _bn_eval_np(bn_i, {"mean": mean, "var": var}, h).reshape(len(images[d]), -1, 2)
    np.testing.assert_allclose(outputs[d]["logits"], want.mean(1), rtol=1e-4, atol=1e-5)


def _tiny_exp(model, config, images=None):
  return types.SimpleNamespace(
    model=model,
    config=config,
    mesh=sharding.make_mesh(),
    sources={"target": [{"image": x, "label": 0} for x in images]} if images is not None else {},
  )


def _state(params, stats):
  return step.TrainState(
    step=jnp.zeros((), jnp.int32),
    params={"model": params, "method": {}},
    batch_stats=stats,
    opt_state={},
    rng=jax.random.key(0),
  )


def test_dsbn_evaluates_source_with_the_source_branch_and_target_with_the_target_branch():
  model, params, stats = _one_conv_dsbn()
  c = config_lib.base_config()
  c.method.bn = "dsbn"
  views = trainer.eval_states(_tiny_exp(model, c), _state(params, stats))
  x = _images(3, 0, 256, 3)
  h = _conv_np(params, x)
  for i, d in enumerate(("source", "target")):
    v = views[d]
    out, _ = step.apply_model(
      model,
      v.params["model"],
      v.batch_stats,
      step.normalize(jnp.asarray(x), jnp.float32),
      train=False,
    )
    branch = {k: np.asarray(a[i]) for k, a in params["bn"].items()}
    want = _bn_eval_np(branch, {k: np.asarray(a[i]) for k, a in stats["bn"].items()}, h)
    np.testing.assert_allclose(out["logits"], want.reshape(3, -1, 2).mean(1), rtol=1e-5, atol=1e-5)


def test_adabn_statistics_are_the_numpy_mean_and_var_of_the_target_features():
  """20 target images in eval batches of 8 (the last padded): the pooled statistics are
  those of all 20 images' BN inputs, the padding rows excluded."""
  model = OneConv()
  v = model.init(jax.random.key(1), jnp.zeros((1, 4, 4, 3)), train=False)
  images = _images(20, 0, 256, 4)
  c = config_lib.base_config()
  c.data.eval_batch_size = 8
  stats = trainer.target_statistics(
    _tiny_exp(model, c, images),
    v["params"],
    v["batch_stats"],
    [{"image": x, "label": 0} for x in images],
  )
  h = _conv_np(v["params"], images)
  np.testing.assert_allclose(stats["bn"]["mean"], h.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats["bn"]["var"], h.var(0), rtol=1e-5, atol=1e-6)


def test_bn_policy_config_errors():
  c = config_lib.base_config()
  c.method.bn = "frozen"
  with pytest.raises(ConfigError, match="model.bn_mode"):
    trainer.validate(c)
  c.method.bn, c.method.name, c.model.init_from, c.model.dont_load = "dsbn", "tent", "x", ()
  with pytest.raises(ConfigError, match="dsbn"):
    trainer.validate(c)
  c = config_lib.base_config()
  c.model.bn_mode = "frozen_stats"  # dann_digits without model.norm='batch' has no BN
  with pytest.raises(ConfigError, match="model.bn_mode.*has none"):
    batchnorm.check(c, {}, trainer.eval_target(c))


def test_frozen_backbone_bn_uses_running_statistics_in_training_and_keeps_them():
  """model.bn_mode frozen_stats / frozen: the backbone's BN normalises with its running
  statistics under train=True and leaves them unchanged; the bottleneck's BN trains."""
  from jaxdapt import models

  x = jax.random.uniform(jax.random.key(0), (4, 28, 28, 3), minval=-1.0, maxval=1.0)
  for bottleneck in (None, 4):
    model = models.get_model(
      "dann_digits", num_classes=3, norm="batch", bottleneck_dim=bottleneck
    ).clone(frozen_backbone_bn=True)
    v = model.init(jax.random.key(1), x, train=False)
    v = {**v, "batch_stats": jax.tree.map(lambda a: a + 0.5, v["batch_stats"])}
    out, mutated = model.apply(v, x, train=True, mutable=["batch_stats"])
    jax.tree.map(
      np.testing.assert_array_equal,
      mutated["batch_stats"]["backbone"],
      v["batch_stats"]["backbone"],
    )
    if bottleneck is None:
      np.testing.assert_allclose(out["logits"], model.apply(v, x, train=False)["logits"], rtol=1e-6)
    else:
      assert not np.array_equal(
        mutated["batch_stats"]["bottleneck"]["bn"]["mean"],
        v["batch_stats"]["bottleneck"]["bn"]["mean"],
      )


def test_frozen_bn_mode_freezes_backbone_bn_affine_by_one_optimizer_rule():
  c = config_lib.base_config()
  c.model.bn_mode = "frozen"
  c.optim.preset = "discriminative"
  stats = {"backbone": {"bn1": {"mean": 0, "var": 0}}, "bottleneck": {"bn": {"mean": 0}}}
  optim = batchnorm.optim_config(c, stats)
  assert optim.preset == "" and optim.rules[0] == (r"model/(?:backbone/bn1)/(?:scale|bias)", None)
  assert tuple(optim.rules[1:]) == (("model/backbone/.*", 0.1), (".*", 1.0))
  assert c.optim.preset == "discriminative"  # the config itself is untouched


def _run(data_dir, workdir, method, **fields):
  c = tiny_config(data_dir, method, steps=2, log_every=1, eval_every=2, checkpoint_every=2)
  c.model.norm = "batch"
  for name, value in fields.items():
    group, key = name.split("__")
    c[group][key] = value
  trainer.train_and_evaluate(c, str(workdir))
  exp = trainer.build(c)
  init = exp.init(jax.random.key(c.seed))
  ckpt = checkpoint.Checkpointer(str(workdir), 2)
  final, _ = ckpt.restore(checkpoint.abstract_like(init))
  ckpt.close()
  evals = [r for r in map(json.loads, open(workdir / "metrics.jsonl")) if r["kind"] == "eval"]
  return exp, init, final, evals[-1]


def _bn_leaves(state, branch=None):
  """{name: array} of the model's BN scale/bias and statistics (one DSBN branch)."""
  params, stats = state.params["model"], state.batch_stats
  if branch is not None:
    params, stats = batchnorm.branch(params, stats, branch)
  names = batchnorm.modules(stats)
  out = {f"stats/{n}": np.asarray(x) for n, x in named_leaves(stats)}
  out.update({n: np.asarray(x) for n, x in named_leaves(params) if n.rpartition("/")[0] in names})
  return out


@pytest.fixture(scope="module")
def frozen_run(data_dir, tmp_path_factory):  # noqa: F811
  workdir = tmp_path_factory.mktemp("frozen")
  return workdir, _run(data_dir, workdir, "source_only", model__bn_mode="frozen")


def test_frozen_bn_mode_leaves_statistics_and_affine_bit_identical(frozen_run):
  _, (_, init, final, _) = frozen_run
  before, after = _bn_leaves(init), _bn_leaves(final)
  assert before.keys() == after.keys() and len(before) == 8  # bn1, bn2: scale, bias, mean, var
  for k in before:
    np.testing.assert_array_equal(after[k], before[k], err_msg=k)
  kernel = lambda s: np.asarray(s.params["model"]["backbone"]["conv1"]["kernel"])
  assert not np.array_equal(kernel(final), kernel(init))  # the convolutions did train


def test_dsbn_source_only_keeps_the_target_branch_and_adabn_evaluates_it(data_dir, tmp_path):
  """source_only under DSBN: the target branch (statistics, scale, bias) is bit-identical
  after training while the source branch moved; with train.eval_target_bn='target' the
  logged target metrics are those of the target branch with AdaBN statistics."""
  exp, init, final, row = _run(
    data_dir, tmp_path, "source_only", method__bn="dsbn", train__eval_target_bn="target"
  )
  for k, v in _bn_leaves(init, "target").items():
    np.testing.assert_array_equal(_bn_leaves(final, "target")[k], v, err_msg=k)
  assert not np.array_equal(
    _bn_leaves(final, "source")["stats/backbone/bn1/mean"],
    _bn_leaves(init, "source")["stats/backbone/bn1/mean"],
  )
  views = trainer.eval_states(exp, final)
  adabn = trainer.evaluate(exp, views["target"], "target_test")
  assert row["target_test_nll"] == pytest.approx(adabn["target_test_nll"], rel=1e-6)
  running = views["target"].replace(
    batch_stats=batchnorm.branch(final.params["model"], final.batch_stats, "target")[1]
  )
  assert trainer.evaluate(exp, running, "target_test")["target_test_nll"] != pytest.approx(
    row["target_test_nll"], rel=1e-3
  )
  # model.init_from this DSBN run: both branches load as they are, into a DSBN model only.
  c = exp.config.copy_and_resolve_references()
  c.model.init_from, c.model.dont_load = str(tmp_path), ()
  fresh = exp.init(jax.random.key(1))
  loaded = trainer.load_init_from(dataclasses.replace(exp, config=c), fresh)
  for k, v in _bn_leaves(final).items():
    np.testing.assert_array_equal(_bn_leaves(loaded)[k], v, err_msg=k)
  c.method.bn = "separate"
  params, stats = batchnorm.branch(fresh.params["model"], fresh.batch_stats, "source")
  one_branch = fresh.replace(params={**fresh.params, "model": params}, batch_stats=stats)
  with pytest.raises(ConfigError, match="DSBN"):
    trainer.load_init_from(dataclasses.replace(exp, config=c), one_branch)


def test_dsbn_init_from_a_one_branch_model_loads_it_into_both_branches(data_dir, frozen_run):
  workdir, (_, _, source_model, _) = frozen_run
  c = tiny_config(data_dir, "dann")
  c.model.norm, c.method.bn, c.model.init_from = "batch", "dsbn", str(workdir)
  exp = trainer.build(c)
  state = trainer.load_init_from(exp, exp.init(jax.random.key(1)))
  want = _bn_leaves(source_model)
  for domain in ("source", "target"):
    got = _bn_leaves(state, domain)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=f"{domain}: {k}")


def test_adabn_method_evaluates_target_with_target_statistics_source_with_source(
  data_dir, tmp_path
):
  exp, _, final, row = _run(data_dir, tmp_path, "adabn")
  assert row["source_val_nll"] == pytest.approx(
    trainer.evaluate(exp, final, "source_val")["source_val_nll"], rel=1e-6
  )
  adapted = trainer.eval_states(exp, final)["target"]
  assert row["target_test_nll"] == pytest.approx(
    trainer.evaluate(exp, adapted, "target_test")["target_test_nll"], rel=1e-6
  )
  assert row["target_test_nll"] != pytest.approx(
    trainer.evaluate(exp, final, "target_test")["target_test_nll"], rel=1e-3
  )
