"""How well do a pretrained model's features / predictions suit a labelled target task?

Each score is computed from one forward pass over the labelled target data,
with no fine-tuning, so a model zoo can be ranked before anything is trained.
Higher is better for every score here. Ranking quality against accuracies
measured after fine-tuning is reported with Kendall's τ and weighted τ, the
metrics the papers use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from jaxdapt.analysis._util import as_2d, as_labels, as_probs


def _evidence(
  s2: np.ndarray, uty: np.ndarray, y_sq: float, n: int, dim: int, tol: float, max_iter: int
) -> float:
  """Maximised log-evidence of y = F w + N(0, 1/β), w ~ N(0, I/α), from F's SVD.

  Fixed-point updates of You et al. (2021), Alg. 1 (MacKay's evidence
  approximation): γ = Σ βσ²/(α+βσ²), α ← γ/‖m‖², β ← (n−γ)/‖Fm−y‖². With
  F = U S Vᵀ every quantity is a sum over singular values, so one SVD serves
  all classes and all iterations. When the features do not explain y the
  supremum is at α → ∞ (w = 0), which the iteration only approaches slowly;
  that limit, the evidence of y ~ N(0, 1/β) with β = n/‖y‖², is evaluated in
  closed form and the larger of the two is returned.
  """
  uty2 = uty * uty
  out_of_span = max(y_sq - uty2.sum(), 0.0)
  tiny = 1e-300

  def terms(alpha, beta):
    denom = alpha + beta * s2
    m_sq = float(((beta * beta * s2 / (denom * denom)) * uty2).sum())
    res_sq = out_of_span + float(((alpha / denom) ** 2 * uty2).sum())
    logdet_a = float(np.log(denom).sum()) + (dim - len(s2)) * np.log(alpha)
    evidence = (
      n / 2 * np.log(beta)
      + dim / 2 * np.log(alpha)
      - n / 2 * np.log(2 * np.pi)
      - beta / 2 * res_sq
      - alpha / 2 * m_sq
      - logdet_a / 2
    )
    return float((beta * s2 / denom).sum()), m_sq, res_sq, evidence

  alpha, beta = 1.0, 1.0
  gamma, m_sq, res_sq, evidence = terms(alpha, beta)
  for _ in range(max_iter):
    alpha = min(max(gamma / max(m_sq, tiny), tiny), 1e200)
    beta = min(max((n - gamma) / max(res_sq, tiny), tiny), 1e200)
    gamma, m_sq, res_sq, new_evidence = terms(alpha, beta)
    done = abs(new_evidence - evidence) <= tol * abs(new_evidence)
    evidence = new_evidence
    if done:
      break
  null_evidence = -n / 2 * (np.log(2 * np.pi * max(y_sq, tiny) / n) + 1.0)
  return max(evidence, null_evidence)


def logme(features, labels, *, tol: float = 1e-12, max_iter: int = 1000) -> float:
  """LogME (You et al., 2021): mean over targets of max_{α,β} log p(y | F, α, β) / n.

  Classification labels (n,) become one indicator target per class present;
  a float (n, k) array is treated as k regression targets. Features are used
  as given (the paper does not normalise them).
  """
  f = as_2d(features, "features")
  n, dim = f.shape
  y = np.asarray(labels)
  if y.ndim == 1:
    y = as_labels(y, n, "labels")
    targets = (y[:, None] == np.unique(y)[None, :]).astype(np.float64)
  else:
    targets = as_2d(y, "labels")
    if len(targets) != n:
      raise ValueError(f"labels: {len(targets)} rows but features have {n}")
  u, s, _ = np.linalg.svd(f, full_matrices=False)
  keep = s > s.max() * max(n, dim) * np.finfo(np.float64).eps if s.size else s > 0
  u, s2 = u[:, keep], s[keep] ** 2
  evidences = [_evidence(s2, u.T @ t, float(t @ t), n, dim, tol, max_iter) / n for t in targets.T]
  return float(np.mean(evidences))


def leep(source_probs, labels) -> float:
  """LEEP (Nguyen et al., 2020): mean log Σ_z P̂(y_i|z) θ_i(z).

  θ are the source head's softmax outputs on target inputs; P̂(y|z) is the
  empirical conditional of target label given source label, from the joint
  P̂(y, z) = (1/n) Σ_i θ_i(z)·1[y_i = y]. It is the log-likelihood of the
  "dummy" classifier that re-labels source predictions into target classes.
  """
  theta = as_probs(source_probs, "source_probs")
  y = as_labels(labels, len(theta), "labels")
  onehot = (y[:, None] == np.arange(y.max() + 1)[None, :]).astype(np.float64)
  joint = onehot.T @ theta / len(theta)  # (Y, Z)
  p_z = joint.sum(0, keepdims=True)
  cond = np.divide(joint, p_z, out=np.zeros_like(joint), where=p_z > 0)
  eep = (theta * cond[y]).sum(1)
  return float(np.mean(np.log(np.maximum(eep, 1e-300))))


def nce(source_labels, labels) -> float:
  """NCE (Tran et al., 2019): −H(Y | Z) with Z the hard source-label predictions.

  Accepts integer source labels (n,) or source probabilities/logits (n, Z),
  which are argmaxed. 0 is the best value (Z determines Y).
  """
  z = np.asarray(source_labels)
  z = np.argmax(z, 1) if z.ndim == 2 else z
  z = as_labels(z, len(z), "source_labels")
  y = as_labels(labels, len(z), "labels")
  joint = np.zeros((y.max() + 1, z.max() + 1))
  np.add.at(joint, (y, z), 1.0)
  joint /= len(y)
  p_z = joint.sum(0, keepdims=True)
  mask = joint > 0
  cond = np.divide(joint, p_z, out=np.ones_like(joint), where=mask)
  return float((joint[mask] * np.log(cond[mask])).sum())


def h_score(features, labels) -> float:
  """H-score (Bao et al., 2019): tr(cov(f)⁻¹ cov(E[f|y])).

  The between-class share of the feature covariance, i.e. how much of the
  features' variance a linear map can spend on the labels. A pseudo-inverse
  handles rank-deficient covariances (more dims than samples).
  """
  f = as_2d(features, "features")
  y = as_labels(labels, len(f), "labels")
  classes, inverse = np.unique(y, return_inverse=True)
  means = np.stack([f[inverse == i].mean(0) for i in range(len(classes))])
  g = means[inverse]
  fc, gc = f - f.mean(0), g - g.mean(0)
  cov_f = fc.T @ fc / (len(f) - 1)
  cov_g = gc.T @ gc / (len(f) - 1)
  return float(np.trace(np.linalg.pinv(cov_f, hermitian=True) @ cov_g))


def coding_rate(z: np.ndarray, eps: float) -> float:
  """R(Z, ε) = ½ log det(I_d + d/(n ε²) ZᵀZ) (Ma et al., 2007), via Z's singular values."""
  n, d = z.shape
  s = np.linalg.svd(z, compute_uv=False)
  return float(0.5 * np.log1p(d / (n * eps * eps) * s * s).sum())


def transrate(features, labels, *, eps: float = 1e-2) -> float:
  """TransRate (Huang et al., 2022): R(Z, ε) − R(Z, ε | Y) on centred features.

  The coding rate stands in for entropy, so the difference estimates the
  mutual information between features and labels. R(Z, ε|Y) = Σ_c (n_c/n)·
  R(Z_c, ε), the class-weighted conditional entropy (the authors' released
  code weights classes uniformly instead; equal for balanced labels). Values
  depend on ε: compare models at the same ε.
  """
  f = as_2d(features, "features")
  y = as_labels(labels, len(f), "labels")
  z = f - f.mean(0, keepdims=True)
  conditional = sum((y == c).mean() * coding_rate(z[y == c], eps) for c in np.unique(y))
  return coding_rate(z, eps) - float(conditional)


def transferability_report(features, labels, source_probs=None) -> dict[str, float]:
  """Every score that the given arrays allow: logme, h_score, transrate from features;
  leep and nce from the source head's probabilities. All higher = better."""
  out = {
    "logme": logme(features, labels),
    "h_score": h_score(features, labels),
    "transrate": transrate(features, labels),
  }
  if source_probs is not None:
    out["leep"] = leep(source_probs, labels)
    out["nce"] = nce(source_probs, labels)
  return out


def kendall_tau(scores: Sequence[float], accuracies: Sequence[float]) -> float:
  """Kendall's τ_b between a score and the measured accuracy over the same models."""
  from scipy.stats import kendalltau

  return float(kendalltau(np.asarray(scores, float), np.asarray(accuracies, float)).statistic)


def weighted_tau(scores: Sequence[float], accuracies: Sequence[float]) -> float:
  """Weighted τ (Vigna, 2015; scipy.stats.weightedtau): hyperbolic weights favour
  agreement at the top of the ranking, where model selection happens (used by LogME)."""
  from scipy.stats import weightedtau

  return float(weightedtau(np.asarray(scores, float), np.asarray(accuracies, float)).statistic)


def ranking_report(scores: Mapping[str, float], accuracies: Mapping[str, float]) -> dict:
  """How well one score ranks models: τ, weighted τ, and the regret of picking its top model.

  Both mappings are keyed by model name; only names in both are compared.
  """
  names = sorted(set(scores) & set(accuracies))
  if len(names) < 2:
    raise ValueError(f"scores/accuracies: need >= 2 models in common, got {names}")
  s = np.array([scores[k] for k in names], float)
  a = np.array([accuracies[k] for k in names], float)
  top = names[int(np.argmax(s))]
  return {
    "n_models": len(names),
    "kendall_tau": kendall_tau(s, a),
    "weighted_tau": weighted_tau(s, a),
    "top1": top,
    "top1_accuracy": float(accuracies[top]),
    "best_accuracy": float(a.max()),
    "top1_regret": float(a.max() - accuracies[top]),
  }
