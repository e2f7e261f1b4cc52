"""How far apart are the source and target feature distributions?

Three standard measures, each answering a slightly different question:
  * proxy A-distance — can a linear classifier tell the domains apart?
    (Ben-David et al., 2007/2010; the quantity DANN tries to shrink);
  * MMD² — do the kernel mean embeddings differ? with a permutation test so a
    value can be read as "distinguishable from sampling noise or not"
    (Gretton et al., 2012; what DAN minimises);
  * CORAL distance — do the second-order statistics differ? (Sun & Saenko, 2016).
`per_class_shift` restricts each to one class (conditional shift), which is
what class-aware methods target and what a marginal measure can hide.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxdapt.analysis._util import as_2d, as_labels, subsample


def _balanced(
  src: np.ndarray, tgt: np.ndarray, max_per_domain: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  k = min(len(src), len(tgt), max_per_domain)
  return src[subsample(rng, len(src), k)], tgt[subsample(rng, len(tgt), k)]


def proxy_a_distance(
  src_feats,
  tgt_feats,
  *,
  n_splits: int = 5,
  max_per_domain: int = 2000,
  classifier: str = "logistic",
  C: float = 1.0,
  seed: int = 0,
) -> float:
  """PAD = 2(1 − 2ε), ε the k-fold cross-validated error of a linear domain classifier.

  Ben-David et al. (2007) approximate the H-divergence by how well a classifier
  separates the domains. Domains are subsampled to equal size so ε = 0.5 means
  chance; PAD ≈ 0 for indistinguishable domains, 2 for perfectly separable
  ones. Left unclipped: small negative values are sampling noise around 0.
  Features are standardised inside each fold (the classifier is regularised).
  """
  from sklearn.linear_model import LogisticRegression
  from sklearn.model_selection import StratifiedKFold, cross_val_score
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  from sklearn.svm import LinearSVC

  src, tgt = as_2d(src_feats, "src_feats"), as_2d(tgt_feats, "tgt_feats")
  if src.shape[1] != tgt.shape[1]:
    raise ValueError(f"tgt_feats: feature dim {tgt.shape[1]} != src_feats dim {src.shape[1]}")
  rng = np.random.default_rng(seed)
  src, tgt = _balanced(src, tgt, max_per_domain, rng)
  k = len(src)
  if k < 2:
    return float("nan")
  if classifier == "logistic":
    clf = LogisticRegression(C=C, max_iter=2000)
  elif classifier == "svm":
    clf = LinearSVC(C=C, max_iter=5000)
  else:
    raise ValueError(f"classifier: {classifier!r} is not one of 'logistic', 'svm'")
  x = np.concatenate([src, tgt])
  d = np.concatenate([np.zeros(k, np.int64), np.ones(k, np.int64)])
  folds = StratifiedKFold(n_splits=min(n_splits, k), shuffle=True, random_state=seed)
  acc = cross_val_score(make_pipeline(StandardScaler(), clf), x, d, cv=folds).mean()
  return float(2.0 * (1.0 - 2.0 * (1.0 - acc)))


def _sq_dists(x: np.ndarray) -> np.ndarray:
  sq = (x * x).sum(1)
  return np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)


def median_bandwidth(sq_dists: np.ndarray) -> float:
  """σ = sqrt(median of the off-diagonal squared distances) (median heuristic)."""
  iu = np.triu_indices(sq_dists.shape[0], k=1)
  med = float(np.median(sq_dists[iu]))
  return float(np.sqrt(med)) if med > 0 else 1.0


def _mmd2_from_kernel(k0: np.ndarray, assign: np.ndarray) -> np.ndarray:
  """Unbiased MMD² for each row of `assign` (1 = source) given a zero-diagonal kernel."""
  a = assign.astype(np.float64)
  b = 1.0 - a
  n, m = a.sum(1), b.sum(1)
  ka, kb = a @ k0, b @ k0
  xx = (ka * a).sum(1) / (n * (n - 1))
  yy = (kb * b).sum(1) / (m * (m - 1))
  xy = (ka * b).sum(1) / (n * m)
  return xx + yy - 2.0 * xy


class MMDResult(NamedTuple):
  mmd2: float  # unbiased estimate; can be slightly < 0 when the domains match
  p_value: float  # permutation p-value of H0: same distribution
  bandwidth: float  # σ of k(a, b) = exp(-|a-b|² / (2σ²))


def mmd_test(
  src_feats,
  tgt_feats,
  *,
  n_permutations: int = 200,
  bandwidth: float | None = None,
  max_per_domain: int = 1000,
  seed: int = 0,
) -> MMDResult:
  """Unbiased Gaussian-kernel MMD² and its permutation-test p-value (Gretton et al., 2012).

  The kernel matrix over the pooled sample is computed once; each permutation
  re-splits it, so the test costs O(P·N²). p = (1 + #{perm ≥ observed}) /
  (1 + P), never exactly 0. σ defaults to the median heuristic on the pooled sample.
  """
  src, tgt = as_2d(src_feats, "src_feats"), as_2d(tgt_feats, "tgt_feats")
  if src.shape[1] != tgt.shape[1]:
    raise ValueError(f"tgt_feats: feature dim {tgt.shape[1]} != src_feats dim {src.shape[1]}")
  rng = np.random.default_rng(seed)
  src = src[subsample(rng, len(src), max_per_domain)]
  tgt = tgt[subsample(rng, len(tgt), max_per_domain)]
  n, m = len(src), len(tgt)
  if n < 2 or m < 2:
    return MMDResult(float("nan"), float("nan"), float("nan"))
  d2 = _sq_dists(np.concatenate([src, tgt]))
  sigma = median_bandwidth(d2) if bandwidth is None else float(bandwidth)
  k0 = np.exp(-d2 / (2.0 * sigma * sigma))
  np.fill_diagonal(k0, 0.0)
  observed = np.zeros((1, n + m))
  observed[0, :n] = 1.0
  stat = float(_mmd2_from_kernel(k0, observed)[0])
  exceed = 0
  for start in range(0, n_permutations, 64):
    size = min(64, n_permutations - start)
    assign = np.zeros((size, n + m))
    for i in range(size):
      assign[i, rng.permutation(n + m)[:n]] = 1.0
    exceed += int((_mmd2_from_kernel(k0, assign) >= stat).sum())
  return MMDResult(stat, (1.0 + exceed) / (1.0 + n_permutations), sigma)


def mmd2(
  src_feats, tgt_feats, *, bandwidth: float | None = None, max_per_domain: int = 1000, seed: int = 0
) -> float:
  """Unbiased Gaussian-kernel MMD² (median-heuristic σ unless given), without a test."""
  return mmd_test(
    src_feats,
    tgt_feats,
    n_permutations=0,
    bandwidth=bandwidth,
    max_per_domain=max_per_domain,
    seed=seed,
  ).mmd2


def coral_distance(src_feats, tgt_feats) -> float:
  """‖C_s − C_t‖²_F / (4 d²) with unbiased covariances (Sun & Saenko, 2016).

  The NumPy twin of `jaxdapt.losses.coral`, so the number reported here is the
  quantity Deep CORAL minimises.
  """
  src, tgt = as_2d(src_feats, "src_feats"), as_2d(tgt_feats, "tgt_feats")
  if len(src) < 2 or len(tgt) < 2:
    return float("nan")
  d = src.shape[1]
  diff = np.cov(src, rowvar=False) - np.cov(tgt, rowvar=False)
  return float(np.sum(np.square(diff)) / (4.0 * d * d))


def label_shift(src_labels, tgt_labels) -> float:
  """Total variation ½ Σ_y |p_s(y) − p_t(y)| between the label marginals."""
  ys, yt = np.asarray(src_labels, np.int64), np.asarray(tgt_labels, np.int64)
  k = int(max(ys.max(), yt.max())) + 1
  ps = np.bincount(ys, minlength=k) / len(ys)
  pt = np.bincount(yt, minlength=k) / len(yt)
  return float(0.5 * np.abs(ps - pt).sum())


def per_class_shift(
  src_feats,
  tgt_feats,
  src_labels,
  tgt_labels,
  *,
  min_count: int = 10,
  n_permutations: int = 100,
  seed: int = 0,
) -> dict[int, dict[str, float]]:
  """Each measure restricted to class c (conditional shift p_s(x|c) vs p_t(x|c)).

  Classes with fewer than `min_count` samples on either side are left out:
  a cross-validated PAD or a permutation test on a handful of points is noise.
  """
  src, tgt = as_2d(src_feats, "src_feats"), as_2d(tgt_feats, "tgt_feats")
  ys = as_labels(src_labels, len(src), "src_labels")
  yt = as_labels(tgt_labels, len(tgt), "tgt_labels")
  out: dict[int, dict[str, float]] = {}
  for c in np.intersect1d(ys, yt):
    s, t = src[ys == c], tgt[yt == c]
    if len(s) < min_count or len(t) < min_count:
      continue
    test = mmd_test(s, t, n_permutations=n_permutations, seed=seed)
    out[int(c)] = {
      "n_source": int(len(s)),
      "n_target": int(len(t)),
      "pad": proxy_a_distance(s, t, seed=seed),
      "mmd2": test.mmd2,
      "mmd_p_value": test.p_value,
      "coral": coral_distance(s, t),
    }
  return out


def shift_report(
  src_feats,
  tgt_feats,
  src_labels=None,
  tgt_labels=None,
  seed: int = 0,
  *,
  n_permutations: int = 200,
) -> dict:
  """All shift measures in one JSON-ready dict.

  Keys: n_source, n_target, pad, mmd2, mmd_p_value, mmd_bandwidth, coral; with
  labels on both sides also label_tv (label-marginal shift) and per_class
  ({class: {n_source, n_target, pad, mmd2, mmd_p_value, coral}}).
  """
  src, tgt = as_2d(src_feats, "src_feats"), as_2d(tgt_feats, "tgt_feats")
  if src.shape[1] != tgt.shape[1]:
    raise ValueError(f"tgt_feats: feature dim {tgt.shape[1]} != src_feats dim {src.shape[1]}")
  test = mmd_test(src, tgt, n_permutations=n_permutations, seed=seed)
  report = {
    "n_source": int(len(src)),
    "n_target": int(len(tgt)),
    "pad": proxy_a_distance(src, tgt, seed=seed),
    "mmd2": test.mmd2,
    "mmd_p_value": test.p_value,
    "mmd_bandwidth": test.bandwidth,
    "coral": coral_distance(src, tgt),
  }
  if src_labels is not None and tgt_labels is not None:
    ys = as_labels(src_labels, len(src), "src_labels")
    yt = as_labels(tgt_labels, len(tgt), "tgt_labels")
    report["label_tv"] = label_shift(ys, yt)
    report["per_class"] = per_class_shift(
      src, tgt, ys, yt, seed=seed, n_permutations=max(n_permutations // 2, 1)
    )
  return report
