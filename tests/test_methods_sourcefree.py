"""SHOT, TENT and ADDA: losses against NumPy formulas, and properties of one update step."""

import functools

import jax
import numpy as np
import pytest
from test_methods import _entropy, _rng, _softmax
from test_methods_train import _named, tiny

from jaxdapt import config as config_lib
from jaxdapt import losses, sharding, step, trainer
from jaxdapt.errors import ConfigError
from jaxdapt.methods import adda, subset, tent
from jaxdapt.methods import method_losses as ml

# --- pure losses ---------------------------------------------------------------------------


def test_information_maximization_matches_formula():
  z = 3.0 * _rng(0).normal(size=(8, 5))
  p = _softmax(z)
  mean_entropy = _entropy(p).mean()
  p_bar = p.mean(0)
  diversity = -(p_bar * np.log(p_bar)).sum()
  im, ent, div = ml.information_maximization(z)
  np.testing.assert_allclose(
    [im, ent, div], [mean_entropy - diversity, mean_entropy, diversity], rtol=1e-5, atol=1e-6
  )
  # Confident and diverse (one-hot, all classes) reaches the minimum −log C; collapse does not.
  confident = 50.0 * np.eye(5)
  np.testing.assert_allclose(ml.information_maximization(confident)[0], -np.log(5), atol=1e-4)
  collapsed = np.tile(confident[:1], (5, 1))
  assert float(ml.information_maximization(collapsed)[0]) > -1e-4
  assert np.isfinite(ml.information_maximization(1e4 * confident)[0])


def _np_shot_pseudo_labels(features, logits):
  """SHOT's pseudo-labels, written from the paper: weighted centroids, one refinement."""
  f = features / np.linalg.norm(features, axis=1, keepdims=True)
  p = _softmax(logits)

  def assign(centroids, classes):
    c = centroids[classes] / np.linalg.norm(centroids[classes], axis=1, keepdims=True)
    return classes[(1.0 - f @ c.T).argmin(1)]  # cosine distance

  c0 = np.stack([(p[:, k : k + 1] * f).sum(0) / p[:, k].sum() for k in range(p.shape[1])])
  y0 = assign(c0, np.unique(p.argmax(1)))
  present = np.unique(y0)
  c1 = np.zeros_like(c0)
  for k in present:
    c1[k] = f[y0 == k].mean(0)
  return assign(c1, present), c1, present


def test_shot_pseudo_labels_match_numpy_weighted_centroids():
  rng = _rng(1)
  num_classes, dim = 6, 12
  means = rng.normal(size=(num_classes, dim))
  truth = rng.integers(0, num_classes - 1, 200)  # the last class has no example
  features = means[truth] + 0.8 * rng.normal(size=(200, dim))
  logits = 2.0 * np.eye(num_classes)[truth] + 1.5 * rng.normal(size=(200, num_classes))
  logits[:, -1] -= 10.0  # ... and is never predicted: it must get no centroid
  expected, c1, present = _np_shot_pseudo_labels(features, logits)
  centroids, valid = ml.shot_centroids(features, logits)
  np.testing.assert_array_equal(np.flatnonzero(valid), present)
  unit = lambda c: c / np.linalg.norm(c, axis=-1, keepdims=True)
  np.testing.assert_allclose(
    unit(np.asarray(centroids)[present]), unit(c1[present]), rtol=1e-4, atol=1e-5
  )
  labels = np.asarray(ml.nearest_centroid(features, centroids, valid))
  np.testing.assert_array_equal(labels, expected)
  assert (labels != num_classes - 1).all()
  # The refinement is not a no-op here: plain argmax labels differ from the pseudo-labels.
  assert (labels != logits.argmax(1)).any()


def test_label_smoothed_cross_entropy_matches_formula():
  z, y = _rng(2).normal(size=(7, 4)), _rng(3).integers(0, 4, 7)
  logp = np.log(_softmax(z))
  eps = 0.1
  expected = -((1 - eps) * logp[np.arange(7), y] + eps * logp.mean(1)).mean()
  np.testing.assert_allclose(losses.cross_entropy(z, y, eps), expected, rtol=1e-5)
  np.testing.assert_allclose(
    losses.cross_entropy(z, y, 0.0), -logp[np.arange(7), y].mean(), rtol=1e-5
  )


def test_tent_online_accuracy_is_weighted_over_the_steps_rows_cover():
  rows = [
    {"step": 2, "online_acc": 0.5},
    {"step": 4, "online_acc": 1.0},
    {"step": 5, "online_acc": 0.0},
  ]
  method = tent.TENT(config_lib.base_config().method)
  assert method.summarize(rows) == {"target_online_acc": pytest.approx((1 + 2 + 0) / 5)}
  assert method.summarize([{"step": 1, "loss": 0.0}]) == {}


@pytest.mark.parametrize(
  "field,value,match",
  [
    ("model.init_from", "", "model.init_from"),
    ("model.dont_load", ("head/.*",), "model.dont_load"),
    ("method.label_smoothing", 1.0, "label_smoothing"),
    ("method.refresh_every", -1, "refresh_every"),
  ],
)
def test_config_checks_of_the_stage2_methods(field, value, match):
  c = config_lib.base_config()
  c.method.name = "shot"
  c.model.init_from = "runs/stage1"
  c.model.dont_load = ()
  trainer.validate(c)
  group, key = field.split(".")
  c[group][key] = value
  with pytest.raises(ConfigError, match=match):
    trainer.validate(c)


# --- one update step on the tiny digits model ----------------------------------------------


def _exp(data_dir, method, **optim):
  c = tiny(data_dir, method, norm="batch")
  c.model.init_from = "unused: build does not load it"
  for k, v in optim.items():
    c.optim[k] = v
  return trainer.build(c)


def _batch(exp, labels_seed=None):
  """A global batch of both domains; labels_seed replaces every label by random ones."""
  local = next(trainer.train_iterators(exp))
  if labels_seed is not None:
    for i, d in enumerate(local):
      local[d] = {
        **local[d],
        "label": _rng(labels_seed + i).integers(0, 10, local[d]["label"].shape).astype(np.int32),
      }
  return sharding.global_batch(local, exp.mesh)


def test_tent_step_changes_only_batchnorm_affine_parameters(data_dir):
  """Even with no freezing rule and weight decay on every kernel (the experiment's rules
  are checked in test_methods_twostage_train.py)."""
  exp = _exp(data_dir, "tent", rules=((".*", 1.0),), name="sgd", lr=0.1, weight_decay=1e-2)
  state = exp.init(jax.random.key(0))
  before, stats_before = _named(state.params), _named(state.batch_stats)
  assert sum(tent.batchnorm_affine(state.batch_stats)(n) for n in before) == 4  # bn1, bn2
  state, metrics = exp.update(state, _batch(exp))
  after = _named(state.params)
  for name, old in before.items():
    moved = not np.array_equal(old, after[name])
    assert moved == tent.batchnorm_affine(state.batch_stats)(name), name
  assert any(not np.array_equal(v, _named(state.batch_stats)[k]) for k, v in stats_before.items())
  assert 0.0 <= float(metrics["online_acc"]) <= 1.0 and np.isfinite(metrics["loss"])


def test_shot_step_uses_no_label_and_keeps_the_head(data_dir):
  exp = _exp(data_dir, "shot")
  assert exp.method.domains == ("target",)  # the trainer never hands it a source batch
  extra = exp.method.refresh(exp, exp.init(jax.random.key(0)))
  assert extra["centroids"].shape[0] == 10 and bool(extra["valid"].any())
  results = []
  for labels_seed in (None, 10, 20):  # real labels, then two sets of random ones
    state = exp.init(jax.random.key(0))
    before = _named(state.params)
    state, metrics = exp.update(state, _batch(exp, labels_seed), extra)
    results.append((_named(state.params), jax.device_get(metrics)))
  for params, metrics in results[1:]:  # any label read would change the update
    for name, value in results[0][0].items():
      np.testing.assert_array_equal(value, params[name], err_msg=name)
    assert metrics == results[0][1]
  params, metrics = results[0]
  for name, old in before.items():
    if name.startswith("model/head/"):
      np.testing.assert_array_equal(old, params[name], err_msg=name)
  assert any(
    not np.array_equal(before[n], params[n]) for n in before if subset.is_feature_extractor(n)
  )
  assert all(np.isfinite(metrics[k]) for k in ("loss", "im_loss", "pseudo_ce"))


def _adda_loss_only(kind, p, s, *, batch_stats, batch, kw):
  return adda.adda_loss(kind, p, s, batch_stats, batch, jax.random.key(2), **kw)[0]


def test_adda_gradients_reach_only_their_substep_and_never_the_source_encoder(data_dir):
  """(Which parameters a whole step moves: test_methods_twostage_train.py.)"""
  exp = _exp(data_dir, "adda")
  state = exp.init(jax.random.key(0))
  source = exp.init(jax.random.key(1))
  source_model = {"params": source.params["model"], "batch_stats": source.batch_stats}
  batch = _batch(exp)
  kw = dict(model=exp.model, method=exp.method, dtype=np.float32, mean_std=step.DEFAULT_MEAN_STD)

  for kind, trains in (("D", adda.is_discriminator), ("M", subset.is_feature_extractor)):
    loss = functools.partial(
      _adda_loss_only, kind, batch_stats=state.batch_stats, batch=batch, kw=kw
    )
    to_params, to_source = map(_named, jax.jit(jax.grad(loss, (0, 1)))(state.params, source_model))
    assert to_source and all(not v.any() for v in to_source.values()), kind
    assert all(not v.any() for n, v in to_params.items() if not trains(n)), kind
    assert any(v.any() for n, v in to_params.items() if trains(n)), kind
