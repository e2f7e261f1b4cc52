"""Each method loss against an independent NumPy formula, closed form or property."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdapt import config as config_lib
from jaxdapt import methods, trainer
from jaxdapt.errors import ConfigError
from jaxdapt.methods import method_losses as ml


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _entropy(p):
  return -(p * np.log(p)).sum(-1)


def _rng(seed):
  return np.random.default_rng(seed)


# --- CDAN ---------------------------------------------------------------------------------


def test_multilinear_map_is_flattened_outer_product():
  f, g = _rng(0).normal(size=(5, 7)), _softmax(_rng(1).normal(size=(5, 3)))
  expected = np.einsum("bi,bj->bij", f, g).reshape(5, 21)
  np.testing.assert_allclose(ml.multilinear_map(f, g), expected, rtol=1e-5, atol=1e-6)


def test_randomized_multilinear_map_matches_formula_and_preserves_inner_products():
  f, g = _rng(2).normal(size=(4, 30)), _softmax(_rng(3).normal(size=(4, 6)))
  r_f, r_g = ml.cdan_random_matrices(30, 6, 1024)
  assert r_f.shape == (30, 1024) and r_g.shape == (6, 1024)
  r_f2, _ = ml.cdan_random_matrices(30, 6, 1024)
  np.testing.assert_array_equal(r_f, r_f2)  # fixed across calls (and resumptions)
  expected = (f @ r_f) * (g @ r_g) / np.sqrt(1024)
  out = np.asarray(ml.randomized_multilinear_map(f, g, r_f, r_g))
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
  # E[⟨T⊙(a), T⊙(b)⟩] = ⟨T⊗(a), T⊗(b)⟩: check the Gram matrices agree on average.
  full = np.einsum("bi,bj->bij", f, g).reshape(4, -1)
  grams = []
  for seed in range(20):
    rf, rg = ml.cdan_random_matrices(30, 6, 1024, seed)
    t = (f @ rf) * (g @ rg) / np.sqrt(1024)
    grams.append(t @ t.T)
  np.testing.assert_allclose(
    np.mean(grams, 0), full @ full.T, rtol=0.1, atol=0.05 * np.abs(full @ full.T).max()
  )


def test_entropy_weights_normalised_and_favour_confident_examples():
  logits = np.array([[10.0, 0, 0], [0, 0, 0], [2.0, 1, 0]])
  w = np.asarray(ml.entropy_weights(logits))
  raw = 1 + np.exp(-_entropy(_softmax(logits)))
  np.testing.assert_allclose(w, raw / raw.sum(), rtol=1e-5)
  assert w[0] > w[2] > w[1]


def _method(name, **fields):
  c = config_lib.base_config()
  c.method.name = name
  for k, v in fields.items():
    c.method[k] = v
  return methods.get_method(c.method)


def _outputs(seed, b=8, d=12, c=4):
  r = _rng(seed)
  return {
    dom: {
      "features": jnp.asarray(np.abs(r.normal(size=(b, d))), jnp.float32),
      "logits": jnp.asarray(r.normal(size=(b, c)) * 2, jnp.float32),
      "labels": jnp.asarray(r.integers(0, c, b)),
    }
    for dom in ("source", "target")
  }


@pytest.mark.parametrize("name", ["cdan", "cdan_e"])
@pytest.mark.parametrize("d", [12, 1200])
def test_cdan_loss_matches_numpy_discriminator_loss(name, d):
  method = _method(name, disc_hidden=(16,))
  out = _outputs(4, d=d)
  params = method.init(jax.random.key(0), d, 4)
  assert params["discriminator"]["Dense_0"]["kernel"].shape[0] == (48 if d == 12 else 1024)
  loss, metrics = method.loss(params, out, jnp.float32(1.0), jax.random.key(1))
  # NumPy reference: map, 1-hidden-layer discriminator, (weighted) BCE.
  f = np.concatenate([np.asarray(out[k]["features"]) for k in ("source", "target")])
  z = np.concatenate([np.asarray(out[k]["logits"]) for k in ("source", "target")])
  g = _softmax(z)
  if d * 4 <= 4096:
    h = np.einsum("bi,bj->bij", f, g).reshape(16, -1)
  else:
    r_f, r_g = ml.cdan_random_matrices(d, 4, 1024)
    h = (f @ r_f) * (g @ r_g) / np.sqrt(1024)
  p = jax.tree.map(np.asarray, params["discriminator"])
  hid = np.maximum(h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)
  logit = (hid @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])[:, 0]
  y = np.r_[np.ones(8), np.zeros(8)]
  bce = np.logaddexp(0, logit) - y * logit
  if name == "cdan":
    expected = bce.mean()
  else:
    w = 1 + np.exp(-_entropy(g))
    w = np.r_[w[:8] / w[:8].sum(), w[8:] / w[8:].sum()]
    expected = (w * bce).sum() / 2
  np.testing.assert_allclose(loss, expected, rtol=2e-4)
  np.testing.assert_allclose(metrics["domain_loss"], expected, rtol=2e-4)


def test_cdan_reverses_the_gradient_into_the_features():
  method = _method("cdan", disc_hidden=(16,), weight_schedule="constant", weight=0.5)
  out = _outputs(5)
  params = method.init(jax.random.key(0), 12, 4)

  def loss_of_feats(fs, coeff_one):
    o = {k: dict(v) for k, v in out.items()}
    o["source"]["features"] = fs
    m = (
      method
      if not coeff_one
      else _method("cdan", disc_hidden=(16,), weight_schedule="constant", weight=0.0)
    )
    return m.loss(params, o, jnp.float32(0.3), jax.random.key(0))[0]

  g_rev = jax.grad(loss_of_feats)(out["source"]["features"], False)

  # Same loss without reversal: the discriminator's own gradient w.r.t. its input direction.
  def plain(fs):
    o = {k: dict(v) for k, v in out.items()}
    o["source"]["features"] = fs
    f = jnp.concatenate([fs, o["target"]["features"]])
    z = jnp.concatenate([o["source"]["logits"], o["target"]["logits"]])
    h = ml.multilinear_map(f, jax.nn.softmax(z))
    logit = method.discriminator.apply({"params": params["discriminator"]}, h)
    y = jnp.r_[jnp.ones(8), jnp.zeros(8)]
    return jnp.mean(jnp.logaddexp(0, logit) - y * logit)

  np.testing.assert_allclose(
    g_rev, -0.5 * jax.grad(plain)(out["source"]["features"]), rtol=1e-4, atol=1e-7
  )


# --- MCC ----------------------------------------------------------------------------------


def _np_mcc(z, t):
  p = _softmax(z / t)
  b, c = p.shape
  w = 1 + np.exp(-_entropy(p))
  w = b * w / w.sum()
  conf = p.T @ np.diag(w) @ p
  conf = conf / conf.sum(1, keepdims=True)
  return (conf.sum() - np.trace(conf)) / c


def test_mcc_matches_numpy():
  z = _rng(6).normal(size=(32, 10)) * 3
  np.testing.assert_allclose(ml.minimum_class_confusion(z, 2.5), _np_mcc(z, 2.5), rtol=1e-5)
  np.testing.assert_allclose(ml.minimum_class_confusion(z, 1.0), _np_mcc(z, 1.0), rtol=1e-5)


def test_mcc_is_zero_for_confident_one_per_class_predictions():
  z = np.eye(5) * 100.0
  assert float(ml.minimum_class_confusion(z, 2.5)) < 1e-6


# --- entropy minimisation -----------------------------------------------------------------


def test_entropy_min_matches_numpy():
  out = _outputs(7)
  loss, m = _method("entropy_min", weight=0.1, weight_schedule="constant").loss(
    {}, out, jnp.float32(0.5), jax.random.key(0)
  )
  expected = _entropy(_softmax(np.asarray(out["target"]["logits"]))).mean()
  np.testing.assert_allclose(m["target_entropy"], expected, rtol=1e-5)
  np.testing.assert_allclose(loss, 0.1 * expected, rtol=1e-5)


# --- JAN ----------------------------------------------------------------------------------


def _np_gauss(z, mults=None, fixed=None):
  d = ((z[:, None] - z[None]) ** 2).sum(-1)
  if fixed is not None:
    return np.exp(-d / fixed)
  n = len(z)
  s2 = d.sum() / (n * (n - 1))
  return np.mean([np.exp(-d / (m * s2)) for m in mults], 0)


def test_jan_matches_numpy_product_kernel():
  out = _outputs(8, b=10, d=6)
  mults = (0.25, 0.5, 1.0, 2.0, 4.0)
  loss, m = _method("jan", weight=1.0, weight_schedule="constant").loss(
    {}, out, jnp.float32(0.5), jax.random.key(0)
  )
  f = np.concatenate([np.asarray(out[k]["features"]) for k in ("source", "target")])
  p = _softmax(np.concatenate([np.asarray(out[k]["logits"]) for k in ("source", "target")]))
  k = _np_gauss(f, mults) * _np_gauss(p, fixed=1.68)
  expected = k[:10, :10].mean() + k[10:, 10:].mean() - 2 * k[:10, 10:].mean()
  np.testing.assert_allclose(m["jmmd"], expected, rtol=1e-4)
  np.testing.assert_allclose(loss, expected, rtol=1e-4)


def test_jmmd_of_identical_samples_is_zero():
  x = jnp.asarray(_rng(9).normal(size=(8, 5)), jnp.float32)
  p = jax.nn.softmax(x[:, :3])
  v = ml.joint_mmd((x, p), (x, p), ((1.0, 2.0), None), (None, 1.68))
  assert abs(float(v)) < 1e-6


# --- AFN ----------------------------------------------------------------------------------


def test_afn_value_and_gradient_match_numpy():
  h = _rng(10).normal(size=(6, 5))
  np.testing.assert_allclose(ml.stepwise_feature_norm(h, 1.0), 1.0, rtol=1e-6)
  g = jax.grad(lambda x: ml.stepwise_feature_norm(x, 1.0))(jnp.asarray(h, jnp.float32))
  # d/dh mean_i (‖h_i‖ − c_i)² at c_i = ‖h_i‖ + Δr: −2Δr h_i / ‖h_i‖ / B.
  norms = np.linalg.norm(h, axis=1, keepdims=True)
  np.testing.assert_allclose(g, -2.0 * h / norms / 6, rtol=1e-4)
  out = _outputs(11)
  loss, _ = _method("afn", weight=0.05, weight_schedule="constant").loss(
    {}, out, jnp.float32(0.5), jax.random.key(0)
  )
  np.testing.assert_allclose(loss, 0.05 * 2 * 1.0, rtol=1e-5)  # λ (Δr² + Δr²)
  assert np.all(np.isfinite(jax.grad(lambda x: ml.stepwise_feature_norm(x))(jnp.zeros((2, 3)))))


# --- MDD ----------------------------------------------------------------------------------


def test_mdd_disparities_match_numpy():
  r = _rng(12)
  aux, main = r.normal(size=(9, 5)) * 3, r.normal(size=(9, 5))
  k = main.argmax(1)
  p = _softmax(aux)[np.arange(9), k]
  np.testing.assert_allclose(ml.mdd_source_disparity(aux, main), -np.log(p).mean(), rtol=1e-5)
  np.testing.assert_allclose(ml.mdd_target_disparity(aux, main), -np.log1p(-p).mean(), rtol=1e-4)
  # Stable when f' is certain of the pseudo-label (1 − p underflows in float32).
  big = np.zeros((1, 3))
  big[0, 0] = 60.0
  v = float(ml.mdd_target_disparity(big, np.array([[1.0, 0, 0]])))
  np.testing.assert_allclose(v, 60.0 - np.log(2), rtol=1e-4)


def test_mdd_loss_weighs_source_by_margin_and_reverses_feature_gradient():
  method = _method(
    "mdd", aux_head_hidden=(8,), mdd_margin=4.0, weight=1.0, weight_schedule="constant"
  )
  out = _outputs(13)
  params = method.init(jax.random.key(0), 12, 4)
  loss, m = method.loss(params, out, jnp.float32(0.5), jax.random.key(0))
  np.testing.assert_allclose(loss, 4.0 * m["mdd_source"] + m["mdd_target"], rtol=1e-6)
  # f' descends the loss; the features' gradient is the negated gradient (GRL, coeff 1).
  head = method.head(4)

  def direct(fs):
    aux = head.apply({"params": params["aux_head"]}, fs, train=False)
    return 4.0 * ml.mdd_source_disparity(aux, out["source"]["logits"])

  def through_method(fs):
    o = {k: dict(v) for k, v in out.items()}
    o["source"]["features"] = fs
    return method.loss(params, o, jnp.float32(0.5), jax.random.key(0))[0]

  fs = out["source"]["features"]
  np.testing.assert_allclose(
    jax.grad(through_method)(fs), -jax.grad(direct)(fs), rtol=1e-4, atol=1e-7
  )


# --- BSP ----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2])
def test_bsp_matches_numpy_svd(k):
  x = _rng(14).normal(size=(16, 24))
  s = np.linalg.svd(x, compute_uv=False)
  np.testing.assert_allclose(ml.batch_spectral_penalty(x, k), (s[:k] ** 2).sum(), rtol=1e-4)
  assert np.all(np.isfinite(jax.grad(lambda a: ml.batch_spectral_penalty(a, k))(jnp.asarray(x))))


@pytest.mark.parametrize("name", ["dann", "cdan"])
def test_bsp_adds_weighted_penalty_in_dann_and_cdan(name):
  out = _outputs(15)
  base = _method(name, disc_hidden=(16,))
  params = base.init(jax.random.key(0), 12, 4)
  l0, m0 = base.loss(params, out, jnp.float32(0.5), jax.random.key(0))
  assert "bsp" not in m0
  l1, m1 = _method(name, disc_hidden=(16,), bsp_weight=1e-4).loss(
    params, out, jnp.float32(0.5), jax.random.key(0)
  )
  expected = sum(
    (np.linalg.svd(np.asarray(out[d]["features"]), compute_uv=False)[0]) ** 2
    for d in ("source", "target")
  )
  np.testing.assert_allclose(m1["bsp"], expected, rtol=1e-4)
  np.testing.assert_allclose(l1 - l0, 1e-4 * expected, rtol=1e-3)


# --- config checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
  "name,field,value",
  [
    ("mcc", "mcc_temperature", 0.0),
    ("afn", "afn_delta_r", -1.0),
    ("mdd", "mdd_margin", -4.0),
    ("mdd", "aux_head_hidden", (0,)),
    ("cdan", "cdan_random_dim", 0),
    ("dann", "bsp_weight", -1e-4),
    ("cdan_e", "bsp_k", 0),
    ("jan", "jan_softmax_bandwidth", 0),
  ],
)
def test_bad_method_field_is_named(name, field, value):
  with pytest.raises(ConfigError, match=f"method.{field}"):
    _method(name, **{field: value})


def test_unknown_method_still_gives_registry_error():
  c = config_lib.base_config()
  c.method.name = "cdann"
  c.method.mcc_temperature = -1.0
  with pytest.raises(ConfigError, match="method.name: unknown method 'cdann'; allowed: .*cdan"):
    trainer.validate(c)


# --- MCD ----------------------------------------------------------------------------------


def test_mcd_discrepancy_is_mean_l1_between_softmaxes():
  r = _rng(16)
  a, b = r.normal(size=(7, 5)), r.normal(size=(7, 5))
  np.testing.assert_allclose(
    ml.classifier_discrepancy(a, b), np.abs(_softmax(a) - _softmax(b)).mean(), rtol=1e-5
  )
  assert float(ml.classifier_discrepancy(a, a)) == 0.0
