"""Loss functions of the adaptation methods in this package (CDAN, MCC, JAN, ...).

Pure functions of arrays, computed in float32, each tested against an
independent NumPy formula in tests/test_methods.py. The shared losses (CE,
GRL, MK-MMD, CORAL) live in jaxdapt/losses.py.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdapt.losses import _squared_distances

# CDAN: above this many multilinear-map dimensions (D × C) use the randomized map.
CDAN_MAX_MULTILINEAR_DIM = 4096


def entropy(logits: jax.Array) -> jax.Array:
  """Per-example Shannon entropy (nats) of softmax(logits): [B, C] -> [B]."""
  logits = logits.astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, -1)
  return -jnp.sum(jnp.exp(logp) * logp, -1)


# --- CDAN (Long et al., NeurIPS 2018) ------------------------------------------------------


def multilinear_map(features: jax.Array, probs: jax.Array) -> jax.Array:
  """T⊗(f, g): the flattened outer product f ⊗ g, [B, D], [B, C] -> [B, D·C]."""
  features = features.astype(jnp.float32)
  probs = probs.astype(jnp.float32)
  return (features[:, :, None] * probs[:, None, :]).reshape(features.shape[0], -1)


@functools.lru_cache(maxsize=8)
def cdan_random_matrices(
  feature_dim: int, num_classes: int, dim: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """R_f [D, d] and R_g [C, d], standard Gaussian, sampled once and fixed."""
  rng = np.random.default_rng(seed)
  return (
    rng.standard_normal((feature_dim, dim)).astype(np.float32),
    rng.standard_normal((num_classes, dim)).astype(np.float32),
  )


def randomized_multilinear_map(
  features: jax.Array, probs: jax.Array, r_f: jax.Array, r_g: jax.Array
) -> jax.Array:
  """T⊙(f, g) = (f R_f) ⊙ (g R_g) / √d; ⟨T⊙, T⊙⟩ estimates ⟨T⊗, T⊗⟩ without bias."""
  dim = r_f.shape[1]
  return (features.astype(jnp.float32) @ r_f) * (probs.astype(jnp.float32) @ r_g) / np.sqrt(dim)


def entropy_weights(logits: jax.Array) -> jax.Array:
  """CDAN+E's w = 1 + exp(−H(g)), normalised to sum 1 over the batch (no gradient)."""
  w = 1.0 + jnp.exp(-entropy(jax.lax.stop_gradient(logits)))
  return w / w.sum()


# --- MCC (Jin et al., ECCV 2020) -----------------------------------------------------------


def minimum_class_confusion(logits: jax.Array, temperature: float = 2.5) -> jax.Array:
  """MCC loss on target logits [B, C].

  p = softmax(z / T); example weights W_i ∝ 1 + exp(−H(p_i)), scaled to sum B
  (treated as constants); class confusion C = pᵀ diag(W) p, each row divided
  by its sum; loss = (Σ_jj' C_jj' − Σ_j C_jj) / |C|.
  """
  logits = logits.astype(jnp.float32) / temperature
  probs = jax.nn.softmax(logits, -1)
  batch, num_classes = probs.shape
  w = 1.0 + jnp.exp(-entropy(jax.lax.stop_gradient(logits)))
  w = batch * w / w.sum()
  confusion = (probs * w[:, None]).T @ probs
  confusion = confusion / confusion.sum(1, keepdims=True)
  return (confusion.sum() - jnp.trace(confusion)) / num_classes


# --- JAN (Long et al., ICML 2017) ----------------------------------------------------------


def _pooled_gaussian_kernel(
  x: jax.Array, bandwidths: Sequence[float] | None, fixed_bandwidth: float | None
) -> jax.Array:
  """Gaussian kernel matrix over a pooled sample [N, D].

  Multi-kernel: mean_m exp(−‖a−b‖² / (m·σ²)), σ² the mean pairwise squared
  distance (a constant, as in DAN), or one kernel exp(−‖a−b‖² / fixed_bandwidth).
  """
  d = _squared_distances(x, x)
  if fixed_bandwidth is not None:
    return jnp.exp(-d / fixed_bandwidth)
  n = x.shape[0]
  sigma2 = jax.lax.stop_gradient(d.sum() / (n * (n - 1)))
  return sum(jnp.exp(-d / (m * sigma2 + 1e-12)) for m in bandwidths) / len(bandwidths)


def joint_mmd(
  source_layers: Sequence[jax.Array],
  target_layers: Sequence[jax.Array],
  bandwidths: Sequence[Sequence[float] | None],
  fixed_bandwidths: Sequence[float | None],
) -> jax.Array:
  """JMMD² (JAN paper, Eq. 10): quadratic-time (biased, V-statistic) estimator.

  The joint kernel is the product over layers l of each layer's kernel k_l;
  layer l uses multi-kernel `bandwidths[l]` × the mean squared distance, or the
  fixed `fixed_bandwidths[l]` when that is not None.
  D = mean K_ss + mean K_tt − 2 mean K_st with K = Π_l K_l on the pooled sample.
  """
  n = source_layers[0].shape[0]
  kernel = None
  for s, t, bw, fixed in zip(source_layers, target_layers, bandwidths, fixed_bandwidths):
    pooled = jnp.concatenate([s.astype(jnp.float32), t.astype(jnp.float32)])
    k = _pooled_gaussian_kernel(pooled, bw, fixed)
    kernel = k if kernel is None else kernel * k
  return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2.0 * kernel[:n, n:].mean()


# --- AFN (Xu et al., ICCV 2019) ------------------------------------------------------------


def safe_norm(x: jax.Array) -> jax.Array:
  """Row L2 norms with a finite gradient at 0."""
  x = x.astype(jnp.float32)
  return jnp.sqrt(jnp.sum(x * x, -1) + 1e-12)


def stepwise_feature_norm(features: jax.Array, delta_r: float = 1.0) -> jax.Array:
  """SAFN: mean_i (‖h_i‖ − (sg‖h_i‖ + Δr))²; value Δr², gradient enlarges the norms."""
  norm = safe_norm(features)
  return jnp.mean((norm - (jax.lax.stop_gradient(norm) + delta_r)) ** 2)


# --- MDD (Zhang et al., ICML 2019) ---------------------------------------------------------


def mdd_source_disparity(aux_logits: jax.Array, logits: jax.Array) -> jax.Array:
  """mean −log σ(f'(x))[h_f(x)] on source, h_f = argmax of the main head (a constant)."""
  pseudo = jnp.argmax(jax.lax.stop_gradient(logits), -1)
  logp = jax.nn.log_softmax(aux_logits.astype(jnp.float32), -1)
  return -jnp.take_along_axis(logp, pseudo[:, None], -1)[:, 0].mean()


def mdd_target_disparity(aux_logits: jax.Array, logits: jax.Array) -> jax.Array:
  """mean −log(1 − σ(f'(x))[h_f(x)]) on target, computed stably as
  −(logsumexp_{j≠k} z_j − logsumexp_j z_j)."""
  pseudo = jnp.argmax(jax.lax.stop_gradient(logits), -1)
  z = aux_logits.astype(jnp.float32)
  others = jnp.where(jax.nn.one_hot(pseudo, z.shape[-1], dtype=bool), -jnp.inf, z)
  return -(jax.nn.logsumexp(others, -1) - jax.nn.logsumexp(z, -1)).mean()


# --- BSP (Chen et al., ICML 2019) ----------------------------------------------------------


def batch_spectral_penalty(features: jax.Array, k: int = 1) -> jax.Array:
  """Σ_{i≤k} σ_i² of a feature matrix [B, D] (largest singular values)."""
  sigma = jnp.linalg.svd(features.astype(jnp.float32), compute_uv=False)
  return jnp.sum(sigma[:k] ** 2)


# --- MCD (Saito et al., CVPR 2018) ---------------------------------------------------------


def classifier_discrepancy(logits1: jax.Array, logits2: jax.Array) -> jax.Array:
  """mean_{i,c} |p1 − p2|: the L1 distance of the two softmaxes, averaged over classes."""
  p1 = jax.nn.softmax(logits1.astype(jnp.float32), -1)
  p2 = jax.nn.softmax(logits2.astype(jnp.float32), -1)
  return jnp.mean(jnp.abs(p1 - p2))


# --- SHOT (Liang et al., ICML 2020) --------------------------------------------------------


def information_maximization(logits: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(L_ent + L_div, mean_i H(p_i), H(p̄)) on a batch of logits [B, C].

  L_ent = mean_i H(p_i) makes each prediction confident; L_div = Σ_k p̄_k log p̄_k
  = −H(p̄), p̄ = mean_i p_i, keeps the batch's predictions spread over the classes.
  log p̄ is a logsumexp of the log-probabilities, finite for any logits.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  mean_entropy = entropy(logits).mean()
  log_mean = jax.nn.logsumexp(logp, axis=0) - jnp.log(logp.shape[0])
  diversity = -jnp.sum(jnp.exp(log_mean) * log_mean)
  return mean_entropy - diversity, mean_entropy, diversity


def _unit(x: jax.Array) -> jax.Array:
  x = x.astype(jnp.float32)
  return x / jnp.sqrt(jnp.sum(x * x, -1, keepdims=True) + 1e-12)


def nearest_centroid(features: jax.Array, centroids: jax.Array, valid: jax.Array) -> jax.Array:
  """argmin_k cosine distance(f_i, c_k) over the valid centroids: [B, D], [C, D], [C] -> [B]."""
  similarity = _unit(features) @ _unit(centroids).T
  return jnp.argmax(jnp.where(valid[None, :], similarity, -jnp.inf), -1)


def _class_means(features: jax.Array, weights: jax.Array) -> jax.Array:
  return weights.T @ features / (weights.sum(0)[:, None] + 1e-8)


def shot_centroids(features: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """SHOT's self-supervised class centroids, one refinement round: (c¹ [C, D], valid [C]).

  Features are L2-normalised (f̂). c⁰_k = Σ_i p_ik f̂_i / Σ_i p_ik (prediction-weighted);
  ŷ⁰ = nearest c⁰ by cosine, over the classes that some argmax prediction picks;
  c¹_k = mean of f̂_i over ŷ⁰_i = k, valid where that class is non-empty.
  Pseudo-labels are then `nearest_centroid(f, c¹, valid)`.
  """
  unit = _unit(features)
  probs = jax.nn.softmax(logits.astype(jnp.float32), -1)
  num_classes = probs.shape[-1]
  valid = jax.nn.one_hot(jnp.argmax(probs, -1), num_classes).sum(0) > 0
  labels = nearest_centroid(unit, _class_means(unit, probs), valid)
  members = jax.nn.one_hot(labels, num_classes)
  return _class_means(unit, members), valid & (members.sum(0) > 0)
