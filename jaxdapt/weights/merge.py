"""Imported weights on disk, and their strict merge into freshly initialised variables.

An import directory holds `checkpoint/` (Orbax, a {'params', 'batch_stats'}
tree in the Classifier layout: `backbone/...` and, with --keep-head,
`head/out/...`) and `metadata.json` (arch, source, mean/std, resolution...).
`load_pretrained` reads it; `merge_into` is what the trainer calls with the
model's init variables and config.model.dont_load.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from jaxdapt.weights.errors import WeightsError

PyTree = Any
FORMAT = "jaxdapt-pretrained/1"
CHECKPOINT_DIR = "checkpoint"
METADATA_FILE = "metadata.json"


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
  """Converted variables (numpy leaves, Classifier layout) and their metadata."""

  params: PyTree
  batch_stats: PyTree
  metadata: dict[str, Any]


def save_pretrained(
  out_dir: str | os.PathLike,
  params: PyTree,
  batch_stats: PyTree,
  metadata: dict[str, Any],
  *,
  force: bool = False,
) -> str:
  """Writes OUT/checkpoint (Orbax) and OUT/metadata.json; returns OUT as an absolute path."""
  out = os.path.abspath(os.fspath(out_dir))
  ckpt = os.path.join(out, CHECKPOINT_DIR)
  if os.path.exists(ckpt) and not force:
    raise WeightsError(f"{ckpt} already exists; pass --force to overwrite it")
  os.makedirs(out, exist_ok=True)
  # Orbax cannot store an empty subtree (VGG without BN, ViT): leave the key out.
  tree = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(ckpt, tree, force=force)
    ckptr.wait_until_finished()
  with open(os.path.join(out, METADATA_FILE), "w") as f:
    json.dump({"format": FORMAT, **metadata}, f, indent=2, sort_keys=True)
  return out


def load_pretrained(path: str | os.PathLike, *, arch: str | None = None) -> PretrainedWeights:
  """Reads an import directory (or its checkpoint/ subdirectory).

  With `arch`, the weights must be for that registered model name, so a
  config that names resnet50 cannot silently load resnet101 weights.
  """
  root = os.path.abspath(os.fspath(path))
  if os.path.basename(root) == CHECKPOINT_DIR:
    root = os.path.dirname(root)
  meta_path = os.path.join(root, METADATA_FILE)
  if not os.path.isfile(meta_path):
    raise WeightsError(
      f"init_from: {root} is not an imported-weights directory (no "
      f"{METADATA_FILE}); create one with `jaxdapt weights import`"
    )
  with open(meta_path) as f:
    metadata = json.load(f)
  if metadata.get("format") != FORMAT:
    raise WeightsError(f"{meta_path}: format {metadata.get('format')!r}, expected {FORMAT!r}")
  if arch is not None and metadata.get("arch") != arch:
    raise WeightsError(
      f"init_from: {root} holds {metadata.get('arch')} weights, but the model is {arch}"
    )
  ckpt = os.path.join(root, CHECKPOINT_DIR)
  try:
    with ocp.PyTreeCheckpointer() as ckptr:
      meta = ckptr.metadata(ckpt).item_metadata
      restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
      tree = ckptr.restore(ckpt, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  except Exception as e:  # Orbax raises many types for unreadable files
    raise WeightsError(
      f"init_from: {ckpt} could not be read ({type(e).__name__}: {str(e)[:300]})"
    ) from e
  return PretrainedWeights(tree["params"], tree.get("batch_stats", {}), metadata)


@dataclasses.dataclass(frozen=True)
class MergeReport:
  """What merge_into did, as '/'-joined paths (no collection prefix)."""

  loaded: tuple[str, ...]  # taken from the pretrained weights
  kept_init: tuple[str, ...]  # matched dont_load: left at their init values
  unused: tuple[str, ...]  # pretrained tensors matched by dont_load and dropped

  def summary(self) -> str:
    return (
      f"loaded {len(self.loaded)} pretrained tensors; {len(self.kept_init)} kept at init "
      f"(dont_load){_examples(self.kept_init)}; {len(self.unused)} pretrained tensors "
      f"not used{_examples(self.unused)}"
    )


def _examples(paths: Sequence[str], n: int = 4) -> str:
  if not paths:
    return ""
  return " [" + ", ".join(paths[:n]) + (", ..." if len(paths) > n else "") + "]"


def merge_into(
  init_params: PyTree,
  init_batch_stats: PyTree | None,
  pretrained: PretrainedWeights,
  dont_load: Sequence[str] = (),
) -> tuple[PyTree, PyTree, MergeReport]:
  """Returns (params, batch_stats, report): init values replaced by pretrained ones.

  Strict: every init leaf must either come from `pretrained` with the same
  shape or fully match one of the `dont_load` regexes (re.fullmatch over
  paths like 'head/out/kernel' or 'backbone/bn1/mean'); every pretrained
  leaf must be used or match dont_load. Anything else raises WeightsError
  naming each missing, unexpected and mis-shaped tensor. Loaded leaves take
  the init leaf's dtype.
  """
  try:
    patterns = [re.compile(p) for p in dont_load]
  except re.error as e:
    raise WeightsError(f"dont_load: invalid regex ({e})") from None
  skip = lambda path: any(p.fullmatch(path) for p in patterns)
  loaded, kept, unused, missing, extra, misshaped = [], [], [], [], [], []
  merged = []
  for init, pre, coll in (
    (init_params, pretrained.params, "params"),
    (init_batch_stats or {}, pretrained.batch_stats or {}, "batch_stats"),
  ):
    init_flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(_plain(init)).items()}
    pre_flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(_plain(pre)).items()}
    out = {}
    for path, value in init_flat.items():
      if skip(path):
        kept.append(path)
        out[path] = value
      elif path not in pre_flat:
        missing.append(f"{coll}:{path} {list(np.shape(value))}")
      elif np.shape(pre_flat[path]) != np.shape(value):
        misshaped.append(
          f"{coll}:{path}: pretrained {list(np.shape(pre_flat[path]))}, "
          f"model {list(np.shape(value))}"
        )
      else:
        loaded.append(path)
        out[path] = jnp.asarray(pre_flat[path], dtype=value.dtype)
    for path, value in pre_flat.items():
      if path in init_flat:
        continue
      (unused if skip(path) else extra).append(
        path if skip(path) else f"{coll}:{path} {list(np.shape(value))}"
      )
    merged.append(traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in out.items()}))
  if missing or extra or misshaped:
    arch = pretrained.metadata.get("arch", "?")
    lines = [
      f"pretrained {arch} weights do not fit the model (use dont_load regexes for "
      f"parts that should keep their init, e.g. 'head/.*'):"
    ]
    for items, label in (
      (missing, "missing from the weights"),
      (extra, "in the weights but not in the model"),
      (misshaped, "mis-shaped"),
    ):
      if items:
        lines.append(f"  {len(items)} {label}: " + "; ".join(items))
    raise WeightsError("\n".join(lines))
  report = MergeReport(tuple(loaded), tuple(kept), tuple(unused))
  return merged[0], merged[1], report


def _plain(tree: PyTree) -> dict:
  """FrozenDict / nested mappings -> plain dicts (flatten_dict needs dicts)."""
  if hasattr(tree, "unfreeze"):
    tree = tree.unfreeze()
  return {k: _plain(v) if hasattr(v, "items") else v for k, v in dict(tree).items()}
