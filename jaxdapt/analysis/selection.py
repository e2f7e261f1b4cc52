"""Label-free checkpoint selection: which evaluation step to keep without target labels.

Unsupervised domain adaptation has no labelled target validation set, yet
hyper-parameters and stopping steps still have to be chosen. Each criterion
here turns one evaluation's arrays into a number, ORIENTED SO THAT HIGHER IS
BETTER (quantities where lower is better are negated and carry a `neg_`
prefix). `select` then picks the history row a criterion prefers, and
`selection_report` says how much target accuracy each choice costs against
the oracle (which does use target labels).

  source_val_acc  accuracy on held-out source data (higher better; as given)
  neg_entropy     −mean_i H(p_i) on target (Morerio et al., 2018 use entropy;
                  raw entropy is lower-better, hence negated)
  info_max        H(mean_i p_i) − mean_i H(p_i): confident AND diverse target
                  predictions (mutual information of SHOT/IM; higher better)
  snd             soft neighbourhood density of the target softmax outputs
                  (Saito et al., 2021; higher better)
  snd_features    the same on L2-normalised target features (higher better)
  neg_dev         −DEV, deep embedded validation risk (You et al., 2019; DEV is a
                  target-risk estimate, lower better, hence negated)

The trainer's eval rows already carry `target_test_entropy` (raw, lower
better) and `target_test_im` (= info_max, higher better); `select(rows,
'-target_test_entropy')` minimises a raw key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxdapt.analysis._util import as_2d, as_labels, entropy, softmax, subsample

ORIENTATION: dict[str, str] = {
  "source_val_acc": "source-validation accuracy; higher is better (as given)",
  "neg_entropy": "minus the mean target prediction entropy; raw entropy is lower-better",
  "info_max": "H(mean p) - mean H(p) on target; higher is better (as computed)",
  "snd": "soft neighbourhood density of target softmax outputs; higher is better",
  "snd_features": "soft neighbourhood density of target features; higher is better",
  "neg_dev": "minus the DEV target-risk estimate; raw DEV is lower-better",
}


def neg_entropy(target_probs) -> float:
  """−mean H(p): confident target predictions score high (higher = better)."""
  return float(-entropy(as_2d(target_probs, "target_probs")).mean())


def info_max(target_probs) -> float:
  """H(p̄) − mean H(p): rewards confident per-sample but class-diverse predictions,
  so collapsing onto one class (low entropy but H(p̄) = 0) is not rewarded."""
  p = as_2d(target_probs, "target_probs")
  return float(entropy(p.mean(0)) - entropy(p).mean())


def snd(x, *, temperature: float = 0.05, max_points: int = 3000, seed: int = 0) -> float:
  """Soft neighbourhood density (Saito et al., 2021); higher = better.

  Rows are L2-normalised, cosine similarities to all OTHER points (diagonal
  removed) go through a softmax with temperature τ per row, and SND is the
  mean entropy of those neighbour distributions: high when points sit in
  dense clusters with many near neighbours. Subsampled (seeded) to bound the
  O(n²) similarity matrix; keep `max_points`/`seed` fixed across checkpoints.
  """
  x = as_2d(x, "x")
  x = x[subsample(np.random.default_rng(seed), len(x), max_points)]
  if len(x) < 3:
    return float("nan")
  x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  logits = x @ x.T / temperature
  np.fill_diagonal(logits, -np.inf)
  logits -= logits.max(1, keepdims=True)
  p = np.exp(logits)
  p /= p.sum(1, keepdims=True)
  return float(entropy(p).mean())


def density_ratios(
  source_train_feats,
  target_feats,
  source_val_feats,
  *,
  C: float = 1.0,
  max_per_domain: int = 5000,
  seed: int = 0,
) -> np.ndarray:
  """w(x) = p_t(x)/p_s(x) on source-validation points, from a domain classifier.

  As in DEV (You et al., 2019): a logistic regression trained on source-train
  (d=0) vs target (d=1) features gives P(d=1|x)/P(d=0|x) = w(x)·n_t/n_s, so
  w = exp(logit)·n_s/n_t. The logit is clipped to ±30 to keep w finite.
  """
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler

  rng = np.random.default_rng(seed)
  s = as_2d(source_train_feats, "source_train_feats")
  t = as_2d(target_feats, "target_feats")
  v = as_2d(source_val_feats, "source_val_feats")
  s = s[subsample(rng, len(s), max_per_domain)]
  t = t[subsample(rng, len(t), max_per_domain)]
  x = np.concatenate([s, t])
  d = np.concatenate([np.zeros(len(s)), np.ones(len(t))])
  clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000)).fit(x, d)
  logit = np.clip(clf.decision_function(v), -30.0, 30.0)
  return np.exp(logit) * len(s) / len(t)


def dev_risk(losses, weights) -> float:
  """DEV's control-variate estimate of the target risk (You et al., 2019, Alg. 1); lower = better.

  L = w·ℓ is an unbiased but high-variance importance-weighted risk; since
  E[w] = 1 under the source, η = −Cov(L, w)/Var(w) gives the variance-reduced
  mean(L) + η·mean(w) − η.
  """
  loss = np.asarray(losses, np.float64).reshape(-1)
  w = np.asarray(weights, np.float64).reshape(-1)
  if loss.shape != w.shape:
    raise ValueError(f"weights: shape {w.shape} != losses shape {loss.shape}")
  weighted = w * loss
  var_w = np.var(w, ddof=1)
  cov = np.cov(weighted, w, ddof=1)[0, 1]
  eta = -cov / var_w if var_w > 0 else 0.0
  return float(weighted.mean() + eta * w.mean() - eta)


def deep_embedded_validation(
  source_train_feats, target_feats, source_val_feats, source_val_losses, *, seed: int = 0
) -> float:
  """DEV (You et al., 2019): importance-weighted source-validation loss; lower = better."""
  w = density_ratios(source_train_feats, target_feats, source_val_feats, seed=seed)
  return dev_risk(source_val_losses, w)


def _cross_entropy(logits, labels) -> np.ndarray:
  z = as_2d(logits, "source_val_logits")
  y = as_labels(labels, len(z), "source_val_labels")
  z = z - z.max(1, keepdims=True)
  return np.log(np.exp(z).sum(1)) - z[np.arange(len(z)), y]


def criteria(
  *,
  target_logits=None,
  target_features=None,
  source_val_acc: float | None = None,
  source_val_logits=None,
  source_val_labels=None,
  source_val_features=None,
  source_train_features=None,
  snd_temperature: float = 0.05,
  seed: int = 0,
) -> dict[str, float]:
  """Every criterion the given arrays allow, ALL ORIENTED HIGHER = BETTER (see ORIENTATION).

  target_logits → neg_entropy, info_max, snd; target_features → snd_features;
  source_val_logits + labels → source_val_acc (unless given); these plus
  source_train_features, source_val_features and target_features → neg_dev
  (per-sample loss ℓ = cross-entropy on source-validation).
  """
  out: dict[str, float] = {}
  if source_val_acc is not None:
    out["source_val_acc"] = float(source_val_acc)
  elif source_val_logits is not None and source_val_labels is not None:
    z = as_2d(source_val_logits, "source_val_logits")
    y = as_labels(source_val_labels, len(z), "source_val_labels")
    out["source_val_acc"] = float((z.argmax(1) == y).mean())
  if target_logits is not None:
    p = softmax(as_2d(target_logits, "target_logits"))
    out["neg_entropy"] = neg_entropy(p)
    out["info_max"] = info_max(p)
    out["snd"] = snd(p, temperature=snd_temperature, seed=seed)
  if target_features is not None:
    out["snd_features"] = snd(target_features, temperature=snd_temperature, seed=seed)
  dev_inputs = (
    source_train_features,
    target_features,
    source_val_features,
    source_val_logits,
    source_val_labels,
  )
  if all(a is not None for a in dev_inputs):
    losses = _cross_entropy(source_val_logits, source_val_labels)
    out["neg_dev"] = -deep_embedded_validation(
      source_train_features, target_features, source_val_features, losses, seed=seed
    )
  return out


def _finite(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def score(row: dict[str, Any], criterion: str) -> float | None:
  """row[criterion], or −row[key] for criterion '-key'; None when missing or not finite."""
  key, sign = (criterion[1:], -1.0) if criterion.startswith("-") else (criterion, 1.0)
  value = row.get(key)
  return sign * value if _finite(value) else None


def select(history: Sequence[dict[str, Any]], criterion: str) -> dict[str, Any]:
  """The row whose `criterion` is highest (ties → the later step).

  `history` is a list of evaluation rows (e.g. the 'eval' rows of
  metrics.jsonl, optionally merged with `criteria(...)` output); rows without
  a finite value are skipped. Higher is taken as better, which holds for every
  key `criteria` returns and for accuracies; prefix a lower-is-better key
  with '-' to minimise it, e.g. '-target_test_entropy' or '-source_val_nll'
  for the trainer's logged metrics.
  """
  rows = [r for r in history if score(r, criterion) is not None]
  if not rows:
    raise ValueError(
      f"criterion: no row of the history has a finite {criterion.lstrip('-')!r} "
      f"(keys seen: {sorted({k for r in history for k in r})})"
    )
  return max(rows, key=lambda r: (score(r, criterion), r.get("step", 0)))


def selection_report(
  history: Sequence[dict[str, Any]],
  criteria_names: Sequence[str],
  target_key: str = "target_test_acc",
) -> dict[str, dict[str, float]]:
  """For each criterion (plus 'oracle' and 'last'): the chosen step, its target
  accuracy and the regret against the oracle (best target accuracy in the history)."""
  rows = [r for r in history if _finite(r.get(target_key))]
  if not rows:
    raise ValueError(f"target_key: no row has a finite {target_key!r}")
  oracle = select(rows, target_key)
  chosen = {"oracle": oracle, "last": max(rows, key=lambda r: r.get("step", 0))}
  for name in criteria_names:
    chosen[name] = select(rows, name)
  best = float(oracle[target_key])
  return {
    name: {
      "step": int(r.get("step", -1)),
      target_key: float(r[target_key]),
      "regret": best - float(r[target_key]),
    }
    for name, r in chosen.items()
  }
