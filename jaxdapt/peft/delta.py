"""A PEFT run stored as its delta: the leaves it trained, plus a checked reference to the base.

A PEFT run leaves most of the model exactly as model.init_from loaded it, so storing the
whole model per run is mostly copies of one base. A delta directory holds

  delta.npz    the model leaves the run's peft.method trains (LoRA factors and scale,
               adapters, prompts, biases; always the head, bottleneck and model.dont_load
               layers) and the BatchNorm statistics that differ from the base's (running
               statistics update in training mode even in a frozen backbone)
  peft.json    the format, the run (workdir, step, peft.method, model.name) and the base:
               model.init_from's path, kind (a jaxdapt run at a step, or an import
               directory) and the sha256 of every file its weights are read from

`reconstruct` reads the base as model.init_from does (LoRA factors folded by lora.merged),
checks every digest, and lays the delta over it: the run's parameters, bitwise. `split`
checks the same at export time, so a delta that would not reproduce its run (a frozen leaf
that differs from the base, e.g. the base was retrained in place) is never written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from flax import traverse_util

from jaxdapt import checkpoint
from jaxdapt.errors import CheckpointError, ConfigError
from jaxdapt.peft import lora, presets
from jaxdapt.weights.merge import CHECKPOINT_DIR, METADATA_FILE, load_pretrained

PyTree = Any
FORMAT = "jaxdapt-peft-delta/1"
DELTA_FILE = "delta.npz"
META_FILE = "peft.json"
COLLECTIONS = ("params", "batch_stats")


def flat(tree: PyTree) -> dict[str, np.ndarray]:
  """{'/'-joined path: numpy leaf} of a nested mapping (FrozenDicts included)."""
  if hasattr(tree, "unfreeze"):
    tree = tree.unfreeze()
  plain = lambda t: {k: plain(v) if hasattr(v, "items") else v for k, v in dict(t).items()}
  return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(plain(tree)).items()}


def unflat(leaves: dict[str, np.ndarray]) -> dict:
  return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in leaves.items()})


def trained(method: str, dont_load: Sequence[str], names: Sequence[str]) -> list[str]:
  """The model paths (no 'model/' prefix) among `names` that `method` trains or adds."""
  regexes = presets.trainable_regexes(method, dont_load) + presets.NEW_LEAVES.get(method, ())
  compiled = [re.compile(r) for r in regexes]
  return [n for n in names if any(c.fullmatch(n) for c in compiled)]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
  return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def split(
  params: PyTree,
  batch_stats: PyTree,
  base_params: PyTree,
  base_stats: PyTree,
  method: str,
  dont_load: Sequence[str],
) -> dict[str, dict[str, np.ndarray]]:
  """{'params': ..., 'batch_stats': ...} flat leaves of the run that the base does not give:
  what `method` trains or adds, leaves the base lacks, statistics that differ. ConfigError
  (one line) when a leaf the method freezes differs from the base: the base is not what
  the run started from, and the delta could not reproduce it."""
  run = {"params": flat(params), "batch_stats": flat(batch_stats)}
  base = {"params": flat(base_params), "batch_stats": flat(base_stats)}
  keep = set(trained(method, dont_load, list(run["params"])))
  out: dict[str, dict[str, np.ndarray]] = {c: {} for c in COLLECTIONS}
  for coll in COLLECTIONS:
    for name, value in run[coll].items():
      held = base[coll].get(name)
      if (coll == "params" and name in keep) or held is None:
        out[coll][name] = value
      elif not _same(value, held):
        if coll == "batch_stats":
          out[coll][name] = value
        else:
          raise ConfigError(
            f"peft export: {name} is frozen under peft.method={method!r} but differs from "
            f"the base weights (model.init_from); the base has changed since the run started"
          )
  return out


def overlay(base_params: PyTree, base_stats: PyTree, delta: dict) -> tuple[dict, dict]:
  """The base with the delta's leaves put in (new leaves added): nested numpy trees."""
  out = []
  for coll, base in (("params", base_params), ("batch_stats", base_stats)):
    out.append(unflat({**flat(base), **delta.get(coll, {})}))
  return out[0], out[1]


def nbytes(path: str) -> int:
  """Bytes of a file, or of every file under a directory."""
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(
    os.path.getsize(os.path.join(folder, f)) for folder, _, files in os.walk(path) for f in files
  )


def digests(root: str, paths: Sequence[str]) -> dict[str, str]:
  """{path relative to root: sha256} of every file in `paths` (files or directories)."""
  out = {}
  for path in paths:
    files = (
      [path]
      if os.path.isfile(path)
      else sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    )
    for file in files:
      h = hashlib.sha256()
      with open(file, "rb") as f:
        for block in iter(lambda f=f: f.read(1 << 20), b""):
          h.update(block)
      out[os.path.relpath(file, root)] = h.hexdigest()
  return dict(sorted(out.items()))


def load_base(run: str, step: int | None, init_from: str = "") -> tuple[PyTree, PyTree, dict]:
  """(params, batch_stats, reference) of a base as model.init_from reads it: a jaxdapt
  workdir `run` at `step` (None: latest) or an import directory; LoRA folded in. The
  reference names it and holds the sha256 of the files its weights come from."""
  path = os.path.abspath(run)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    params, batch_stats, step = checkpoint.load_model_variables(path, step)
    files = [os.path.join(path, "checkpoints", str(step), "state")]
    ref = {"kind": "run", "step": step}
  else:
    pretrained = load_pretrained(path)
    params, batch_stats = pretrained.params, pretrained.batch_stats
    files = [os.path.join(path, METADATA_FILE), os.path.join(path, CHECKPOINT_DIR)]
    ref = {"kind": "import", "arch": pretrained.metadata.get("arch")}
  ref = {"init_from": init_from or run, "path": path, **ref, "sha256": digests(path, files)}
  return lora.merge_checkpoint_params(params), batch_stats, ref


def save(out: str, delta: dict, metadata: dict, force: bool = False) -> str:
  """Writes OUT/delta.npz (keys 'params/<path>', 'batch_stats/<path>') and OUT/peft.json."""
  out = os.path.abspath(out)
  target = os.path.join(out, DELTA_FILE)
  if os.path.exists(target) and not force:
    raise ConfigError(f"--out: {target} already exists; pass --force to overwrite it")
  os.makedirs(out, exist_ok=True)
  arrays = {f"{c}/{n}": v for c in COLLECTIONS for n, v in delta.get(c, {}).items()}
  with open(target, "wb") as f:
    np.savez(f, **arrays)
  with open(os.path.join(out, META_FILE), "w") as f:
    json.dump({"format": FORMAT, **metadata}, f, indent=2, sort_keys=True)
  return out


def load(path: str) -> tuple[dict, dict]:
  """(delta, metadata) of a delta directory written by `save`."""
  meta_path = os.path.join(path, META_FILE)
  if not os.path.isfile(meta_path):
    raise ConfigError(f"{path}: not a PEFT delta directory (no {META_FILE}); see docs/peft.md")
  with open(meta_path) as f:
    metadata = json.load(f)
  if metadata.get("format") != FORMAT:
    raise ConfigError(f"{meta_path}: format {metadata.get('format')!r}, expected {FORMAT!r}")
  delta: dict[str, dict[str, np.ndarray]] = {c: {} for c in COLLECTIONS}
  with np.load(os.path.join(path, DELTA_FILE)) as z:
    for key in z.files:
      coll, _, name = key.partition("/")
      delta[coll][name] = z[key]
  return delta, metadata


def reconstruct(path: str) -> tuple[dict, dict]:
  """The run's (params, batch_stats) from a delta directory and its base, after checking
  that every base file still has the recorded sha256 (CheckpointError naming one if not)."""
  delta, metadata = load(path)
  ref = metadata["base"]
  params, stats, now = load_base(ref["path"], ref.get("step"), ref["init_from"])
  for name, digest in ref["sha256"].items():
    if now["sha256"].get(name) != digest:
      raise CheckpointError(
        f"{path}: base file {os.path.join(ref['path'], name)} changed since the export "
        f"(sha256 {digest[:12]}... recorded); the delta no longer fits its base"
      )
  return overlay(params, stats, delta)
