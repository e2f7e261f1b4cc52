"""Shared array helpers for the analysis modules (float64 NumPy throughout)."""

from __future__ import annotations

import numpy as np


def as_2d(x, name: str) -> np.ndarray:
  """float64 (n, d) copy of a NumPy/JAX array; names the argument when the shape is wrong."""
  x = np.asarray(x, dtype=np.float64)
  if x.ndim == 1:
    x = x[:, None]
  if x.ndim != 2 or x.shape[0] == 0:
    raise ValueError(f"{name}: expected a non-empty (n, d) array, got shape {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name}: contains NaN or Inf")
  return x


def as_labels(y, n: int, name: str) -> np.ndarray:
  """int64 (n,) labels; refuses a length mismatch with the matching features."""
  y = np.asarray(y)
  if y.ndim != 1 or y.shape[0] != n:
    raise ValueError(f"{name}: expected shape ({n},) to match the features, got {y.shape}")
  if not np.issubdtype(y.dtype, np.integer):
    if not np.all(np.equal(np.mod(y, 1), 0)):
      raise ValueError(f"{name}: labels must be integers")
  y = y.astype(np.int64)
  if n and y.min() < 0:
    raise ValueError(f"{name}: labels must be class indices >= 0, got {y.min()}")
  return y


def subsample(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
  """Sorted indices of min(n, k) rows drawn without replacement."""
  if n <= k:
    return np.arange(n)
  return np.sort(rng.choice(n, size=k, replace=False))


def softmax(logits, axis: int = -1) -> np.ndarray:
  z = np.asarray(logits, dtype=np.float64)
  z = z - z.max(axis=axis, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=axis, keepdims=True)


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
  """Shannon entropy in nats with 0·log 0 = 0."""
  p = np.asarray(p, dtype=np.float64)
  logp = np.log(np.where(p > 0, p, 1.0))
  return -(p * logp).sum(axis=axis)


def as_probs(p, name: str) -> np.ndarray:
  """Checks that rows are probability vectors (catches logits passed by mistake)."""
  p = as_2d(p, name)
  if p.min() < -1e-6 or not np.allclose(p.sum(1), 1.0, atol=1e-4):
    raise ValueError(
      f"{name}: rows must be probabilities (non-negative, summing to 1); "
      f"pass softmax(logits), not logits"
    )
  return np.clip(p, 0.0, None)
