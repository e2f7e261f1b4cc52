"""LoRA (Hu et al., ICLR 2022) as a pure transform of a Linen model's parameter tree.

A targeted kernel W keeps its value and stays frozen; two new factors beside it train, and
the model computes with W + (alpha / r) · A·B. Nothing in a model's code changes: the
factors are leaves of the model's own params tree, next to the kernel they adapt,

  .../conv1/kernel             [kh, kw, in, out]  (frozen)
  .../conv1/kernel_lora_a      [kh, kw, in, r]    uniform ±1/sqrt(kh·kw·in)
  .../conv1/kernel_lora_b      [r, out]           zeros
  .../conv1/kernel_lora_scale  []                 alpha / r (frozen)

so paths keep the module structure and the optimizer's rule lists, LLRD and regexes see
them like any parameter, and `merged(params)` folds them into plain kernels where the
model is applied (step.apply_model and the trainer's other model.apply call sites).

Shapes: A has the kernel's shape with the output axis replaced by r, B is [r, out], and
A·B contracts the r axis: a Dense kernel [in, out] gets A [in, r]; a conv kernel
[kh, kw, in, out] gets A [kh, kw, in, r] and B [r, out], i.e. A is a kh×kw conv to r
channels and B a 1×1 conv, the factorisation of the PEFT library's Conv2d LoRA (A is stored
unflattened so it reads as a conv kernel). ViT attention is timm's fused `qkv` Dense
[d, 3d]: one factor pair adapts q, k and v together (PEFT's `target_modules=['qkv']` on
timm does the same); `attn/proj` is the output projection. Initialisation is PEFT's: A
kaiming-uniform with a = sqrt(5), i.e. uniform ±1/sqrt(fan_in), B zero, so the model is
bitwise the base model at step 0.

In training, the 2-D (Dense) factors stay unmerged in the tree and `dense_interceptor`
computes each such nn.Dense call itself (Flax's intercept_methods: the model's code still
does not change), for two reasons. Speed: `dense_matmul` merges the kernel for its one
forward matmul but takes the factors' gradients through the rank r, where autodiff of the
merged kernel would form the full [in, out] kernel gradient first, as full fine-tuning
does. Dropout (peft.lora_dropout = p > 0) acts on the LoRA path's input, as in the paper
and PEFT: y = x·W + b + scale · dropout_p(x)·A·B, a delta that cannot be folded into W.
Conv kernels' deltas are merged (no dropout on them; their backward forms the kernel
gradient). Evaluation always merges.

The scale alpha / r is a leaf so that a checkpoint is self-describing: `merged` needs
nothing but the tree, and loading a LoRA run elsewhere (init_from) folds its factors in
without reading its config. The factors are float32 (like every parameter); the delta is
computed at HIGHEST matmul precision (no TF32 rounding on GPU), then the merged kernel
enters the module, which casts it to the compute dtype as it casts any kernel.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdapt.errors import ConfigError
from jaxdapt.tree import named_leaves

PyTree = Any
KERNEL = "kernel"
A, B, SCALE = "kernel_lora_a", "kernel_lora_b", "kernel_lora_scale"
LEAVES = (A, B, SCALE)
# Over '/'-joined paths (with or without the 'model/' prefix): the trainable factors, and
# every LoRA leaf (what model.init_from never supplies).
FACTORS = r"(?:.*/)?kernel_lora_[ab]"
ANY_LEAF = r"(?:.*/)?kernel_lora_(?:a|b|scale)"


def is_target(name: str, leaf: Any) -> bool:
  """A leaf LoRA can adapt: a kernel with an input and an output axis (Dense, Conv)."""
  return name.rsplit("/", 1)[-1] == KERNEL and np.ndim(leaf) >= 2


def match_targets(params: PyTree, targets: Sequence[str], prefix: str = "model") -> dict:
  """{target regex: [names of the kernels it fully matches]} over `params` (concrete or
  abstract), names as the optimizer sees them: prefix + '/' + path."""
  compiled = [(t, re.compile(t)) for t in targets]
  out: dict[str, list[str]] = {t: [] for t in targets}
  for name, leaf in named_leaves(params):
    full = f"{prefix}/{name}" if prefix else name
    if is_target(name, leaf):
      for t, regex in compiled:
        if regex.fullmatch(full):
          out[t].append(full)
  return out


def check_targets(
  params: PyTree, targets: Sequence[str], trained_in_full: Sequence[str] = (), prefix="model"
) -> None:
  """ConfigError (one line, naming the regex) for a target that matches no kernel of
  `params`, or one that matches a kernel that trains in full anyway (`trained_in_full`:
  regexes over paths without the prefix, e.g. the head): LoRA there would only add a
  redundant delta, and the head is also applied unmerged by MME's `classify`."""
  for target, names in match_targets(params, targets, prefix).items():
    if not names:
      raise ConfigError(
        f"peft.lora_targets: {target!r} matches no Dense or Conv kernel of the model "
        f"(names such as '{prefix}/backbone/conv1/kernel'; `jaxdapt optim` lists them)"
      )
    for name in names:
      rel = name[len(prefix) + 1 :] if prefix else name
      if any(re.fullmatch(p, rel) for p in trained_in_full):
        raise ConfigError(
          f"peft.lora_targets: {target!r} matches {name}, which trains in full under "
          f"peft.method='lora' (head, bottleneck, model.dont_load); target backbone kernels"
        )


def _uniform_factors(rng: jax.Array, names: Sequence[str], shapes: Sequence[tuple], dtype):
  """One A per kernel, uniform in ±1/sqrt(fan_in), from a key folded from its name (a
  factor's init does not depend on which other kernels are targeted). One vmapped draw
  of the largest size, sliced per kernel: XLA compiles one threefry, where a draw per
  kernel cost ~0.6 s of compile each on CPU (12.6 s for a ResNet-18's 21 kernels)."""
  seeds = jnp.asarray([zlib.crc32(n.encode()) & 0x7FFFFFFF for n in names], jnp.uint32)
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, seeds)
  sizes = [math.prod(shape) for shape in shapes]
  draws = jax.vmap(lambda k: jax.random.uniform(k, (max(sizes),), dtype, -1.0, 1.0))(keys)
  return [
    draws[i, :size].reshape(shape) / math.sqrt(math.prod(shape[:-1]))
    for i, (size, shape) in enumerate(zip(sizes, shapes))
  ]


def add(
  params: PyTree,
  targets: Sequence[str],
  rank: int,
  alpha: float,
  rng: jax.Array,
  prefix: str = "model",
) -> PyTree:
  """`params` with LoRA factors (and their scale) next to every kernel a target matches.

  Works under tracing (jax.eval_shape). Kernels matched by no target are untouched; a
  target matching nothing is not an error here (check_targets is)."""
  names = sorted({n for ns in match_targets(params, targets, prefix).values() for n in ns})
  if not names:
    return params
  kernels = dict(named_leaves({prefix: params} if prefix else params))
  a_shapes = [(*kernels[n].shape[:-1], rank) for n in names]
  factors = dict(zip(names, _uniform_factors(rng, names, a_shapes, jnp.float32)))

  def visit(node: Mapping, path: tuple[str, ...]) -> dict:
    out = {k: visit(v, (*path, k)) if isinstance(v, Mapping) else v for k, v in node.items()}
    name = "/".join((*path, KERNEL))
    if KERNEL in node and name in factors:
      kernel = node[KERNEL]
      out[A] = factors[name].astype(kernel.dtype)
      out[B] = jnp.zeros((rank, kernel.shape[-1]), kernel.dtype)
      out[SCALE] = jnp.asarray(alpha / rank, kernel.dtype)
    return out

  return visit(params, (prefix,) if prefix else ())


def delta(a: jax.Array, b: jax.Array, scale: jax.Array) -> jax.Array:
  """scale · A·B, contracting A's last axis with B's first: the kernel's shape."""
  ab = jnp.tensordot(a, b, axes=1, precision=jax.lax.Precision.HIGHEST)
  return scale * ab


def merged(params: PyTree, *, keep_dense: bool = False) -> PyTree:
  """`params` with every LoRA triple folded into its kernel (W + scale·A·B) and removed.

  Applied wherever the model is applied to trainer params; differentiable (the factors'
  gradients flow through the delta). Without LoRA leaves it returns `params` itself, the
  same object: no copy, no array operation, so a non-LoRA model is unaffected.
  `keep_dense`: leave the triples of 2-D (Dense) kernels in place, for
  dense_interceptor."""
  if not isinstance(params, Mapping):
    return params
  out, changed = {}, False
  for k, v in params.items():
    if isinstance(v, Mapping):
      nv = merged(v, keep_dense=keep_dense)
      changed |= nv is not v
      out[k] = nv
    else:
      out[k] = v
  if A in params and not (keep_dense and np.ndim(params[KERNEL]) == 2):
    kernel = params[KERNEL]
    out[KERNEL] = (kernel + delta(params[A], params[B], params[SCALE])).astype(kernel.dtype)
    for leaf in LEAVES:
      del out[leaf]
    changed = True
  if not changed:
    return params
  return type(params)(out) if not isinstance(params, dict) else out


def dense_factor_count(params: PyTree) -> int:
  """How many 2-D (Dense) kernels of `params` carry LoRA factors."""
  return sum(
    1 for name, leaf in named_leaves(params) if name.rsplit("/", 1)[-1] == A and np.ndim(leaf) == 2
  )


def _rows(x: jax.Array) -> jax.Array:
  """[..., d] as [rows, d]: the contractions over every leading axis."""
  return x.reshape(-1, x.shape[-1])


@jax.custom_vjp
def dense_matmul(x: jax.Array, kernel: jax.Array, a: jax.Array, b: jax.Array, scale: jax.Array):
  """x·(W + scale·A·B) in x's dtype, the kernel merged as `merged` merges it (float32 sum,
  then cast), with a backward that never forms the [in, out] gradient of the merged
  kernel: autodiff of the merged product computes dW' = xᵀg (as large as the forward
  matmul) and only then projects it onto A and B, which makes a LoRA step cost what full
  fine-tuning's does. Here dA = scale·xᵀ(g·Bᵀ) and dB = scale·(x·A)ᵀg go through the rank
  r, so the backward is dx = g·W'ᵀ plus thin products. The kernel's and the scale's
  cotangents are returned as the chain rule gives them; they are frozen, nothing reads
  them, and XLA removes their computation."""
  return _dense_fwd(x, kernel, a, b, scale)[0]


def _merged_kernel(kernel, a, b, scale, dtype):
  return (kernel + delta(a, b, scale)).astype(kernel.dtype).astype(dtype)


def _dense_fwd(x, kernel, a, b, scale):
  w = _merged_kernel(kernel, a, b, scale, x.dtype)
  return x @ w, (x, w, kernel, a, b, scale)


def _dense_bwd(residuals, g):
  x, w, kernel, a, b, scale = residuals
  g = g.astype(x.dtype)
  dx = g @ w.T
  x2, g2 = _rows(x), _rows(g)
  f32 = jnp.float32
  xa = (x2 @ a.astype(x.dtype)).astype(f32)  # [rows, r]
  gb = (g2 @ b.T.astype(x.dtype)).astype(f32)  # [rows, r]
  da = scale * jnp.einsum("ni,nr->ir", x2.astype(f32), gb)
  db = scale * jnp.einsum("nr,no->ro", xa, g2.astype(f32))
  dw = jnp.einsum("ni,no->io", x2.astype(f32), g2.astype(f32))  # unused: removed by XLA
  dscale = jnp.sum(dw * jnp.tensordot(a, b, axes=1))
  return dx, dw.astype(kernel.dtype), da.astype(a.dtype), db.astype(b.dtype), dscale


dense_matmul.defvjp(_dense_fwd, _dense_bwd)


def dense_interceptor(rate: float, seen: list) -> Callable:
  """A flax.linen.intercept_methods interceptor for training: every nn.Dense call whose
  params hold LoRA factors computes its LoRA layer itself and appends the module's path
  to `seen` (so the caller can check that no factor pair was left out: a 2-D kernel
  outside nn.Dense). `rate` 0: x·(W + scale·A·B) + b by `dense_matmul` (one large matmul
  forward and one backward); `rate` > 0: x·W + b + scale · (dropout_rate(x)·A)·B, the mask
  drawn from the module's 'dropout' rng (a delta behind a mask cannot be merged)."""

  def intercept(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or not isinstance(module, nn.Dense):
      return next_fun(*args, **kwargs)
    params = module.variables.get("params", {})
    if A not in params:
      return next_fun(*args, **kwargs)
    seen.append(module.path)
    if rate == 0:
      (x,) = args
      dtype = module.dtype or jnp.result_type(x, params[KERNEL])
      y = dense_matmul(jnp.asarray(x, dtype), params[KERNEL], params[A], params[B], params[SCALE])
      return y + params["bias"].astype(dtype) if module.use_bias else y
    y = next_fun(*args, **kwargs)  # the frozen base W (the factors are beside it, unread)
    x = args[0]
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, x.shape)
    x = jnp.where(keep, x / (1.0 - rate), 0.0).astype(y.dtype)
    a, b = params[A].astype(y.dtype), params[B].astype(y.dtype)
    return y + (params[SCALE] * ((x @ a) @ b)).astype(y.dtype)

  return intercept


def merge_checkpoint_params(params: PyTree) -> PyTree:
  """A LoRA run's parameters (the model tree or {'model', 'method'}) as a plain model's:
  the factors folded into the kernels, as numpy. The export step: the result loads into
  (and computes exactly as) a model without LoRA."""
  return jax.device_get(merged(params))


def has_lora(params: PyTree) -> bool:
  return any(name.rsplit("/", 1)[-1] in LEAVES for name, _ in named_leaves(params))


def merged_variables(variables: Mapping) -> Mapping:
  """A Linen variables dict ({'params': ..., 'batch_stats': ...}) with merged params;
  `variables` itself when they hold no LoRA leaves."""
  params = variables.get("params")
  new = merged(params)
  return variables if new is params else {**variables, "params": new}
