"""Each loss against an independent NumPy formula or a property it must have."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdapt import losses


def test_gradient_reversal_backward_is_minus_coeff_times_incoming():
  x = jnp.arange(6.0).reshape(2, 3)
  upstream = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3)), jnp.float32)
  for coeff in (0.0, 0.3, 1.0, 2.5):
    y, vjp = jax.vjp(lambda a: losses.gradient_reversal(a, jnp.float32(coeff)), x)  # noqa: B023
    np.testing.assert_array_equal(y, x)
    (g,) = vjp(upstream)
    np.testing.assert_allclose(g, -coeff * np.asarray(upstream), rtol=1e-6)


def test_dann_schedule_endpoints_and_midpoint():
  assert float(losses.dann_schedule(0.0)) == 0.0
  np.testing.assert_allclose(losses.dann_schedule(1.0), 2 / (1 + np.exp(-10)) - 1, rtol=1e-6)
  np.testing.assert_allclose(losses.dann_schedule(0.5), 2 / (1 + np.exp(-5)) - 1, rtol=1e-6)


def _np_coral(s, t):
  d = s.shape[1]
  cs, ct = np.cov(s, rowvar=False), np.cov(t, rowvar=False)
  return np.sum((cs - ct) ** 2) / (4 * d * d)


def test_coral_matches_numpy():
  rng = np.random.default_rng(1)
  s, t = rng.normal(size=(32, 7)), rng.normal(2.0, 3.0, size=(24, 7))
  np.testing.assert_allclose(losses.coral(s, t), _np_coral(s, t), rtol=1e-5)


def _np_mk_mmd(x, y, mults, unbiased):
  z = np.concatenate([x, y])
  d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
  total = len(z)
  sigma2 = d.sum() / (total * (total - 1))
  k = np.mean([np.exp(-d / (m * sigma2)) for m in mults], axis=0)
  n, m = len(x), len(y)
  kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
  if unbiased:
    xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
  else:
    xx, yy = kxx.mean(), kyy.mean()
  return xx + yy - 2 * kxy.mean()


@pytest.mark.parametrize("unbiased", [True, False])
def test_mk_mmd_matches_numpy(unbiased):
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(20, 5)), rng.normal(0.5, 1.0, size=(16, 5))
  mults = (0.25, 0.5, 1.0, 2.0, 4.0)
  np.testing.assert_allclose(
    losses.mk_mmd(x, y, mults, unbiased), _np_mk_mmd(x, y, mults, unbiased), rtol=1e-4, atol=1e-6
  )


def test_unbiased_mmd_near_zero_for_one_distribution_and_grows_with_shift():
  rng = np.random.default_rng(3)
  same = [
    float(losses.mk_mmd(rng.normal(size=(64, 8)), rng.normal(size=(64, 8)))) for _ in range(20)
  ]
  assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same)) + 1e-3
  values = [
    float(losses.mk_mmd(rng.normal(size=(64, 8)), rng.normal(shift, 1, size=(64, 8))))
    for shift in (0.25, 0.5, 1.0, 2.0)
  ]
  assert values == sorted(values) and values[0] > max(same)


def test_cross_entropy_matches_numpy():
  rng = np.random.default_rng(4)
  logits, labels = rng.normal(size=(10, 4)), rng.integers(0, 4, 10)
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  np.testing.assert_allclose(
    losses.cross_entropy(logits, labels), -np.log(p[np.arange(10), labels]).mean(), rtol=1e-5
  )
