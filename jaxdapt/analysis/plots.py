"""PNG figures and a one-file HTML report for an adaptation run.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas,
never through pyplot's global state, so they are safe to call from scripts,
tests and threads without a display. Every writer takes the output path first
and returns it.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from jaxdapt.analysis._util import as_2d, as_labels, subsample

DOMAIN_COLORS = {"source": "#1f77b4", "target": "#d62728"}
DOMAIN_MARKERS = {"source": "o", "target": "^"}


def _save(fig: Figure, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  FigureCanvasAgg(fig)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  return path


def tsne_embed(
  features, *, seed: int = 0, perplexity: float = 30.0, n_threads: int | None = 1
) -> np.ndarray:
  """2-D t-SNE (PCA-initialised, seeded); perplexity is capped below n/3 for small inputs.

  OpenMP is limited to `n_threads` (None: sklearn's default) because the
  Barnes-Hut gradient on ≤ 2,000 points is cheap, while OpenMP workers
  spin-waiting on a busy machine made it 30-70x slower when measured on 2 shared cores.
  """
  from sklearn.manifold import TSNE
  from threadpoolctl import threadpool_limits

  x = as_2d(features, "features")
  perplexity = float(min(perplexity, max((len(x) - 1) / 3.0, 1.0)))
  tsne = TSNE(
    n_components=2, perplexity=perplexity, init="pca", random_state=seed, learning_rate="auto"
  )
  with threadpool_limits(limits=n_threads, user_api="openmp"):
    return tsne.fit_transform(x)


def _pick(n_src: int, n_tgt: int, max_points: int, rng: np.random.Generator):
  """Indices so source + target ≤ max_points, each domain keeping at least half the budget."""
  half = max_points // 2
  k_src = min(n_src, max(half, max_points - n_tgt))
  k_tgt = min(n_tgt, max_points - k_src)
  return subsample(rng, n_src, k_src), subsample(rng, n_tgt, k_tgt)


def _embed_domains(src, tgt, ys, yt, max_points: int, seed: int):
  src, tgt = as_2d(src, "src_feats"), as_2d(tgt, "tgt_feats")
  i_s, i_t = _pick(len(src), len(tgt), max_points, np.random.default_rng(seed))
  emb = tsne_embed(np.concatenate([src[i_s], tgt[i_t]]), seed=seed)
  ys = None if ys is None else as_labels(ys, len(src), "src_labels")[i_s]
  yt = None if yt is None else as_labels(yt, len(tgt), "tgt_labels")[i_t]
  return emb[: len(i_s)], emb[len(i_s) :], ys, yt


def _domain_panel(ax, e_s, e_t, title: str) -> None:
  for name, e in (("source", e_s), ("target", e_t)):
    ax.scatter(
      e[:, 0],
      e[:, 1],
      s=7,
      alpha=0.6,
      c=DOMAIN_COLORS[name],
      marker=DOMAIN_MARKERS[name],
      label=f"{name} ({len(e)})",
      linewidths=0,
    )
  ax.set_title(title)
  ax.legend(loc="best", fontsize=8, markerscale=2)
  _tsne_axes(ax)


def _class_panel(ax, e_s, e_t, ys, yt, title: str) -> None:
  classes = np.unique(np.concatenate([a for a in (ys, yt) if a is not None]))
  cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
  color_of = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}
  for name, e, y in (("source", e_s, ys), ("target", e_t, yt)):
    colors = ["#bbbbbb"] * len(e) if y is None else [color_of[c] for c in y]
    ax.scatter(
      e[:, 0],
      e[:, 1],
      s=7 if name == "source" else 9,
      alpha=0.6,
      c=colors,
      marker=DOMAIN_MARKERS[name],
      linewidths=0,
    )
  handles = [
    Line2D([], [], ls="", marker=DOMAIN_MARKERS[d], color="k", label=d)
    for d in ("source", "target")
  ]
  if len(classes) <= 20:
    handles += [Line2D([], [], ls="", marker="s", color=color_of[c], label=str(c)) for c in classes]
  ax.legend(
    handles=handles,
    loc="center left",
    bbox_to_anchor=(1.01, 0.5),
    fontsize=8,
    title="domain / class",
    title_fontsize=8,
  )
  ax.set_title(title)
  _tsne_axes(ax)


def _tsne_axes(ax) -> None:
  ax.set_xlabel("t-SNE 1")
  ax.set_ylabel("t-SNE 2")
  ax.set_xticks([])
  ax.set_yticks([])


def plot_tsne(
  path: str,
  src_feats,
  tgt_feats,
  src_labels=None,
  tgt_labels=None,
  *,
  max_points: int = 2000,
  seed: int = 0,
  title: str = "t-SNE of features",
) -> str:
  """Source vs target t-SNE, coloured by domain (left) and by class (right).

  The class panel is drawn when either side has labels (unlabelled points in
  grey); markers keep the domains apart there too. At most `max_points` in all.
  """
  e_s, e_t, ys, yt = _embed_domains(src_feats, tgt_feats, src_labels, tgt_labels, max_points, seed)
  has_labels = ys is not None or yt is not None
  fig = Figure(figsize=(11.5 if has_labels else 5.5, 5), layout="constrained")
  axes = fig.subplots(1, 2 if has_labels else 1, squeeze=False)[0]
  _domain_panel(axes[0], e_s, e_t, "by domain")
  if has_labels:
    _class_panel(axes[1], e_s, e_t, ys, yt, "by class")
  fig.suptitle(title)
  return _save(fig, path)


def plot_tsne_before_after(
  path: str,
  before: tuple[Any, Any],
  after: tuple[Any, Any],
  src_labels=None,
  tgt_labels=None,
  *,
  max_points: int = 2000,
  seed: int = 0,
  title: str = "Features before / after adaptation",
) -> str:
  """Two t-SNEs of the same inputs, e.g. source-only vs adapted model features.

  `before` and `after` are (src_feats, tgt_feats) pairs over the same rows (so
  the labels serve both). Rows: before, after; columns: by domain, by class.
  Each embedding is fitted separately: compare cluster structure, not positions.
  """
  has_labels = src_labels is not None or tgt_labels is not None
  fig = Figure(figsize=(11.5 if has_labels else 11, 10 if has_labels else 5), layout="constrained")
  axes = fig.subplots(2 if has_labels else 1, 2, squeeze=False)
  for i, (name, (src, tgt)) in enumerate((("before", before), ("after", after))):
    e_s, e_t, ys, yt = _embed_domains(src, tgt, src_labels, tgt_labels, max_points, seed)
    if has_labels:
      _domain_panel(axes[i, 0], e_s, e_t, f"{name}: by domain")
      _class_panel(axes[i, 1], e_s, e_t, ys, yt, f"{name}: by class")
    else:
      _domain_panel(axes[0, i], e_s, e_t, f"{name}: by domain")
  fig.suptitle(title)
  return _save(fig, path)


def load_metrics(path: str) -> list[dict[str, Any]]:
  """Rows of a run's metrics.jsonl (one JSON object per line)."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def plot_training_curves(
  path: str,
  metrics: str | Sequence[Mapping[str, Any]],
  *,
  marks: Mapping[str, int] | None = None,
  title: str = "Training curves",
) -> str:
  """Losses (train rows), accuracies (eval rows, plus train_acc) and the learning rate vs step.

  `metrics` is a metrics.jsonl path or its rows; `marks` draws labelled
  vertical lines, e.g. the steps that checkpoint-selection criteria chose.
  """
  rows = load_metrics(metrics) if isinstance(metrics, str) else list(metrics)
  train = sorted((r for r in rows if r.get("kind") == "train"), key=lambda r: r["step"])
  evals = sorted((r for r in rows if r.get("kind") == "eval"), key=lambda r: r["step"])

  def series(rs, key):
    pts = [(r["step"], r[key]) for r in rs if isinstance(r.get(key), (int, float))]
    return np.array(pts, float).reshape(-1, 2)

  loss_keys = [k for k in ("loss", "cls_loss", "transfer_loss") if any(k in r for r in train)]
  loss_keys += sorted({k for r in train for k in r if k.endswith("_loss")} - set(loss_keys))
  acc_keys = sorted({k for r in evals for k in r if k.endswith("_acc")})
  panels = [
    ("loss", [(k, series(train, k)) for k in loss_keys]),
    (
      "accuracy",
      [(k, series(evals, k)) for k in acc_keys]
      + (
        [("train_acc", series(train, "train_acc"))] if any("train_acc" in r for r in train) else []
      ),
    ),
  ]
  if any("lr" in r for r in train):
    panels.append(("learning rate", [("lr", series(train, "lr"))]))
  fig = Figure(figsize=(5 * len(panels), 5.5), layout="constrained")
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  # One line per marked step, naming every criterion that chose it (they often agree).
  by_step: dict[int, list[str]] = {}
  for name, step in (marks or {}).items():
    by_step.setdefault(step, []).append(name)
  for ax, (ylabel, lines) in zip(axes, panels):
    drawn: list[tuple[np.ndarray, Any]] = []  # (points, their Line2D)
    for name, pts in lines:
      if not len(pts):
        continue
      same = next(
        (line for p, line in drawn if p.shape == pts.shape and np.array_equal(p, pts)), None
      )
      if same is not None:  # e.g. DANN's transfer_loss is its domain_loss: say so, once
        same.set_label(f"{same.get_label()} = {name}")
        continue
      (line,) = ax.plot(
        pts[:, 0],
        pts[:, 1],
        marker="o" if len(pts) < 30 else None,
        ms=3,
        ls="--" if name == "train_acc" else "-",
        label=name,
      )
      drawn.append((pts, line))
    for j, (step, names) in enumerate(sorted(by_step.items())):
      ax.axvline(
        step, color=f"C{(j + 5) % 10}", ls=":", lw=1.2, label=f"{', '.join(names)} @ {step}"
      )
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # below the axes: never over the curves
      ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1)
  fig.suptitle(title)
  return _save(fig, path)


def plot_confusion(
  path: str,
  labels,
  preds,
  *,
  class_names: Sequence[str] | None = None,
  normalize: bool = True,
  title: str = "Target confusion matrix",
) -> str:
  """Confusion matrix (rows = true class); row-normalised by default so per-class
  recall on the diagonal is comparable across imbalanced classes. Cells are
  annotated up to 20 classes."""
  y = as_labels(labels, len(np.asarray(labels)), "labels")
  p = as_labels(preds, len(y), "preds")
  k = int(max(y.max(), p.max())) + 1
  if class_names is not None:
    if len(class_names) < k:
      raise ValueError(
        f"class_names: {len(class_names)} names but labels/preds reach class {k - 1}"
      )
    k = len(class_names)
  cm = np.zeros((k, k))
  np.add.at(cm, (y, p), 1.0)
  shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
  names = [str(i) for i in range(k)] if class_names is None else [str(c) for c in class_names]
  fig = Figure(figsize=(max(4.5, 0.45 * k + 2.5), max(4, 0.45 * k + 1.8)), layout="constrained")
  ax = fig.subplots()
  im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
  fig.colorbar(im, ax=ax, label="fraction of true class" if normalize else "count")
  long_names = max(map(len, names)) > 2
  ax.set_xticks(
    range(k), names, rotation=45 if long_names else 0, ha="right" if long_names else "center"
  )
  ax.set_yticks(range(k), names)
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class")
  if k <= 20:
    for i in range(k):
      for j in range(k):
        if cm[i, j]:
          ax.text(
            j,
            i,
            f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if shown[i, j] > 0.6 * shown.max() else "black",
          )
  ax.set_title(f"{title} (acc {float((y == p).mean()):.3f}, n={len(y)})")
  return _save(fig, path)


def _table_html(table: Any) -> str:
  def cell(v):
    if isinstance(v, float):
      return f"{v:.4g}"
    if isinstance(v, (dict, list)):
      return html.escape(json.dumps(v))
    return html.escape(str(v))

  if isinstance(table, Mapping):
    body = "".join(f"<tr><th>{cell(k)}</th><td>{cell(v)}</td></tr>" for k, v in table.items())
    return f"<table>{body}</table>"
  rows = list(table)
  cols = list(dict.fromkeys(k for r in rows for k in r))
  head = "".join(f"<th>{cell(c)}</th>" for c in cols)
  body = "".join(
    "<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows
  )
  return f"<table><tr>{head}</tr>{body}</table>"


_CSS = (
  "body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
  "table{border-collapse:collapse;margin:0.5em 0}"
  "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}"
  "th{background:#f3f3f3}img{max-width:100%;display:block;margin:0.5em 0}"
)


def html_report(
  out_dir: str, title: str, sections: Sequence[Mapping[str, Any]], filename: str = "report.html"
) -> str:
  """One self-contained HTML file (PNGs inlined as base64) at out_dir/filename.

  Each section is a mapping with any of: 'heading' (str), 'text' (str, escaped),
  'images' (PNG paths), 'table' (a mapping → two columns, or a list of row
  dicts → one column per key). Self-contained so it can be attached or copied
  off a machine without its image files.
  """
  parts = [
    f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
    f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
  ]
  for sec in sections:
    if sec.get("heading"):
      parts.append(f"<h2>{html.escape(str(sec['heading']))}</h2>")
    if sec.get("text"):
      parts.append(f"<p>{html.escape(str(sec['text']))}</p>")
    if sec.get("table") is not None:
      parts.append(_table_html(sec["table"]))
    for img in sec.get("images", ()):
      with open(img, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
      alt = html.escape(os.path.basename(img))
      parts.append(f"<img alt='{alt}' src='data:image/png;base64,{data}'>")
  parts.append("</body></html>")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, filename)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(parts))
  return path
