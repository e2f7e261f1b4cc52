"""jaxdapt.analysis: each score against an independent NumPy transcription of
the paper's formula on fixed random inputs, plus the properties it must have."""

import base64
import json
import math
import re

import numpy as np
import pytest

from jaxdapt.analysis import plots, selection, shift
from jaxdapt.analysis import transferability as tr


def _rng(seed=0):
  return np.random.default_rng(seed)


def _separable(n=200, d=16, k=4, scale=3.0, seed=0):
  rng = _rng(seed)
  y = np.arange(n) % k
  centres = rng.normal(size=(k, d)) * scale
  return centres[y] + rng.normal(size=(n, d)), y


# ---------------------------------------------------------------- shift


def test_pad_near_zero_for_one_gaussian_and_near_two_when_separated():
  rng = _rng(1)
  a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
  assert abs(shift.proxy_a_distance(a, b)) <= 0.3
  assert shift.proxy_a_distance(a, b + 6.0) >= 1.9
  assert shift.proxy_a_distance(a, b + 6.0, classifier="svm") >= 1.9


def _np_unbiased_mmd2(x, y, sigma):
  def k(a, b):
    return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * sigma**2))

  kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
  n, m = len(x), len(y)
  return (
    (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    - 2 * kxy.mean()
  )


def test_mmd2_matches_numpy_u_statistic_and_median_heuristic():
  rng = _rng(2)
  x, y = rng.normal(size=(40, 5)), rng.normal(0.5, 1.2, size=(30, 5))
  np.testing.assert_allclose(
    shift.mmd2(x, y, bandwidth=1.7), _np_unbiased_mmd2(x, y, 1.7), rtol=1e-9
  )
  z = np.concatenate([x, y])
  d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
  sigma = math.sqrt(np.median(d2[np.triu_indices(len(z), 1)]))
  res = shift.mmd_test(x, y, n_permutations=0)
  np.testing.assert_allclose(res.bandwidth, sigma, rtol=1e-9)
  np.testing.assert_allclose(res.mmd2, _np_unbiased_mmd2(x, y, sigma), rtol=1e-9)


def test_mmd_permutation_p_values():
  rng = _rng(3)
  a, b = rng.normal(size=(150, 10)), rng.normal(size=(150, 10))
  same = shift.mmd_test(a, b, n_permutations=200, seed=0)
  shifted = shift.mmd_test(a, b + 0.5, n_permutations=200, seed=0)
  assert same.p_value > 0.05
  assert shifted.p_value < 0.01
  assert shifted == shift.mmd_test(a, b + 0.5, n_permutations=200, seed=0)  # seeded


def test_coral_distance_matches_numpy():
  rng = _rng(4)
  s, t = rng.normal(size=(50, 6)), rng.normal(1.0, 2.0, size=(40, 6))
  expected = np.sum((np.cov(s.T) - np.cov(t.T)) ** 2) / (4 * 6 * 6)
  np.testing.assert_allclose(shift.coral_distance(s, t), expected, rtol=1e-10)


def test_shift_report_per_class_finds_the_shifted_class():
  rng = _rng(5)
  ys, yt = np.arange(240) % 2, np.arange(200) % 2
  src = rng.normal(size=(240, 6)) + 4.0 * ys[:, None]
  tgt = rng.normal(size=(200, 6)) + 4.0 * yt[:, None] + 2.0 * (yt == 0)[:, None]  # class 0 moves
  rep = shift.shift_report(src, tgt, ys, yt, seed=0, n_permutations=100)
  assert set(rep) >= {"pad", "mmd2", "mmd_p_value", "coral", "label_tv", "per_class"}
  pc = rep["per_class"]
  assert pc[0]["pad"] > 1.5 and pc[0]["mmd_p_value"] < 0.05
  assert pc[1]["pad"] < 0.5 and pc[1]["mmd_p_value"] > 0.05
  assert rep["label_tv"] == pytest.approx(0.0)
  json.dumps(rep)  # JSON-ready
  assert "per_class" not in shift.shift_report(src, tgt, n_permutations=10)


def test_inputs_are_checked_with_named_errors():
  with pytest.raises(ValueError, match="tgt_feats"):
    shift.shift_report(np.zeros((5, 3)), np.zeros((5, 4)))
  with pytest.raises(ValueError, match="labels"):
    tr.h_score(np.zeros((5, 3)), np.arange(4))
  with pytest.raises(ValueError, match=">= 0"):
    tr.nce(np.arange(5), -np.arange(5))


# ---------------------------------------------------------------- transferability


def _np_logme(f, y, iters=500):
  """Per-class evidence maximisation with explicit inverses (no SVD), You et al. 2021 eq. 2-4."""
  n, d = f.shape
  ftf = f.T @ f
  out = []
  for c in np.unique(y):
    t = (y == c).astype(float)
    alpha, beta = 1.0, 1.0
    for _ in range(iters):
      a_inv = np.linalg.inv(alpha * np.eye(d) + beta * ftf)
      m = beta * a_inv @ f.T @ t
      gamma = d - alpha * np.trace(a_inv)
      alpha, beta = gamma / (m @ m), (n - gamma) / np.sum((f @ m - t) ** 2)
    a = alpha * np.eye(d) + beta * ftf
    m = beta * np.linalg.solve(a, f.T @ t)
    ev = (
      n / 2 * np.log(beta)
      + d / 2 * np.log(alpha)
      - n / 2 * np.log(2 * np.pi)
      - beta / 2 * np.sum((f @ m - t) ** 2)
      - alpha / 2 * m @ m
      - np.linalg.slogdet(a)[1] / 2
    )
    out.append(ev / n)
  return np.mean(out)


@pytest.mark.parametrize("n,d", [(90, 6), (30, 40)])  # more samples than dims, and fewer
def test_logme_matches_direct_evidence_maximisation(n, d):
  f, y = _separable(n=n, d=d, k=3, scale=1.0, seed=6)
  np.testing.assert_allclose(tr.logme(f, y), _np_logme(f, y), rtol=1e-7)


def test_logme_evidence_limit_when_features_explain_nothing():
  """Labels unrelated to the features: the supremum is at α → ∞ (w = 0), i.e. the
  Gaussian likelihood of y alone with its ML precision; the iteration creeps towards it."""
  rng = _rng(6)
  f, y = rng.normal(size=(60, 4)), rng.integers(0, 2, 60)
  null = []
  for c in (0, 1):
    t = (y == c).astype(float)
    beta = len(t) / (t @ t)
    null.append((len(t) / 2 * np.log(beta / (2 * np.pi)) - beta / 2 * (t @ t)) / len(t))
  np.testing.assert_allclose(tr.logme(f, y), np.mean(null), rtol=1e-9)
  assert _np_logme(f, y, iters=3000) <= np.mean(null) + 1e-9


def test_leep_matches_empirical_conditional():
  rng = _rng(7)
  n, zdim = 60, 5
  theta = rng.dirichlet(np.ones(zdim), n)
  y = rng.integers(0, 3, n)
  joint = np.zeros((3, zdim))
  for i in range(n):
    joint[y[i]] += theta[i] / n
  cond = joint / joint.sum(0)
  expected = np.mean(
    [np.log(sum(cond[y[i], z] * theta[i, z] for z in range(zdim))) for i in range(n)]
  )
  np.testing.assert_allclose(tr.leep(theta, y), expected, rtol=1e-10)
  with pytest.raises(ValueError, match="softmax"):
    tr.leep(np.log(theta), y)


def test_nce_matches_conditional_entropy():
  rng = _rng(8)
  z, y = rng.integers(0, 4, 100), rng.integers(0, 3, 100)
  h = 0.0
  for zv in np.unique(z):
    pz = np.mean(z == zv)
    for yv in np.unique(y[z == zv]):
      pyz = np.mean((z == zv) & (y == yv))
      h -= pyz * np.log(pyz / pz)
  np.testing.assert_allclose(tr.nce(z, y), -h, rtol=1e-10)
  assert tr.nce(y, y) == pytest.approx(0.0)
  one_hot_logits = np.eye(4)[z] * 5.0
  assert tr.nce(one_hot_logits, y) == pytest.approx(tr.nce(z, y))


def test_h_score_matches_np_cov_ratio():
  f, y = _separable(n=90, d=7, k=3, seed=9)
  g = np.stack([f[y == c].mean(0) for c in range(3)])[y]
  expected = np.trace(np.linalg.pinv(np.cov(f, rowvar=False)) @ np.cov(g, rowvar=False))
  np.testing.assert_allclose(tr.h_score(f, y), expected, rtol=1e-8)


def test_transrate_matches_logdet_coding_rates():
  rng = _rng(10)
  f, y = rng.normal(size=(70, 5)), rng.integers(0, 3, 70)
  eps = 0.3

  def rate(z):
    n, d = z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + d / (n * eps**2) * z.T @ z)[1]

  z = f - f.mean(0)
  expected = rate(z) - sum(np.mean(y == c) * rate(z[y == c]) for c in range(3))
  np.testing.assert_allclose(tr.transrate(f, y, eps=eps), expected, rtol=1e-9)


def test_scores_prefer_separable_features_over_noise():
  f, y = _separable(seed=11)
  noise = _rng(12).normal(size=f.shape)
  for score in (tr.logme, tr.h_score, tr.transrate):
    assert score(f, y) > score(noise, y), score.__name__
  rep = tr.transferability_report(f, y, source_probs=np.eye(4)[y] * 0.9 + 0.025)
  assert set(rep) == {"logme", "h_score", "transrate", "leep", "nce"}


def test_ranking_metrics():
  acc = [0.5, 0.6, 0.7, 0.8]
  assert tr.kendall_tau([1, 2, 3, 4], acc) == pytest.approx(1.0)
  assert tr.kendall_tau([4, 3, 2, 1], acc) == pytest.approx(-1.0)
  assert tr.weighted_tau([1, 2, 3, 4], acc) == pytest.approx(1.0)
  # Swapping the top two hurts weighted τ more than swapping the bottom two.
  assert tr.weighted_tau([1, 2, 4, 3], acc) < tr.weighted_tau([2, 1, 3, 4], acc)
  rep = tr.ranking_report({"a": 3.0, "b": 1.0, "c": 2.0}, {"a": 0.7, "b": 0.9, "c": 0.8})
  assert rep["top1"] == "a" and rep["top1_regret"] == pytest.approx(0.2)
  assert rep["kendall_tau"] == pytest.approx(-1.0)


# ---------------------------------------------------------------- selection


def test_snd_matches_row_softmax_entropy():
  rng = _rng(13)
  x = rng.normal(size=(25, 4))
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  ents = []
  for i in range(len(x)):
    s = np.array([xn[i] @ xn[j] for j in range(len(x)) if j != i]) / 0.05
    p = np.exp(s - s.max())
    p /= p.sum()
    ents.append(-(p * np.log(p)).sum())
  np.testing.assert_allclose(selection.snd(x), np.mean(ents), rtol=1e-10)


def test_snd_higher_for_clustered_than_uniform_features():
  clustered, _ = _separable(n=200, d=16, k=4, scale=5.0, seed=14)
  uniform = _rng(15).uniform(-1, 1, size=(200, 16))
  assert selection.snd(clustered) > selection.snd(uniform)


def test_dev_control_variate_given_fixed_weights():
  rng = _rng(16)
  loss, w = rng.exponential(size=50), rng.lognormal(0, 0.5, size=50)
  big_l = w * loss
  cov = np.sum((big_l - big_l.mean()) * (w - w.mean())) / (len(w) - 1)
  var = np.sum((w - w.mean()) ** 2) / (len(w) - 1)
  eta = -cov / var
  expected = big_l.mean() + eta * w.mean() - eta
  np.testing.assert_allclose(selection.dev_risk(loss, w), expected, rtol=1e-10)
  # Constant weights w = 1 give back the plain mean loss.
  assert selection.dev_risk(loss, np.ones(50)) == pytest.approx(loss.mean())


def test_density_ratios_average_to_one_and_follow_the_target():
  rng = _rng(17)
  src, val = rng.normal(size=(400, 3)), rng.normal(size=(300, 3))
  tgt = rng.normal(size=(400, 3)) + np.array([1.0, 0, 0])
  w = selection.density_ratios(src, tgt, val)
  assert 0.6 < w.mean() < 1.6  # E_s[p_t/p_s] = 1
  assert np.corrcoef(np.log(w), val[:, 0])[0, 1] > 0.9  # target lies towards +x


def test_criteria_are_oriented_higher_is_better():
  rng = _rng(18)
  k, n = 4, 200
  y = np.arange(n) % k
  confident = np.eye(k)[y] * 8.0 + rng.normal(size=(n, k)) * 0.1
  vague = rng.normal(size=(n, k)) * 0.1
  collapsed = np.tile(np.eye(k)[0] * 8.0, (n, 1)) + rng.normal(size=(n, k)) * 0.1
  good, bad, coll = (selection.criteria(target_logits=z) for z in (confident, vague, collapsed))
  assert good["neg_entropy"] > bad["neg_entropy"]
  assert good["info_max"] > bad["info_max"] and good["info_max"] > coll["info_max"]
  assert good["info_max"] == pytest.approx(np.log(k), abs=0.05)
  feats, _ = _separable(n=n, d=8, k=k, seed=19)
  full = selection.criteria(
    target_logits=confident,
    target_features=feats,
    source_val_logits=confident[:100],
    source_val_labels=y[:100],
    source_val_features=feats[:100],
    source_train_features=feats[100:],
  )
  assert set(full) == set(selection.ORIENTATION)
  assert full["source_val_acc"] == 1.0
  assert full["neg_dev"] < 0  # −(a positive risk)
  assert selection.criteria(source_val_acc=0.3) == {"source_val_acc": 0.3}


def test_select_and_selection_report():
  history = [
    {"step": 10, "neg_entropy": -0.9, "snd": 2.0, "target_test_acc": 0.6},
    {"step": 20, "neg_entropy": -0.5, "snd": float("nan"), "target_test_acc": 0.8},
    {"step": 30, "neg_entropy": -0.5, "snd": 1.0, "target_test_acc": 0.7},
  ]
  assert selection.select(history, "neg_entropy")["step"] == 30  # tie → later step
  assert selection.select(history, "snd")["step"] == 10  # NaN rows skipped
  assert selection.select(history, "-target_test_acc")["step"] == 10  # '-key' minimises
  with pytest.raises(ValueError, match="info_max"):
    selection.select(history, "info_max")
  rep = selection.selection_report(history, ["snd", "neg_entropy"])
  assert rep["oracle"] == {"step": 20, "target_test_acc": 0.8, "regret": 0.0}
  assert rep["snd"]["regret"] == pytest.approx(0.2)
  assert rep["last"]["step"] == 30


def test_accepts_jax_arrays():
  import jax.numpy as jnp

  f, y = _separable(n=60, d=5, k=3, seed=20)
  assert tr.h_score(jnp.asarray(f), jnp.asarray(y)) == pytest.approx(tr.h_score(f, y), rel=1e-5)


# ---------------------------------------------------------------- plots


def test_plots_and_html_report_embed_the_images(tmp_path):
  f, y = _separable(n=60, d=6, k=3, seed=21)
  g = f[:40] + 1.0
  paths = [
    plots.plot_tsne(str(tmp_path / "tsne.png"), f, g, y, y[:40]),
    plots.plot_tsne_before_after(str(tmp_path / "ba.png"), (f, g), (f, g - 1.0)),
    plots.plot_training_curves(
      str(tmp_path / "curves.png"),
      [{"step": s, "kind": "train", "loss": 1 / s, "lr": 0.1} for s in range(1, 5)]
      + [
        {"step": s, "kind": "eval", "source_val_acc": 0.5, "target_test_acc": 0.4} for s in (2, 4)
      ],
      marks={"snd": 2},
    ),
    plots.plot_confusion(str(tmp_path / "cm.png"), y, np.roll(y, 1)),
  ]
  report = plots.html_report(
    str(tmp_path / "out"),
    "Run <1>",
    [
      {"heading": "Shift", "text": "a & b", "table": {"pad": 1.23456, "n": 3}},
      {"heading": "Rows", "table": [{"step": 1, "acc": 0.5}, {"step": 2, "acc": 0.6}]},
      {"heading": "Figures", "images": paths},
    ],
  )
  text = open(report, encoding="utf-8").read()
  embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
  assert len(embedded) == len(paths)
  for b64, path in zip(embedded, paths):
    assert base64.b64decode(b64) == open(path, "rb").read()
  assert "Run &lt;1&gt;" in text and "a &amp; b" in text and "1.235" in text
  assert "src='" + str(tmp_path) not in text  # nothing linked from disk
