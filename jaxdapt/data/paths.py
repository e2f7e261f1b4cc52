"""Where prepared datasets live on disk."""
from __future__ import annotations

import os

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


def resolve_data_dir(data_dir: str | None) -> str:
  return os.path.expanduser(data_dir) if data_dir else default_data_dir()
