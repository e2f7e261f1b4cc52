"""Reading weight files into {name: float32 numpy array}, safely.

safetensors files hold raw tensors and cannot run code. PyTorch files are
pickles; they are read only with torch.load(weights_only=True), whose
restricted unpickler refuses any global that is not a tensor building block,
so a file that would execute code on load raises WeightsError instead.
torch is imported only here and only for such files (the `torch` extra).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import warnings
from typing import Any

import numpy as np

from jaxdapt.weights.errors import WeightsError

SAFETENSORS_EXT = (".safetensors",)
TORCH_EXT = (".pth", ".pt", ".bin", ".ckpt")
# Training checkpoints often nest the state_dict under one of these keys.
_NESTED = ("state_dict", "model", "model_state_dict")


def read_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """All tensors of a safetensors or torch state_dict file, floats as float32.

  Integer tensors (num_batches_tracked) are kept as they are; a `module.`
  prefix (DataParallel) is stripped.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise WeightsError(f"weights file {path!r} does not exist")
  kind = _kind(path)
  tensors = _read_safetensors(path) if kind == "safetensors" else _read_torch(path)
  if not tensors:
    raise WeightsError(f"{path}: holds no tensors")
  if all(k.startswith("module.") for k in tensors):
    tensors = {k[len("module.") :]: v for k, v in tensors.items()}
  return {
    k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
    for k, v in tensors.items()
  }


def _kind(path: str) -> str:
  low = path.lower()
  if low.endswith(SAFETENSORS_EXT):
    return "safetensors"
  if low.endswith(TORCH_EXT):
    return "torch"
  with open(path, "rb") as f:  # unknown extension: sniff zip (torch >= 1.6) or pickle
    head = f.read(8)
  if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
    return "torch"
  if len(head) == 8:
    return "safetensors"
  raise WeightsError(
    f"{path}: not a safetensors or PyTorch file "
    f"(extensions {', '.join(SAFETENSORS_EXT + TORCH_EXT)})"
  )


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  from safetensors import SafetensorError
  from safetensors.numpy import load_file

  try:
    return dict(load_file(path))
  except (SafetensorError, OSError, ValueError, TypeError) as e:
    raise WeightsError(
      f"{path}: not a readable safetensors file ({e}); bfloat16 files "
      f"need converting to float32 first"
    ) from e


def _read_torch(path: str) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError:
    raise WeightsError(
      f"{path}: reading PyTorch files needs torch (pip install 'jaxdapt[torch]'); "
      f"or convert the file to .safetensors where torch is installed"
    ) from None
  try:
    with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses
      warnings.simplefilter("ignore", UserWarning)
      obj = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    raise WeightsError(_refusal(path, str(e))) from None
  except Exception as e:  # corrupt zip, truncated file, ...
    raise WeightsError(
      f"{path}: not a readable PyTorch file ({type(e).__name__}: {str(e)[:300]})"
    ) from None
  return _flatten_state_dict(obj, path, torch)


def _refusal(path: str, message: str) -> str:
  """A short reason from torch's weights-only refusal (its first lines are boilerplate)."""
  lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
  glob = next((ln for ln in lines if "GLOBAL" in ln), None)
  if glob is not None:
    what = re.search(r"GLOBAL (\S+)", glob)
    return (
      f"{path}: refused to load: the file is a pickle that would execute code on load "
      f"(it calls {what.group(1) if what else glob}). Only plain state_dicts of tensors "
      f"are read (torch.load(weights_only=True)); if you trust the file, re-save its "
      f"state_dict with torch.save(model.state_dict(), ...) or as .safetensors."
    )
  reason = next((ln for ln in lines if ln.startswith("Unsupported")), lines[-1] if lines else "")
  return (
    f"{path}: refused to load: not a state_dict that the safe (weights_only) loader can "
    f"read ({reason[:200]}); a file that could execute code on load is never run. "
    f"Re-save it with torch.save(model.state_dict(), ...) or as .safetensors."
  )


def _flatten_state_dict(obj: Any, path: str, torch: Any) -> dict[str, np.ndarray]:
  if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
    for key in _NESTED:
      if isinstance(obj.get(key), dict):
        obj = obj[key]
        break
  if not isinstance(obj, dict):
    raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
  out, bad = {}, []
  for k, v in obj.items():
    if isinstance(v, torch.Tensor):
      v = v.detach()
      out[k] = (v.float() if v.dtype == torch.bfloat16 else v).numpy()
    else:
      bad.append(f"{k} ({type(v).__name__})")
  if bad:
    raise WeightsError(f"{path}: entries that are not tensors: {', '.join(bad[:20])}")
  return out


def file_sha256(path: str) -> str:
  """The hex sha256 of a file, read in 1 MiB blocks (provenance in metadata and cards)."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()
