"""Direct float32 convolutions on CPU (cpu_conv.cc) behind `lax.conv_general_dilated`'s
signature, with their own gradients; config `model.conv_kernel`.

Why: XLA:CPU ran the digits nets' 5x5 convolutions at about half of PyTorch's speed, and
their input gradient over the zero-padded gradient (twice the multiply-adds); no XLA flag
or im2col rewrite closed it (README "Benchmark"). The kernels cover the convolutions of
`dann_digits`: float32, square kernel, stride 1, no padding or dilation, one group, and
16/32/48/64 output channels (the input gradient also needs 16-64 input channels, else it
is XLA's). Every other convolution, and every call off CPU, is XLA's.

The C++ source is compiled on first use with the host's C++ compiler ($CXX, else c++)
for the host CPU (-march=native) into $JAXDAPT_KERNEL_CACHE (default
~/.cache/jaxdapt/kernels; it must be the user's own and not group- or world-writable),
keyed by source, compiler, jaxlib and CPU, and loaded through the XLA FFI. Results are
deterministic (fixed work split, partial sums added in order) and equal XLA's up to
float32 summation order.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxdapt.errors import ConfigError
from jaxdapt.kernels import xla_conv

SOURCE = Path(__file__).with_name("cpu_conv.cc")
KERNELS = ("auto", "xla", "direct")  # config model.conv_kernel
_TARGETS = ("forward", "input_grad", "weight_grad")
_LANES = 16
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_status: dict[str, str | None] = {}  # 'error': None once registered, else why not


class KernelBuildError(RuntimeError):
  """The C++ kernel could not be compiled or loaded (message: the compiler's output)."""


def cache_dir() -> Path:
  if os.environ.get("JAXDAPT_KERNEL_CACHE"):
    return Path(os.environ["JAXDAPT_KERNEL_CACHE"])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base) / "jaxdapt" / "kernels"


def _not_private(path: Path) -> str | None:
  """Why another user could have written `path` (the cache folder or a library in it), or
  None: loading a library runs its code, so it must be this user's and not group- or
  world-writable (the rule ssh applies to its keys)."""
  st = path.stat()
  uid = os.getuid() if hasattr(os, "getuid") else st.st_uid
  if st.st_uid != uid:
    return f"{path} belongs to uid {st.st_uid}, not to this user (uid {uid})"
  if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
    return f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
  return None


def _cpu_identity() -> str:
  """What -march=native compiles for: the CPU's model and feature flags."""
  try:
    with open("/proc/cpuinfo") as f:
      lines = [l for l in f if l.startswith(("model name", "flags", "Features", "CPU part"))]
    return "".join(sorted(set(lines)))
  except OSError:
    return f"{platform.machine()} {platform.processor()}"


def _compile(compiler: str, source: Path, target: Path, march: bool) -> subprocess.CompletedProcess:
  cmd = [
    compiler,
    "-O3",
    "-std=c++20",
    "-shared",
    "-fPIC",
    "-fno-math-errno",
    "-w",
    *(["-march=native"] if march else []),
    f"-I{jax.ffi.include_dir()}",
    str(source),
    "-o",
    str(target),
  ]
  return subprocess.run(cmd, capture_output=True, text=True)


def compiler() -> str:
  """The C++ compiler the kernels are built with: $CXX, else c++."""
  return os.environ.get("CXX", "c++")


def can_build() -> bool:
  """Whether that compiler is on PATH (tests: the kernels must then build and run)."""
  return shutil.which(compiler()) is not None


def build(source: Path = SOURCE) -> Path:
  """The compiled shared library for this machine, compiled if not cached. Concurrent
  processes each compile to a temporary file and rename it into place."""
  cxx = compiler()
  if not can_build():
    raise KernelBuildError(f"no C++ compiler {cxx!r} on PATH (set $CXX)")
  version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
  key = hashlib.sha256(
    "\0".join([source.read_text(), version, metadata.version("jaxlib"), _cpu_identity()]).encode()
  ).hexdigest()[:20]
  target = cache_dir() / f"cpu_conv-{key}.so"
  target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
  for path in (target.parent, target) if target.exists() else (target.parent,):
    if why := _not_private(path):
      raise KernelBuildError(
        f"not loading kernels from {target.parent}: {why}; make it "
        f"yours and private (chmod go-w) or set $JAXDAPT_KERNEL_CACHE"
      )
  if target.exists():
    return target
  _log.info("compiling jaxdapt's CPU convolution kernels into %s (once per machine)", target)
  fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
  os.close(fd)
  try:
    result = _compile(cxx, source, Path(tmp), march=True)
    if result.returncode != 0:  # e.g. a compiler without -march=native for this CPU
      result = _compile(cxx, source, Path(tmp), march=False)
    if result.returncode != 0:
      raise KernelBuildError(f"{cxx} failed on {source.name}:\n{result.stderr[-2000:]}")
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return target


def ensure_registered() -> None:
  """Builds, loads and registers the FFI targets once per process; raises
  KernelBuildError (each later call too) if that is impossible."""
  with _lock:
    if "error" not in _status:
      try:
        lib = ctypes.CDLL(str(build()))
        for name in _TARGETS:
          jax.ffi.register_ffi_target(
            f"jaxdapt_conv_{name}",
            jax.ffi.pycapsule(getattr(lib, f"jaxdapt_conv_{name}")),
            platform="cpu",
          )
        _status["error"] = None
      except (KernelBuildError, OSError, AttributeError) as e:
        _status["error"] = f"{type(e).__name__}: {e}"
    if _status["error"] is not None:
      raise KernelBuildError(_status["error"])


def resolve(name: str, platform_name: str, num_devices: int) -> str:
  """config model.conv_kernel -> 'direct' | 'xla' for a mesh of `num_devices` devices
  of `platform_name`. 'auto' is 'direct' on one CPU device when the kernel builds (else
  XLA, with a warning); 'direct' demands both. More than one device stays on XLA: the
  FFI call has no partitioning rule, so SPMD would gather the batch onto every device."""
  if name not in KERNELS:
    raise ConfigError(f"model.conv_kernel: must be one of {', '.join(KERNELS)}; got {name!r}")
  if name == "xla":
    return "xla"
  if platform_name != "cpu" or num_devices != 1:
    if name == "direct":
      raise ConfigError(
        f"model.conv_kernel: 'direct' runs on one CPU device; this run has "
        f"{num_devices} {platform_name} device(s) (use 'auto' or 'xla')"
      )
    return "xla"
  try:
    ensure_registered()
  except KernelBuildError as e:
    if name == "direct":
      raise ConfigError(
        f"model.conv_kernel: 'direct' needs the CPU kernel, which did not build: {e}"
      ) from None
    _log.warning(
      "model.conv_kernel='auto': using XLA's convolutions; the CPU kernel did not build: %s",
      str(e).splitlines()[0],
    )
    return "xla"
  return "direct"


_NHWC = ("NHWC", "HWIO", "NHWC")


def eligible(
  lhs: Any,
  rhs: Any,
  window_strides: Sequence[int],
  padding: Any,
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
) -> bool:
  """Whether the direct kernel computes this `lax.conv_general_dilated` call."""
  if not (
    xla_conv.plain_nhwc(
      lhs,
      rhs,
      lhs_dilation,
      rhs_dilation,
      dimension_numbers,
      feature_group_count,
      batch_group_count,
    )
    and lhs.dtype == jnp.float32
    and rhs.dtype == jnp.float32
  ):
    return False
  valid = padding == "VALID" or (
    not isinstance(padding, str) and all(tuple(p) == (0, 0) for p in padding)
  )
  kh, kw, _, cout = rhs.shape
  return (
    valid
    and tuple(window_strides) == (1, 1)
    and kh == kw
    and kh <= min(lhs.shape[1], lhs.shape[2])
    and cout % _LANES == 0
    and _LANES <= cout <= 4 * _LANES
  )


def _call(target: str, shape: tuple[int, ...], *args: jax.Array) -> jax.Array:
  ensure_registered()
  return jax.ffi.ffi_call(
    f"jaxdapt_conv_{target}", jax.ShapeDtypeStruct(shape, jnp.float32), vmap_method="sequential"
  )(*args)


def xla_conv_valid(x: jax.Array, w: jax.Array) -> jax.Array:
  """XLA's convolution of what `conv_valid` computes."""
  return lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=_NHWC)


@jax.custom_vjp
def conv_valid(x: jax.Array, w: jax.Array) -> jax.Array:
  """NHWC `x` [N,H,W,C] convolved with HWIO `w` [k,k,C,O]: stride 1, no padding."""
  n, h, wd, _ = x.shape
  k, o = w.shape[0], w.shape[3]
  return _call("forward", (n, h - k + 1, wd - k + 1, o), x, w)


def _conv_fwd(x, w):
  return conv_valid(x, w), (x, w)


def _conv_bwd(residuals, g):
  x, w = residuals
  cin = x.shape[-1]
  if cin % _LANES == 0 and _LANES <= cin <= 4 * _LANES:
    dx = _call("input_grad", x.shape, g, jnp.transpose(w, (0, 1, 3, 2)))
  else:  # e.g. RGB input; unused (and removed by XLA) where x is the images
    dx = jax.vjp(lambda x: xla_conv_valid(x, w), x)[1](g)[0]
  dw = _call("weight_grad", w.shape, x, g)
  return dx, dw


conv_valid.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: Any,
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
  precision: Any = None,
  preferred_element_type: Any = None,
) -> jax.Array:
  """`lax.conv_general_dilated` that runs `eligible` calls through the direct kernel
  (flax nn.Conv's `conv_general_dilated` hook; float32 convs are exact on CPU whatever
  `precision` says); the rest through xla_conv (XLA's, minus one CPU pathology)."""
  if eligible(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    batch_group_count,
  ) and (preferred_element_type in (None, jnp.float32)):
    return conv_valid(lhs, rhs)
  return xla_conv.conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    batch_group_count,
    precision,
    preferred_element_type,
  )
