"""Process setup for running jaxdapt: XLA flags, the host allocator, the compilation cache.

Importing jaxdapt changes nothing in the process. The `jaxdapt` command calls `setup()`
first thing, before JAX starts a backend; a library user who wants the same settings
(they make the CPU step faster, see xla_defaults.py and host_malloc.py) calls it too:

    import jaxdapt.runtime
    jaxdapt.runtime.setup()      # before the first JAX computation
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from jaxdapt.runtime import host_malloc, xla_defaults


def setup(environ: MutableMapping[str, str] = os.environ) -> None:
  """Adds jaxdapt's default XLA flags to environ['XLA_FLAGS'] (a flag the user set wins)
  and applies the glibc malloc settings (unless the environment opts out)."""
  xla_defaults.apply(environ)
  host_malloc.apply(environ)
