"""Linear probe (JAX L-BFGS) against scikit-learn, kNN against brute force, the feature store."""

import json
import os
import re

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from test_train import tiny_config

from jaxdapt import features, trainer
from jaxdapt.errors import JaxdaptError
from jaxdapt.tools import probe
from jaxdapt.tools.main import run_tool


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir):
  """A 4-step source-only run on uci_digits (its backbone is what the probe reads)."""
  c = tiny_config(data_dir, "source_only", steps=4, eval_every=4)
  workdir = str(tmp_path_factory.mktemp("run"))
  trainer.train_and_evaluate(c, workdir)
  return workdir


def _blobs(n_per_class=60, dim=12, classes=4, seed=0, spread=1.5):
  rng = np.random.default_rng(seed)
  centres = rng.normal(0, 1.0, (classes, dim))
  x = np.concatenate([c + spread * rng.normal(size=(n_per_class, dim)) for c in centres])
  y = np.repeat(np.arange(classes), n_per_class)
  return x.astype(np.float32), y


def test_probe_matches_sklearn_at_the_same_l2():
  x, y = _blobs()
  xt, yt = _blobs(seed=1)
  for l2 in (1e-3, 1e-1):
    p = probe.fit_linear_probe(x, y, 4, l2_grid=(l2,))
    # sklearn: C·Σ CE + ½‖W‖²  ≡  mean CE + ½·(1/(C·n))‖W‖², on the same standardised rows.
    xs = (x - p.mean) / p.scale
    sk = LogisticRegression(C=1.0 / (l2 * len(y)), max_iter=5000, tol=1e-10).fit(xs, y)
    np.testing.assert_allclose(p.weight, sk.coef_.T, atol=2e-3, rtol=2e-2)
    ours = (p.predict(xt) == yt).mean()
    theirs = (sk.predict((xt - p.mean) / p.scale) == yt).mean()
    assert abs(ours - theirs) <= 0.01


def test_probe_chooses_l2_on_validation_and_refits():
  x, y = _blobs(n_per_class=40, spread=3.0)
  p = probe.fit_linear_probe(x, y, 4, l2_grid=(1e-5, 1.0, 100.0))
  assert p.l2 in (1e-5, 1.0, 100.0) and p.val_acc is not None
  # The chosen l2 is the one with the best validation accuracy (recomputed here).
  tr, va = probe.stratified_split(y, 0.2, 0)
  accs = {}
  for l2 in (1e-5, 1.0, 100.0):
    q = probe.fit_linear_probe(x[tr], y[tr], 4, l2_grid=(l2,))
    accs[l2] = (q.predict(x[va]) == y[va]).mean()
  assert accs[p.l2] == max(accs.values())
  assert p.val_acc == pytest.approx(accs[p.l2])


def test_stratified_split_keeps_every_class_on_both_sides():
  y = np.array([0] * 10 + [1] * 3 + [2] * 2)
  tr, va = probe.stratified_split(y, 0.2, seed=3)
  assert set(y[tr]) == set(y[va]) == {0, 1, 2}
  assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(y)


def _knn_reference(tx, ty, qx, k, classes):
  tn = tx / np.linalg.norm(tx, axis=1, keepdims=True)
  qn = qx / np.linalg.norm(qx, axis=1, keepdims=True)
  out = []
  for q in qn:
    order = np.argsort(-(tn @ q), kind="stable")[:k]
    counts = np.bincount(ty[order], minlength=classes)
    tied = np.flatnonzero(counts == counts.max())
    out.append(next(ty[i] for i in order if ty[i] in tied))
  return np.array(out)


@pytest.mark.parametrize("k", [1, 4, 7])
def test_knn_matches_brute_force(k):
  tx, ty = _blobs(n_per_class=25, seed=2, spread=2.0)
  qx, _ = _blobs(n_per_class=10, seed=5, spread=2.0)
  got = probe.knn_predict(tx, ty, qx, k=k, num_classes=4, chunk=16)
  np.testing.assert_array_equal(got, _knn_reference(tx, ty, qx, k, 4))


def test_feature_store_round_trip_and_staleness(tmp_path):
  arrays = {
    "features": np.arange(12, dtype=np.float32).reshape(4, 3),
    "labels": np.array([0, 1, 1, 0]),
  }
  path = str(tmp_path / "store")
  features.save_store(path, arrays, {"model": "step10", "dataset": "d"})
  got = features.load_store(path, {"model": "step10"})
  np.testing.assert_array_equal(got["features"], arrays["features"])
  assert features.load_store(path, {"model": "step20"}) is None  # another checkpoint
  os.remove(os.path.join(path, "meta.json"))  # an interrupted write
  assert features.load_store(path) is None


def test_probe_command_on_a_trained_run(tiny_run, capsys, monkeypatch):
  run = tiny_run
  assert probe.main(["--workdir", run, "--dataset", "uci_digits", "--k", "5"]) == 0
  result = json.loads(capsys.readouterr().out)
  assert result["n_train"] == 1078 and result["n_test"] == 719
  assert 0.1 < result["linear_probe_acc"] <= 1.0 and 0.1 < result["knn_acc"] <= 1.0
  stores = [d for d in os.listdir(os.path.join(run, "features")) if d.startswith("uci_digits_")]
  assert len(stores) == 2
  # A second call reads the store instead of extracting again (the probe's fit, checked
  # above, is not what this call is about: a stand-in keeps it quick).
  monkeypatch.setattr(
    probe,
    "fit_linear_probe",
    lambda *a, **k: probe.LinearProbe(
      np.zeros((result["feature_dim"], 10), np.float32),
      np.zeros(10, np.float32),
      0.0,
      1.0,
      1e-3,
      None,
    ),
  )
  mtimes = {d: os.path.getmtime(os.path.join(run, "features", d, "features.npz")) for d in stores}
  assert probe.main(["--workdir", run, "--dataset", "uci_digits", "--k", "5"]) == 0
  assert mtimes == {
    d: os.path.getmtime(os.path.join(run, "features", d, "features.npz")) for d in stores
  }


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--workdir", "{tmp}/nope"], "--workdir {tmp}/nope: no such directory"),
    (
      ["--weights", "{tmp}/nope", "--model", "resnet18"],
      "--weights {tmp}/nope: no such directory (write one with `jaxdapt weights import`)",
    ),
  ],
)
def test_probe_command_reports_a_missing_run(tmp_path, capsys, argv, message):
  """One line (exit 2), not a traceback, and checked before any data loads or is written."""
  argv = [a.format(tmp=tmp_path) for a in argv] + ["--dataset", "uci_digits"]
  message = message.format(tmp=tmp_path)
  with pytest.raises(JaxdaptError, match=re.escape(message)):
    probe.main(argv)
  assert run_tool("probe", argv) == 2
  captured = capsys.readouterr()
  assert captured.out == "" and captured.err == f"error: {message}\n"
  assert os.listdir(tmp_path) == []
