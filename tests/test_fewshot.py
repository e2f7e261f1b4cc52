"""k labeled target examples per class (data/labeled.py, methods/fewshot.py) and MME."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train import tiny_config

from jaxdapt import checkpoint, methods, models, trainer
from jaxdapt import config as config_lib
from jaxdapt.data.labeled import select_per_class
from jaxdapt.errors import ConfigError
from jaxdapt.methods import fewshot, mme
from jaxdapt.methods.method_losses import entropy

LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(4), [5, 6, 7, 8]))


@pytest.mark.parametrize("k", [1, 5])
def test_selection_is_stratified_exact_and_deterministic_per_seed(k):
  picked = select_per_class(LABELS, k, seed=3)
  assert np.all(np.diff(picked) > 0)  # sorted, no repeats
  np.testing.assert_array_equal(np.bincount(LABELS[picked]), [k] * 4)
  np.testing.assert_array_equal(select_per_class(LABELS, k, seed=3), picked)
  others = [select_per_class(LABELS, k, seed=s) for s in range(4, 8)]
  assert any(not np.array_equal(o, picked) for o in others)


def test_selection_all_and_too_few():
  np.testing.assert_array_equal(select_per_class(LABELS, -1, seed=0), np.arange(len(LABELS)))
  with pytest.raises(ConfigError, match="class 0"):
    select_per_class(LABELS, 6, seed=0)


def test_supervised_outputs_concatenate_the_supervised_domains():
  method = fewshot.with_labeled_target(methods.get_method(config_lib.base_config().method), 5)
  assert method.domains == ("source", methods.LABELED)
  out = {
    d: {"logits": jnp.full((2, 3), i), "labels": jnp.full((2,), i)}
    for i, d in enumerate(method.domains)
  }
  sup = method.supervised_outputs(out)
  np.testing.assert_array_equal(sup["labels"], [0, 0, 1, 1])
  assert sup["logits"].shape == (4, 3)


def _kshot(data_dir, method, k=2):
  c = tiny_config(data_dir, method)
  c.data.target_labeled_per_class = k
  return c


def test_labeled_target_is_a_third_resumable_stream_of_the_selected_examples(data_dir, tmp_path):
  c = _kshot(data_dir, "source_only")
  c.data.augment = "none"  # so the labeled batches' images are the pool's, byte for byte
  exp = trainer.build(c, jax.devices()[:1])
  assert exp.method.domains == ("source", methods.LABELED)
  assert exp.method.supervised_domain == ("source", methods.LABELED)
  pool = exp.sources[methods.LABELED]
  assert len(pool) == 20  # 2 per class × 10
  pool_images = {pool[i]["image"].tobytes() for i in range(len(pool))}
  make = lambda: trainer.train_iterators(exp)
  reference = [next(it) for it in [make()] for _ in range(5)]
  assert all(set(b) == {"source", "target", methods.LABELED} for b in reference)
  assert all(img.tobytes() in pool_images for b in reference for img in b[methods.LABELED]["image"])
  it = make()
  for _ in range(2):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  resumed = make()
  resumed.set_state(state)
  # ... and through the trainer's checkpoint, saved with the train state.
  ckpt = checkpoint.Checkpointer(str(tmp_path), 2)
  train_state = exp.init(jax.random.key(0))
  ckpt.save(2, train_state, it, c)
  ckpt.wait()
  restored = make()
  ckpt.restore(checkpoint.abstract_like(train_state), restored)
  ckpt.close()
  for want in reference[2:]:
    for got in (next(resumed), next(restored)):
      for d in want:
        np.testing.assert_array_equal(got[d]["image"], want[d]["image"])
        np.testing.assert_array_equal(got[d]["label"], want[d]["label"])


def _mme(data_dir):
  c = _kshot(data_dir, "mme", k=1)
  c.model.cosine_temperature, c.model.head_hidden = 0.05, ()
  c.method.weight, c.method.weight_schedule = 0.1, "constant"
  c.train.steps, c.train.eval_every = 2, 2
  return c


def test_mme_trains_on_three_streams(data_dir, tmp_path):
  c, devices = _mme(data_dir), jax.devices()[:1]
  assert trainer.build(c, devices).method.domains == ("source", "target", methods.LABELED)
  summary = trainer.train_and_evaluate(c, str(tmp_path), devices=devices)
  assert 0 <= summary["target_acc_last"] <= 1
  rows = [r for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if r["kind"] == "train"]
  for r in rows:  # the entropy term is all of MME's transfer loss (λ = 0.1, constant)
    np.testing.assert_allclose(r["transfer_loss"], -0.1 * r["target_entropy"], rtol=1e-5)
    assert 0 < r["target_entropy"] <= np.log(10) + 1e-5


@pytest.mark.parametrize(
  "method, k, match",
  [
    ("target_only", 0, "set k"),
    ("mcd", 5, "does not train on labeled target"),
    ("target_oracle", 5, "does not train on labeled target"),
    ("source_only", -2, "target_labeled_per_class"),
    ("mme", 5, "cosine_temperature"),
  ],
)
def test_bad_kshot_configs_fail_with_the_field(method, k, match):
  c = config_lib.base_config()
  c.method.name = method
  c.data.target_labeled_per_class = k
  with pytest.raises(ConfigError, match=match):
    trainer.validate(c)


# --- MME ---------------------------------------------------------------------------------


def _cosine_model_and_params(features_dim=6, classes=4):
  from jaxdapt.models.classifier import MLPHead

  head = MLPHead(classes, (), cosine_temperature=0.05)
  params = head.init(jax.random.key(0), jnp.zeros((1, features_dim)), train=False)["params"]
  model = models.get_model("dann_digits", num_classes=classes).clone(cosine_temperature=0.05)
  return model, {"head": params}


def test_mme_loss_is_minus_lambda_times_the_entropy_of_the_cosine_classifier():
  model, params = _cosine_model_and_params()
  f = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
  loss, h = mme.adversarial_entropy(model, params, f, 0.1, jax.random.key(0))
  w = np.asarray(params["head"]["out"]["kernel"])
  cos = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0))
  z = cos / 0.05
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  expected_h = np.mean(-(p * np.log(p)).sum(1))
  np.testing.assert_allclose(h, expected_h, rtol=1e-4)
  np.testing.assert_allclose(loss, -0.1 * expected_h, rtol=1e-4)


def test_mme_entropy_gradient_is_reversed_on_the_features_only():
  """The classifier descends −λH (raises the entropy); the features descend +λH."""
  model, params = _cosine_model_and_params()
  f = jnp.asarray(np.random.default_rng(2).normal(size=(5, 6)), jnp.float32)
  key = jax.random.key(0)
  mme_loss = lambda p, x: mme.adversarial_entropy(model, p, x, 0.1, key)[0]

  def plain(p, x):  # −λH without the reversal
    logits = model.apply({"params": p}, x, train=True, method="classify")
    return -0.1 * entropy(logits).mean()

  g_params, g_features = jax.grad(mme_loss, argnums=(0, 1))(params, f)
  p_params, p_features = jax.grad(plain, argnums=(0, 1))(params, f)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5), g_params, p_params)
  np.testing.assert_allclose(g_features, -p_features, rtol=1e-5)
  assert np.abs(p_features).max() > 0
