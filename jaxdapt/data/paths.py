"""Where prepared datasets live on disk."""

from __future__ import annotations

import os

from jaxdapt.errors import ConfigError

ENV_VAR = "JAXDAPT_DATA_DIR"


def default_data_dir() -> str:
  """`$JAXDAPT_DATA_DIR`, else ~/.cache/jaxdapt/tensorflow_datasets.

  Separate from TFDS's own default so generated project domains never mix
  with (or shadow) datasets a user prepared with TensorFlow.
  """
  env = os.environ.get(ENV_VAR)
  if env:
    return os.path.expanduser(env)
  return os.path.join(os.path.expanduser("~"), ".cache", "jaxdapt", "tensorflow_datasets")


def _origin(data_dir: str | None) -> str:
  if data_dir:
    return "data.data_dir"
  return f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "the default data dir"


def resolve_data_dir(data_dir: str | None) -> str:
  """The data folder (`data_dir`, else the default); one that is a file is a ConfigError."""
  path = os.path.expanduser(data_dir) if data_dir else default_data_dir()
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"{_origin(data_dir)}: {path} is a file, not a folder")
  return path


def check_writable(path: str, what: str) -> None:
  """`path` can be created or written (for generating a domain into it)."""
  probe = path
  while not os.path.exists(probe):
    probe = os.path.dirname(probe.rstrip(os.sep)) or "."
  if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
    raise ConfigError(
      f"{what}: cannot write {path} ({probe} is not a writable folder); "
      f"set ${ENV_VAR} or data.data_dir to a folder you can write"
    )
