"""XLA flags jaxdapt sets by default, before JAX starts its backends.

XLA reads `XLA_FLAGS` once, when the first backend starts, so these are added
to the environment by `jaxdapt.runtime.setup()` (the command calls it first); a flag
the user already set
(same name, any value) is left as they set it. Each flag is tied to the jaxlib
versions it was measured on: XLA aborts the process on a flag it does not know,
so on other versions nothing is added.

- `--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`: jaxlib 0.10
  hands every convolution to YNNPACK by default, which on the digits network ran
  6-8× slower than XLA's own (Eigen) convolutions (`jaxdapt bench-ops`,
  README "Benchmark"); the '-' keeps YNNPACK for the reductions and elementwise
  ops, where it is faster. CPU only: GPU and TPU compilers ignore it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from importlib import metadata

# (flag, jaxlib version prefixes it is known to exist in)
DEFAULT_FLAGS = (("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution", ("0.10.",)),)


def _jaxlib_version() -> str:
  try:
    return metadata.version("jaxlib")
  except metadata.PackageNotFoundError:
    return ""


def with_defaults(xla_flags: str, jaxlib_version: str) -> str:
  """`xla_flags` plus each default flag that applies to `jaxlib_version` and whose
  name `xla_flags` does not already set."""
  flags = xla_flags.split()
  names = {f.split("=", 1)[0] for f in flags}
  for flag, versions in DEFAULT_FLAGS:
    if flag.split("=", 1)[0] not in names and jaxlib_version.startswith(versions):
      flags.append(flag)
  return " ".join(flags)


def apply(environ: MutableMapping[str, str] = os.environ) -> None:
  """Adds the defaults to environ['XLA_FLAGS'] (a no-op once JAX has started a backend)."""
  new = with_defaults(environ.get("XLA_FLAGS", ""), _jaxlib_version())
  if new:
    environ["XLA_FLAGS"] = new
