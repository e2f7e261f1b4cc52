"""Feature extraction: a model's (features, logits) over a dataset, and an on-disk store.

One jitted eval-mode forward, data-parallel over the experiment's mesh (batches
padded to the device count by `data.eval_batches`, padding rows dropped). The
trainer uses it for label-free selection criteria at each evaluation, the
analysis command for shift and t-SNE, and the linear probe / kNN (`probe.py`)
read its stored arrays, so features are computed once and reused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from jaxdapt import data, sharding
from jaxdapt.data.subset import Subset, subset  # noqa: F401  (re-exported: features.subset)
from jaxdapt.step import apply_model, compute_dtype, input_mean_std, normalize

STORE_VERSION = 1


def forward_fn(exp) -> Callable:
  """Jitted (features, logits) in eval mode with the trainer's input normalisation."""
  dtype = compute_dtype(exp.config, exp.mesh)
  mean_std = input_mean_std(exp.config)

  def forward(params, batch_stats, images):
    out, _ = apply_model(
      exp.model, params["model"], batch_stats, normalize(images, dtype, mean_std), train=False
    )
    return out["features"].astype(jnp.float32), out["logits"].astype(jnp.float32)

  return jax.jit(forward, out_shardings=sharding.replicated(exp.mesh))


def extract(exp, forward: Callable, state, source) -> dict[str, np.ndarray]:
  """Features, logits and labels of every row of `source` (padding rows dropped).

  Every process gets the whole result (the forward's output is replicated)."""
  local_batch = exp.config.data.eval_batch_size // jax.process_count()
  feats, logits, labels = [], [], []
  for batch in data.eval_batches(
    source,
    batch_size=local_batch,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  ):
    f, z = forward(state.params, state.batch_stats, sharding.global_batch(batch["image"], exp.mesh))
    mask, label = _all_processes(batch["mask"]), _all_processes(batch["label"])
    feats.append(np.asarray(f)[mask])
    logits.append(np.asarray(z)[mask])
    labels.append(label[mask])
  return {
    "features": np.concatenate(feats),
    "logits": np.concatenate(logits),
    "labels": np.concatenate(labels).astype(np.int64),
  }


def _all_processes(local: np.ndarray) -> np.ndarray:
  """Host arrays of every process, in process order (the global batch's row order)."""
  if jax.process_count() == 1:
    return np.asarray(local)
  return np.asarray(multihost_utils.process_allgather(local, tiled=True))


def save_store(path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
  """Writes PATH/features.npz and PATH/meta.json (written last: its presence marks a
  complete store, so an interrupted write is recomputed, never half-read). Each file is
  renamed into place, so processes writing the same store at once never interleave."""
  os.makedirs(path, exist_ok=True)
  meta_path = os.path.join(path, "meta.json")
  if os.path.exists(meta_path):
    os.remove(meta_path)
  tmp = f".tmp{os.getpid()}"
  np.savez(os.path.join(path, f"features{tmp}.npz"), **arrays)
  os.replace(os.path.join(path, f"features{tmp}.npz"), os.path.join(path, "features.npz"))
  with open(meta_path + tmp, "w") as f:
    json.dump(
      {"version": STORE_VERSION, **meta, "n": {k: len(v) for k, v in arrays.items()}}, f, indent=2
    )
  os.replace(meta_path + tmp, meta_path)
  return path


def load_store(path: str, meta: dict[str, Any] | None = None) -> dict[str, np.ndarray] | None:
  """The stored arrays, or None when PATH holds no complete store or one made with
  different `meta` (another model, checkpoint step or dataset)."""
  meta_path = os.path.join(path, "meta.json")
  if not os.path.isfile(meta_path):
    return None
  with open(meta_path) as f:
    saved = json.load(f)
  if saved.get("version") != STORE_VERSION:
    return None
  if meta is not None and any(saved.get(k) != json.loads(json.dumps(v)) for k, v in meta.items()):
    return None
  with np.load(os.path.join(path, "features.npz")) as z:
    return {k: z[k] for k in z.files}
