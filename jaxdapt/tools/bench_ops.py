"""Where the CPU DANN step loses to PyTorch: its layers timed one by one, JAX vs PyTorch.

  jaxdapt bench-ops [--batch 128] [--repeats 30]

The digits DANN network (`dann_digits` on 32x32x3, batch = source + target) is
two 5x5 convs, each followed by BatchNorm (batch statistics) -> 2x2 max-pool ->
ReLU. Each conv is timed forward, input gradient (dgrad) and weight gradient
(wgrad), with XLA's convolution and with jaxdapt's CPU kernel (kernels/cpu_conv.py,
config model.conv_kernel; blank if it does not build); each BN-pool-ReLU block
forward and forward + backward. JAX runs each piece as its own jitted program
(NHWC, as the model); PyTorch runs the same shapes channels-last with
`torch.set_num_threads` = its default. The sum of a column is not the step time
(the step fuses and overlaps), but the ratios say which kernels are the gap.
Needs torch.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdapt.errors import ConfigError, JaxdaptError
from jaxdapt.kernels import cpu_conv
from jaxdapt.models.layers import BN_EPSILON, max_pool, normalize_by_batch
from jaxdapt.tools import cli

CONVS = {"conv1": (32, 3, 32), "conv2": (14, 32, 48)}  # input size, in, out channels
BLOCKS = {"block1": (28, 32), "block2": (10, 48)}  # conv output size, channels
KERNEL = 5


def best_ms(fn: Callable[[], object], repeats: int, sync: Callable[[object], object]) -> float:
  """Best of 3 timings of `repeats` calls (after warm-up), in ms per call."""
  for _ in range(3):
    sync(fn())
  best = float("inf")
  for _ in range(3):
    t0 = time.perf_counter()
    for _ in range(repeats):
      out = fn()
    sync(out)
    best = min(best, 1000 * (time.perf_counter() - t0) / repeats)
  return best


def _bn_pool_relu(x, scale, bias):
  """The model's own block code: BatchNorm by batch statistics (its custom VJP),
  the strided-slice max-pool, ReLU."""
  y = normalize_by_batch(x, scale, bias, BN_EPSILON)[0]
  return jax.nn.relu(max_pool(y, 2))


Piece = tuple[str, float | None, Callable, tuple, Callable, Callable | None]


def _conv_pieces(conv: Callable) -> tuple[Callable, Callable, Callable]:
  """forward, dgrad, wgrad of `conv(x, w)` as functions of (x, w, g)."""
  return (
    lambda x, w, g: conv(x, w),
    lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0],
    lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0],
  )


def pieces(batch: int, seed: int = 0) -> list[Piece]:
  """(name, GFLOP, JAX function, its arguments, PyTorch thunk, the JAX function with
  jaxdapt's conv kernel or None) per timed piece; the JAX functions applied to the
  arguments and the thunk compute the same array (NHWC vs channels-last NCHW; the blocks
  return the input gradient). The conv tensors do not require grad and the forward block
  runs under no_grad, so no thunk records a graph it does not use."""
  import torch
  import torch.nn.functional as F

  rng = np.random.default_rng(seed)
  try:
    cpu_conv.ensure_registered()
    direct = True
  except cpu_conv.KernelBuildError:
    direct = False
  to_torch = lambda a: (
    torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
  )
  out = []
  for name, (size, cin, cout) in CONVS.items():
    o = size - KERNEL + 1
    x = jnp.asarray(rng.standard_normal((batch, size, size, cin), np.float32))
    w = jnp.asarray(0.1 * rng.standard_normal((KERNEL, KERNEL, cin, cout), np.float32))
    g = jnp.asarray(rng.standard_normal((batch, o, o, cout), np.float32))
    xt, gt = to_torch(x), to_torch(g)
    wt = (
      torch.from_numpy(np.array(w))
      .permute(3, 2, 0, 1)
      .contiguous(memory_format=torch.channels_last)
    )
    gflop = 2 * batch * o * o * KERNEL * KERNEL * cin * cout / 1e9
    torch_fns = (
      lambda xt=xt, wt=wt: F.conv2d(xt, wt),
      lambda xt=xt, wt=wt, gt=gt: torch.nn.grad.conv2d_input(xt.shape, wt, gt),
      lambda xt=xt, wt=wt, gt=gt: torch.nn.grad.conv2d_weight(xt, wt.shape, gt),
    )
    direct_fns = _conv_pieces(cpu_conv.conv_valid) if direct else (None,) * 3
    # The input gradient of conv1 (RGB input) is XLA's either way; the model never needs it.
    if cin % 16:
      direct_fns = (direct_fns[0], None, direct_fns[2])
    out += [
      (f"{name} {part}", gflop, xla_fn, (x, w, g), torch_fn, direct_fn)
      for part, xla_fn, torch_fn, direct_fn in zip(
        ("forward", "dgrad", "wgrad"), _conv_pieces(cpu_conv.xla_conv_valid), torch_fns, direct_fns
      )
    ]
  for name, (size, ch) in BLOCKS.items():
    x = jnp.asarray(rng.standard_normal((batch, size, size, ch), np.float32))
    g = jnp.asarray(rng.standard_normal((batch, size // 2, size // 2, ch), np.float32))
    scale, bias = jnp.ones((ch,)), jnp.zeros((ch,))
    bn = torch.nn.BatchNorm2d(ch)
    xt, gt = to_torch(x).requires_grad_(), to_torch(g)

    def torch_forward(bn=bn, xt=xt):
      with torch.no_grad():
        return F.relu(F.max_pool2d(bn(xt), 2))

    def torch_backward(bn=bn, xt=xt, gt=gt):
      xt.grad = None
      F.relu(F.max_pool2d(bn(xt), 2)).backward(gt)
      return xt.grad

    out += [
      (f"{name} BN-pool-ReLU forward", None, _bn_pool_relu, (x, scale, bias), torch_forward, None),
      (
        f"{name} BN-pool-ReLU fwd+bwd",
        None,
        lambda x, s, b, g: jax.vjp(_bn_pool_relu, x, s, b)[1](g)[0],
        (x, scale, bias, g),
        torch_backward,
        None,
      ),
    ]
  return out


def measure(batch: int, repeats: int) -> list[dict]:
  rows = []
  timed = lambda fn, args: best_ms(lambda: fn(*args), repeats, jax.block_until_ready)
  for name, gflop, jax_fn, args, torch_fn, direct_fn in pieces(batch):
    rows.append(
      {
        "op": name,
        "gflop": gflop,
        "torch_ms": best_ms(torch_fn, repeats, lambda out: out),
        "jax_ms": timed(jax.jit(jax_fn), args),
        "direct_ms": None if direct_fn is None else timed(jax.jit(direct_fn), args),
      }
    )
  return rows


def table(rows: Sequence[dict]) -> str:
  """Markdown; the ratio is the time of the faster JAX version over PyTorch's."""
  lines = [
    "| op | GFLOP | JAX (XLA) ms | JAX (jaxdapt kernel) ms | PyTorch ms | JAX / PyTorch time |",
    "|---|---|---|---|---|---|",
  ]
  for r in rows:
    gflop = "" if r["gflop"] is None else f"{r['gflop']:.2f}"
    direct = r.get("direct_ms")
    best = r["jax_ms"] if direct is None else min(r["jax_ms"], direct)
    lines.append(
      f"| {r['op']} | {gflop} | {r['jax_ms']:.1f} | "
      f"{'' if direct is None else f'{direct:.1f}'} | {r['torch_ms']:.1f} | "
      f"{best / r['torch_ms']:.1f}× |"
    )
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli.parser("bench-ops", __doc__)
  parser.add_argument("--batch", type=int, default=128, help="source + target images")
  parser.add_argument("--repeats", type=int, default=30)
  args = parser.parse_args(argv)
  if args.batch < 1 or args.repeats < 1:
    raise ConfigError(f"--batch {args.batch} --repeats {args.repeats}: both must be >= 1")
  if importlib.util.find_spec("torch") is None:
    raise JaxdaptError("bench-ops times PyTorch too: install torch (pip install 'jaxdapt[torch]')")
  import torch

  rows = measure(args.batch, args.repeats)
  print(
    f"batch {args.batch}, jax {jax.__version__} on {jax.devices()[0].device_kind}, "
    f"torch {torch.__version__} with {torch.get_num_threads()} threads"
  )
  print(table(rows))
  return 0
