"""Persistent XLA compilation cache: a rerun, a resumed job or another seed of the
same config loads its compiled train/eval steps from disk instead of recompiling.

Set by `train.compilation_cache_dir` ('auto': ~/.cache/jaxdapt/xla_cache, '': off)
and applied by the CLI before anything compiles.
"""

from __future__ import annotations

import os

import jax

from jaxdapt.errors import ConfigError

AUTO = "auto"
# Only programs that took this long to compile are written: the train and eval
# steps are, the many tiny helper jits (init, tree adds) are not worth a file each.
MIN_COMPILE_TIME_S = 0.5


def default_dir() -> str:
  return os.path.join(os.path.expanduser("~"), ".cache", "jaxdapt", "xla_cache")


def enable(path: str, *, min_compile_time_s: float = MIN_COMPILE_TIME_S) -> str | None:
  """Points JAX's persistent cache at `path`; returns the directory used (None: off).

  'auto' keeps a directory the user already chose through $JAX_COMPILATION_CACHE_DIR.
  """
  if not isinstance(path, str):
    raise ConfigError(f"train.compilation_cache_dir: must be a path, 'auto' or '', got {path!r}")
  if not path:
    return None
  if path == AUTO:
    path = jax.config.jax_compilation_cache_dir or default_dir()
  path = os.path.expanduser(path)
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_s)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path
