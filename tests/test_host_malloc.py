"""jaxdapt's glibc malloc settings: applied on import unless the user chose their own,
and in effect: a large freed buffer stays in the process for the next allocation
instead of going back to the system (glibc's default munmaps it at once)."""

import os
import platform
import subprocess
import sys

import pytest

from jaxdapt.runtime import host_malloc

# memory the process gave back to the system on free.
_PROBE = """
import sys
if sys.argv[1] == "import": import jaxdapt.runtime; jaxdapt.runtime.setup()
import numpy as np
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 / 1e6
before = rss()
block = np.ones(50_000_000, np.float32)  # 200 MB, touched
peak = rss()
del block
print(round(peak - rss()))
"""


def _returned_mb(how: str, **env: str) -> int:
  base = {
    k: v
    for k, v in os.environ.items()
    if k not in host_malloc.USER_VARIABLES + (host_malloc.OPT_OUT, "GLIBC_TUNABLES")
  }
  base.update(JAX_PLATFORMS="cpu", **env)
  out = subprocess.run(
    [sys.executable, "-c", _PROBE, how], env=base, check=True, capture_output=True, text=True
  ).stdout.split()
  return int(out[-1])


@pytest.mark.skipif(
  platform.libc_ver()[0] != "glibc" or not os.path.exists("/proc/self/statm"),
  reason="glibc on Linux only",
)
def test_importing_jaxdapt_keeps_freed_buffers_for_reuse():
  assert _returned_mb("plain") > 150  # glibc's default: munmap on free
  assert _returned_mb("import") < 20  # jaxdapt's settings: kept in the heap
  assert _returned_mb("import", **{host_malloc.OPT_OUT: "default"}) > 150
  assert _returned_mb("import", MALLOC_MMAP_THRESHOLD_="65536") > 150  # the user's own


def test_why_not():
  assert host_malloc.why_not({}, "glibc") is None
  assert "musl" in host_malloc.why_not({}, "musl")
  assert host_malloc.why_not({host_malloc.OPT_OUT: "default"}, "glibc")
  assert "MALLOC_TRIM_THRESHOLD_" in host_malloc.why_not({"MALLOC_TRIM_THRESHOLD_": "1"}, "glibc")
  assert "GLIBC_TUNABLES" in host_malloc.why_not(
    {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1"}, "glibc"
  )
  assert host_malloc.why_not({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX"}, "glibc") is None
