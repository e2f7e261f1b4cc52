"""FixMatch (jaxdapt/methods/fixmatch.py) and its on-device strong augmentation
(jaxdapt/data/augment.py): the loss against NumPy, the pseudo-label branch carries no
gradient, each op against NumPy / PIL or a property, and a 2-step training run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageOps
from test_train import tiny_config

from jaxdapt import trainer
from jaxdapt.data import augment
from jaxdapt.methods.fixmatch import fixmatch_loss

_apply_op = jax.jit(augment.apply_op)  # one compile for every op index and magnitude


def _image(seed=0, lo=1, hi=255):
  """A 12×10 RGB uint8 image without the value augment.FILL (so cutout is visible)."""
  x = np.random.default_rng(seed).integers(lo, hi, (12, 10, 3))
  return np.where(x == augment.FILL, x + 1, x).astype(np.uint8)


def test_fixmatch_loss_matches_numpy():
  weak = np.asarray([[4.0, 0.0, 0.0], [0.5, 0.4, 0.0], [0.0, -3.0, 5.0], [1.0, 1.0, 1.0]])
  strong = np.random.default_rng(0).normal(size=(4, 3))
  tau = 0.95
  p = np.exp(weak) / np.exp(weak).sum(1, keepdims=True)
  labels, mask = p.argmax(1), (p.max(1) >= tau).astype(np.float64)
  log_q = strong - np.log(np.exp(strong).sum(1, keepdims=True))
  want = (mask * -log_q[np.arange(4), labels]).sum() / 4  # mean over ALL target rows
  loss, pseudo, got_mask = fixmatch_loss(jnp.asarray(weak), jnp.asarray(strong), tau)
  assert mask.tolist() == [1.0, 0.0, 1.0, 0.0]
  np.testing.assert_array_equal(got_mask, mask)
  np.testing.assert_array_equal(pseudo, labels)
  assert float(loss) == pytest.approx(want, rel=1e-6)


def test_no_gradient_flows_through_the_pseudo_labels():
  weak = jnp.asarray([[4.0, 0.0, 0.0], [0.5, 0.4, 0.0]])
  strong = jnp.asarray([[0.1, 0.2, 0.3], [1.0, 0.0, -1.0]])
  g_weak, g_strong = jax.grad(lambda w, s: fixmatch_loss(w, s, 0.95)[0], argnums=(0, 1))(
    weak, strong
  )
  np.testing.assert_array_equal(g_weak, 0.0)
  assert np.abs(g_strong[0]).sum() > 0  # the confident row trains the strong view
  np.testing.assert_array_equal(g_strong[1], 0.0)  # the masked one does not


@pytest.mark.parametrize("threshold", [0, 77, 128, 200, 256])
def test_solarize_inverts_exactly_the_pixels_at_or_above_the_threshold(threshold):
  x = _image()
  got = augment.solarize(jnp.asarray(x, jnp.float32), threshold)
  np.testing.assert_array_equal(got, np.where(x >= threshold, 255 - x, x))


@pytest.mark.parametrize("bits", [1, 4, 6, 8])
def test_posterize_keeps_the_top_bits(bits):
  x = _image()
  got = augment.posterize(jnp.asarray(x, jnp.float32), bits)
  np.testing.assert_array_equal(got, x.astype(int) & (0xFF << (8 - bits)) & 0xFF)


@pytest.mark.parametrize("size", [1, 5, 10])
def test_cutout_fills_exactly_one_square_of_the_given_size(size):
  x = _image()
  for seed in range(3):
    got = np.asarray(augment.cutout(jnp.asarray(x, jnp.float32), jax.random.key(seed), size))
    changed = (got != x).any(-1)
    rows, cols = np.nonzero(changed)
    assert changed.sum() == size * size
    assert rows.max() - rows.min() + 1 == size and cols.max() - cols.min() + 1 == size
    assert (got[changed] == augment.FILL).all()
    np.testing.assert_array_equal(got[~changed], x[~changed])


def test_identity_op_is_identity_and_histogram_ops_match_pil():
  x = _image(lo=30, hi=200)
  xf = jnp.asarray(x, jnp.float32)
  identity = augment.OPS.index("identity")
  np.testing.assert_array_equal(_apply_op(xf, identity, 0.9, -1.0), x)
  equalized = np.asarray(augment.equalize(xf)).astype(np.uint8)
  np.testing.assert_array_equal(equalized, np.asarray(ImageOps.equalize(Image.fromarray(x))))
  stretched = np.asarray(augment.autocontrast(xf)).astype(int)
  pil = np.asarray(ImageOps.autocontrast(Image.fromarray(x))).astype(int)
  assert np.abs(stretched - pil).max() <= 1  # PIL rounds in float; the ends are exact
  assert stretched.min(axis=(0, 1)).tolist() == [0] * 3
  assert stretched.max(axis=(0, 1)).tolist() == [255] * 3


def test_geometric_ops_at_zero_magnitude_are_identity():
  x = _image()
  for name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y"):
    got = _apply_op(jnp.asarray(x, jnp.float32), augment.OPS.index(name), 0.0, 1.0)
    np.testing.assert_array_equal(got, x, err_msg=name)


def test_strong_augment_draws_per_image_and_is_deterministic_per_key():
  images = jnp.asarray(np.stack([_image()] * 8))
  f = jax.jit(lambda im, k: augment.strong_augment(im, k, num_ops=2, cutout_frac=0.5))
  a, b = f(images, jax.random.key(0)), f(images, jax.random.key(0))
  assert a.dtype == jnp.uint8 and a.shape == images.shape
  np.testing.assert_array_equal(a, b)
  assert len({np.asarray(v).tobytes() for v in a}) == 8  # 8 equal images, 8 different views
  # Cutout (side 0.5 · 10 = 5) leaves at least its 25 pixels at FILL in every view.
  assert ((np.asarray(a) == augment.FILL).all(-1).sum((1, 2)) >= 25).all()


def test_fixmatch_trains_on_confident_strong_views(data_dir, tmp_path):  # noqa: F811
  """τ just above 0: every target image is confident, so the masked CE is active on the
  whole batch (pseudo_mask 1, transfer loss > 0 and finite)."""
  c = tiny_config(data_dir, "fixmatch", steps=2, log_every=1, eval_every=2, checkpoint_every=2)
  c.model.norm = "batch"
  c.method.fixmatch_threshold = 1e-6
  c.method.weight_schedule = "constant"
  c.method.fixmatch_ops = 1  # half the augmentation graph to compile
  summary = trainer.train_and_evaluate(c, str(tmp_path))
  rows = [r for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if r["kind"] == "train"]
  assert [r["pseudo_mask"] for r in rows] == [1.0, 1.0]
  assert all(np.isfinite(r["transfer_loss"]) and r["transfer_loss"] > 0 for r in rows)
  assert all(r["transfer_loss"] == pytest.approx(r["pseudo_ce"]) for r in rows)
  assert 0.0 <= summary["target_acc_last"] <= 1.0
