"""Loss functions shared by the trainer and the adaptation methods.

Each is a pure function of arrays so it can be unit-tested against a NumPy
formula (tests/test_losses.py) and reused by several methods.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Mean softmax cross-entropy with integer labels, computed in float32.

  label_smoothing ε > 0 trains against (1 − ε)·one_hot + ε/C (Szegedy et al., 2016).
  """
  logits = logits.astype(jnp.float32)
  if not label_smoothing:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return (jnp.argmax(logits, -1) == labels).mean()


@jax.custom_vjp
def gradient_reversal(x: jax.Array, coeff: jax.Array) -> jax.Array:
  """Identity forward; backward multiplies the incoming gradient by -coeff.

  DANN's gradient reversal layer (Ganin & Lempitsky, 2015). `coeff` is a
  traced scalar so the schedule can change every step without recompiling.
  """
  del coeff
  return x


def _grl_fwd(x, coeff):
  return x, coeff


def _grl_bwd(coeff, g):
  return (-coeff * g).astype(g.dtype), jnp.zeros_like(coeff)


gradient_reversal.defvjp(_grl_fwd, _grl_bwd)


def dann_schedule(progress: jax.Array, gamma: float = 10.0) -> jax.Array:
  """λ_p = 2 / (1 + exp(-γ p)) - 1: ramps 0 → 1 over training (DANN paper)."""
  return 2.0 / (1.0 + jnp.exp(-gamma * progress)) - 1.0


def binary_cross_entropy_with_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
  return optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets).mean()


def _squared_distances(x: jax.Array, y: jax.Array) -> jax.Array:
  x2 = jnp.sum(x * x, -1)[:, None]
  y2 = jnp.sum(y * y, -1)[None, :]
  return jnp.maximum(x2 + y2 - 2.0 * x @ y.T, 0.0)


def mk_mmd(
  source: jax.Array,
  target: jax.Array,
  bandwidth_multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
  unbiased: bool = True,
) -> jax.Array:
  """Multi-kernel Gaussian MMD² between two equally weighted samples.

  Kernel k(a, b) = mean_m exp(-|a-b|² / (m·σ²)) with σ² the mean pairwise
  squared distance over the pooled sample (treated as a constant, as in DAN).
  `unbiased=True` drops the diagonal terms of the within-domain sums, so two
  samples of one distribution give ≈ 0 in expectation (Gretton et al., 2012).
  """
  source = source.astype(jnp.float32)
  target = target.astype(jnp.float32)
  n, m = source.shape[0], target.shape[0]
  pooled = jnp.concatenate([source, target], 0)
  d = _squared_distances(pooled, pooled)
  total = n + m
  sigma2 = jax.lax.stop_gradient(d.sum() / (total * (total - 1)))
  kernel = sum(jnp.exp(-d / (mult * sigma2 + 1e-12)) for mult in bandwidth_multipliers)
  kernel = kernel / len(bandwidth_multipliers)
  k_ss, k_tt, k_st = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
  if unbiased:
    xx = (k_ss.sum() - jnp.trace(k_ss)) / (n * (n - 1))
    yy = (k_tt.sum() - jnp.trace(k_tt)) / (m * (m - 1))
  else:
    xx = k_ss.mean()
    yy = k_tt.mean()
  return xx + yy - 2.0 * k_st.mean()


def coral(source: jax.Array, target: jax.Array) -> jax.Array:
  """Deep CORAL loss ‖C_s − C_t‖²_F / (4 d²) (Sun & Saenko, 2016).

  C is the unbiased feature covariance of each domain's batch.
  """
  source = source.astype(jnp.float32)
  target = target.astype(jnp.float32)
  d = source.shape[1]

  def covariance(x):
    xc = x - x.mean(0, keepdims=True)
    return xc.T @ xc / (x.shape[0] - 1)

  diff = covariance(source) - covariance(target)
  return jnp.sum(diff * diff) / (4.0 * d * d)
