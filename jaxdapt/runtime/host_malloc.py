"""glibc malloc settings the jaxdapt command applies at start (runtime.setup).

They make XLA:CPU's freed buffers stay in the heap for reuse.

By default glibc serves every allocation above a (dynamic, at most 32 MiB)
threshold with a fresh `mmap` and gives it back with `munmap` when freed, and
trims the heap top above 128 KiB. XLA:CPU allocates each step's activations
anew, so every step page-faults all of them in again: on the digits DANN step
(2-core AMD EPYC VM) an elementwise op on a 41 MB array took 17 ms instead of
3.4 ms, and the whole step 62-70 ms instead of 43-52 ms (README "Benchmark"). With a
1 GiB mmap threshold and no trimming below 1 GiB, freed buffers stay in the
heap and the next step reuses them. The cost: the process keeps its peak heap
instead of returning it to the system.

The settings are global to the process: PyTorch in the same process runs under
them too, so `jaxdapt.bench` times both under the same settings. They are applied
through `mallopt` by runtime.setup(), which is as good as the MALLOC_* variables but
needs nothing set before Python starts. Left alone: a process whose environment
already sets glibc's malloc variables (MALLOC_MMAP_THRESHOLD_,
MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_, or glibc.malloc tunables in
GLIBC_TUNABLES), JAXDAPT_HOST_MALLOC=default, and any C library but glibc.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping

# mallopt parameter numbers (glibc malloc.h) and the values set.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = ((M_MMAP_THRESHOLD, 1 << 30), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 1 << 30))
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
OPT_OUT = "JAXDAPT_HOST_MALLOC"


def why_not(environ: Mapping[str, str], libc: str) -> str | None:
  """Why the settings are not applied in this process (None: they are)."""
  if libc != "glibc":
    return f"C library is {libc or 'unknown'}, not glibc"
  if environ.get(OPT_OUT, "") == "default":
    return f"{OPT_OUT}=default"
  user = [v for v in USER_VARIABLES if v in environ]
  if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
    user.append("GLIBC_TUNABLES")
  if user:
    return f"the environment sets {', '.join(user)}"
  return None


def apply(environ: Mapping[str, str] = os.environ) -> bool:
  """Applies SETTINGS unless `why_not` says otherwise; True if all were accepted."""
  if why_not(environ, platform.libc_ver()[0]) is not None:
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return all([mallopt(param, value) == 1 for param, value in SETTINGS])
