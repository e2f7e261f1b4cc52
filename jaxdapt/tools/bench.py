"""Throughput of the training step and of feature extraction: compile time, step
time, images/s, MFU; against the same network and step in PyTorch.

  jaxdapt bench --config experiments/digits/dann.py --steps 100
  jaxdapt bench --config experiments/digits/dann.py --pipeline --no-torch
  jaxdapt bench throughput --model resnet50 --method dann --batch 256 [--image-size 224]
  jaxdapt bench features --model resnet50 --batch 1024

Config mode builds an experiment's own step (its data sets the shapes). It feeds
one fixed on-device batch (the step alone), or with --pipeline batches from the
grain pipeline (step + host input). Throughput mode needs no data: random images
of the given size, generated on device. Features mode times the eval-mode forward
that feature extraction runs (features.forward_fn) on such images. --torch (on
when torch is importable) also times the PyTorch twin (jaxdapt/tools/torch_ref.py:
digits and ResNet networks, source_only and DANN steps, channels-last, bf16
autocast on CUDA when JAX computes in bf16) on the same batch and prints the ratio.

Images/s counts every image the step forwards (source + target for adaptation
methods). MFU = FLOPs of the compiled per-device program (XLA cost analysis) /
step time / the device's peak dense bf16 FLOP/s; n/a where the peak is unknown
(CPU, unlisted accelerators).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxdapt.errors import ConfigError
from jaxdapt.tools import cli

# Peak dense bf16 FLOP/s per device, matched in order against jax's device_kind.
PEAK_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))
# Throughput-mode defaults: (image size, classes) by backbone family.
DIGITS_MODELS = ("dann_digits", "lenet")


def peak_flops(device: jax.Device) -> float | None:
  if device.platform == "cpu":
    return None
  return next((peak for name, peak in PEAK_FLOPS if name in device.device_kind), None)


def step_flops(compiled: Any) -> float | None:
  """FLOPs of one call of a compiled (per-device, after partitioning) program, if XLA says."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # not every backend implements it
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = (cost or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def timed(
  compile_fn: Callable[[], Any], run: Callable[[Any], Any], steps: int, warmup: int
) -> tuple[Any, float, float]:
  """(compiled, compile s, s per call): `run(compiled)` `warmup` times, then `steps` timed
  times; each run returns what to wait on, fetched only at the end of each phase."""
  t0 = time.perf_counter()
  compiled = compile_fn()
  compile_s = time.perf_counter() - t0
  out = None
  for _ in range(warmup):
    out = run(compiled)
  jax.block_until_ready(out)
  t0 = time.perf_counter()
  for _ in range(steps):
    out = run(compiled)
  jax.block_until_ready(out)
  return compiled, compile_s, (time.perf_counter() - t0) / steps


def _result(
  exp, what: str, compiled: Any, compile_s: float, step_s: float, domains: int
) -> dict[str, Any]:
  """The fields every mode reports, for `compiled` taking `step_s` per call."""
  config, device = exp.config, jax.devices()[0]
  from jaxdapt.step import compute_dtype

  # model.conv_kernel resolved to 'direct' and some convolution eligible for the kernels.
  direct = getattr(exp.model, "conv_kernel", "xla") == "direct" and _calls_kernels(compiled)
  # XLA's cost analysis does not see into FFI calls: where jaxdapt's CPU conv kernels
  # run, it would count the step without those convolutions, so FLOPs are not reported.
  flops, peak = (None if direct else step_flops(compiled)), peak_flops(device)
  return {
    "method": what,
    "model": config.model.name,
    "dtype": compute_dtype(config, exp.mesh).name,  # model.dtype, 'auto' resolved
    "conv_kernel": "direct" if direct else "xla",  # the kernels that ran
    "batch_per_domain": config.data.batch_size,
    "domains": domains,
    "compile_s": compile_s,
    "step_ms": 1000 * step_s,
    "steps_per_s": 1 / step_s,
    "images_per_s": config.data.batch_size * domains / step_s,
    "flops_per_device_step": flops,
    "mfu": flops / step_s / peak if flops and peak else None,
    "devices": jax.device_count(),
    "platform": device.platform,
    "device_kind": device.device_kind,
    "host": host_cpu(),
    "jax": jax.__version__,
  }


def host_cpu() -> str:
  """The host CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return f"{line.split(':', 1)[1].strip()} ×{os.cpu_count()}"
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _calls_kernels(compiled: Any) -> bool:
  """Whether the compiled program calls jaxdapt's CPU conv kernels (kernels/cpu_conv.py)."""
  try:
    return "jaxdapt_conv_" in compiled.as_text()
  except Exception:  # no text: assume it does (FLOPs n/a rather than wrong)
    return True


def measure(
  exp, state, first: Any, next_batch: Callable[[], Any], steps: int, warmup: int, extra: tuple = ()
) -> dict[str, Any]:
  """Compiles `exp.update` for `first`, runs `warmup` then `steps` timed steps."""
  box = [state]

  def run(compiled):
    box[0], metrics = compiled(box[0], next_batch(), *extra)
    return box[0], metrics

  compiled, compile_s, step_s = timed(
    lambda: exp.update.lower(state, first, *extra).compile(), run, steps, warmup
  )
  return _result(exp, exp.config.method.name, compiled, compile_s, step_s, len(exp.method.domains))


def _refresh_extra(exp, state) -> tuple:
  """The update's third argument for methods that precompute one (methods/base.py)."""
  extra = exp.method.refresh(exp, state)
  return () if extra is None else (extra,)


def benchmark(
  config, steps: int, warmup: int, pipeline: bool, torch: bool = False
) -> dict[str, Any]:
  """Config mode: the experiment's step on its own data (+ the PyTorch twin if `torch`)."""
  from jaxdapt import sharding, trainer

  exp = trainer.build(config)
  state = exp.init(jax.random.key(config.seed))
  its = trainer.train_iterators(exp)
  domains = exp.method.domains
  local = next(its)
  first = sharding.global_batch({d: local[d] for d in domains}, exp.mesh)

  def next_batch():
    if not pipeline:
      return first
    batch = next(its)
    return sharding.global_batch({d: batch[d] for d in domains}, exp.mesh)

  result = measure(exp, state, first, next_batch, steps, warmup, _refresh_extra(exp, state))
  result["input"] = "pipeline" if pipeline else "synthetic"
  if torch:
    image_shape = tuple(local["source"]["image"].shape[1:])
    result.update(torch_benchmark(config, local, image_shape, exp.num_classes, steps, warmup))
  return result


def _synthetic_experiment(config, image_size: int, num_classes: int):
  """(experiment, state, on-device batch) for `config` on random images: no dataset."""
  from jaxdapt import methods, sharding, trainer

  mesh = sharding.make_mesh()
  trainer.validate(config, device_count=mesh.size)
  method = methods.get_method(config.method)
  if type(method).refresh is not methods.Method.refresh:
    raise ConfigError(
      f"method.name: {config.method.name!r} precomputes inputs from its data "
      "(refresh); benchmark it in config mode (--config)"
    )
  image_shape = (image_size, image_size, 3)
  exp = trainer.build_functions(config, mesh, method, image_shape, num_classes)
  state = exp.init(jax.random.key(config.seed))
  return exp, state, synthetic_batch(exp, image_shape, num_classes)


def synthetic_batch(exp, image_shape: tuple[int, ...], num_classes: int, seed: int = 0):
  """Random uint8 images and labels for every domain, made on device and sharded."""
  batch = exp.config.data.batch_size

  def make(key):
    out = {}
    for i, d in enumerate(exp.method.domains):
      k_image, k_label = jax.random.split(jax.random.fold_in(key, i))
      image = jax.random.randint(k_image, (batch, *image_shape), 0, 256, jnp.int32)
      out[d] = {
        "image": image.astype(jnp.uint8),
        "label": jax.random.randint(k_label, (batch,), 0, num_classes, jnp.int32),
      }
    return out

  from jaxdapt import sharding

  return jax.jit(make, out_shardings=sharding.batch_sharded(exp.mesh))(jax.random.key(seed))


def throughput_config(
  model: str, method: str, batch: int, dtype: str = "float32", overrides: Sequence[str] = ()
):
  from jaxdapt import config as config_lib

  config = config_lib.base_config()
  config.model.name, config.method.name = model, method
  config.data.batch_size, config.model.dtype = batch, dtype
  config.train.progress_bar = False
  return cli.apply_overrides(config, overrides)


def throughput(
  config, image_size: int, num_classes: int, steps: int, warmup: int, torch: bool = False
) -> dict[str, Any]:
  """Throughput mode: the step for `config` on synthetic on-device data (no dataset)."""
  exp, state, batch = _synthetic_experiment(config, image_size, num_classes)
  result = measure(exp, state, batch, lambda: batch, steps, warmup)
  result.update(input="synthetic", image_size=image_size, num_classes=num_classes)
  if torch:
    result.update(
      torch_benchmark(
        config, jax.device_get(batch), (image_size, image_size, 3), num_classes, steps, warmup
      )
    )
  return result


def feature_throughput(
  config, image_size: int, steps: int, warmup: int, torch: bool = False
) -> dict[str, Any]:
  """Features mode: the eval-mode forward of feature extraction (features.forward_fn)
  on a synthetic on-device batch of config.data.batch_size images."""
  from jaxdapt import features

  exp, state, batch = _synthetic_experiment(config, image_size, num_classes=10)
  images = batch["source"]["image"]
  forward = features.forward_fn(exp)
  compiled, compile_s, step_s = timed(
    lambda: forward.lower(state.params, state.batch_stats, images).compile(),
    lambda compiled: compiled(state.params, state.batch_stats, images),
    steps,
    warmup,
  )
  result = _result(exp, "features", compiled, compile_s, step_s, domains=1)
  result.update(input="synthetic", image_size=image_size)
  if torch:
    result.update(torch_features(config, jax.device_get(images), steps, warmup))
  return result


def _torch_device():
  import torch

  device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cuda":
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True  # XLA's default float32 precision on GPU
    torch.backends.cudnn.allow_tf32 = True
  return device


def _torch_timed(
  call: Callable[[], Any], synchronize: Callable[[], None], steps: int, warmup: int
) -> tuple[Any, float]:
  """(last output, s per call) after max(warmup, 1) untimed calls (cuDNN autotuning)."""
  for _ in range(max(warmup, 1)):
    call()
  synchronize()
  t0 = time.perf_counter()
  for _ in range(steps):
    out = call()
  synchronize()
  return out, (time.perf_counter() - t0) / steps


def _torch_fields(step_s: float, images: int, device: str, amp: bool) -> dict[str, Any]:
  import torch

  return {
    "torch": torch.__version__,
    "torch_device": device,
    "torch_threads": torch.get_num_threads(),
    "torch_amp_bf16": amp,
    "torch_step_ms": 1000 * step_s,
    "torch_images_per_s": images / step_s,
  }


def _torch_twin(config) -> tuple[Any, str | None]:
  """(jaxdapt.torch_ref, torch device), or (None, why the twin is skipped)."""
  try:
    from jaxdapt.tools import torch_ref
  except ImportError:
    return None, "torch is not installed"
  reason = torch_ref.unsupported(config)
  return (None, reason) if reason else (torch_ref, _torch_device())


def torch_benchmark(
  config, local_batch: dict, image_shape: tuple[int, ...], num_classes: int, steps: int, warmup: int
) -> dict[str, Any]:
  """Times jaxdapt.torch_ref's twin of the step on the same (host) batch."""
  torch_ref, device = _torch_twin(config)
  if torch_ref is None:
    return {"torch_skipped": device}
  step = torch_ref.TorchStep(config, image_shape, num_classes, device)
  batch = step.to_device(local_batch)
  loss, step_s = _torch_timed(lambda: step(batch), step.synchronize, steps, warmup)
  images = len(step.domains) * local_batch["source"]["image"].shape[0]
  return {**_torch_fields(step_s, images, device, step.amp), "torch_final_loss": float(loss)}


def torch_features(config, images, steps: int, warmup: int) -> dict[str, Any]:
  """Times jaxdapt.torch_ref's twin of the feature extractor on the same (host) images."""
  torch_ref, device = _torch_twin(config)
  if torch_ref is None:
    return {"torch_skipped": device}
  extract = torch_ref.TorchFeatures(config, tuple(images.shape[1:]), device)
  x = torch_ref.to_device(images, extract.device)
  _, step_s = _torch_timed(lambda: extract(x), extract.synchronize, steps, warmup)
  return _torch_fields(step_s, images.shape[0], device, extract.amp)


def report(result: dict[str, Any]) -> str:
  """The human-readable lines (the JSON follows them)."""
  mfu = "n/a" if result.get("mfu") is None else f"{100 * result['mfu']:.1f}%"
  flops = result.get("flops_per_device_step")
  what = (
    "feature extraction (eval forward)"
    if result["method"] == "features"
    else f"{result['method']} step"
  )
  lines = [
    f"{what}, {result['model']} ({result['dtype']}, "
    f"{result.get('conv_kernel', 'xla')} convs), batch "
    f"{result['batch_per_domain']}×{result['domains']} ({result['input']} input) on "
    f"{result['devices']} {result['platform']} device(s) [{result['device_kind']}]",
    f"jax:   {result['images_per_s']:.0f} img/s, {result['step_ms']:.2f} ms/step, "
    f"compile {result['compile_s']:.1f} s, "
    f"{'n/a' if flops is None else f'{flops / 1e9:.2f}'} GFLOP/step/device, MFU {mfu}",
  ]
  if "torch_images_per_s" in result:
    lines.append(
      f"torch: {result['torch_images_per_s']:.0f} img/s, "
      f"{result['torch_step_ms']:.2f} ms/step ({result['torch']}, "
      f"{result['torch_device']}, {result['torch_threads']} threads)"
    )
    lines.append(f"jax/torch images/s: {result['images_per_s'] / result['torch_images_per_s']:.2f}")
  elif "torch_skipped" in result:
    lines.append(f"torch: skipped ({result['torch_skipped']})")
  return "\n".join(lines)


def _torch_available() -> bool:
  import importlib.util

  return importlib.util.find_spec("torch") is not None


MODES = ("config", "throughput", "features")


def _parser(mode: str) -> argparse.ArgumentParser:
  from jaxdapt import step

  parser = cli.parser("bench" + ("" if mode == "config" else f" {mode}"), __doc__)
  if mode == "config":
    cli.add_config_arguments(parser, required=False)
    parser.set_defaults(config="experiments/digits/dann.py")
    parser.add_argument(
      "--task", default=None, help="the config's ARG (default syn2uci); or give it as FILE:ARG"
    )
    parser.add_argument("--pipeline", action="store_true", help="feed the real grain pipeline")
  else:
    parser.add_argument("--model", default="resnet50")
    if mode == "throughput":
      parser.add_argument("--method", default="dann")
    parser.add_argument(
      "--batch",
      type=int,
      default=256 if mode == "throughput" else 1024,
      help="images per domain, global",
    )
    parser.add_argument(
      "--image-size", type=int, default=None, help="default: 32 for digit models, else 224"
    )
    if mode == "throughput":
      parser.add_argument(
        "--num-classes", type=int, default=None, help="default: 10 for digit models, else 31"
      )
    parser.add_argument(
      "--dtype",
      default="auto",
      choices=step.DTYPES,
      help="model.dtype; auto: bfloat16 on GPU/TPU, float32 on CPU",
    )
    parser.add_argument(
      "--set",
      action="append",
      default=[],
      metavar="FIELD=VALUE",
      help="override a config field (JSON for numbers, booleans and lists; "
      "strings verbatim), e.g. --set model.width=8; repeatable",
    )
  parser.add_argument(
    "--torch",
    action=argparse.BooleanOptionalAction,
    default=_torch_available(),
    help="also time the PyTorch twin (default: if torch is installed)",
  )
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--warmup", type=int, default=10)
  return parser


def config_spec(config: str, task: str | None) -> str:
  """FILE:ARG for config mode: --config's own ARG, else --task, else syn2uci."""
  path, sep, arg = config.partition(":")
  if sep and task is not None:
    raise ConfigError(f"--config {config} names its ARG and --task {task} another; give one")
  return config if sep else f"{path}:{task or 'syn2uci'}"


# With the PyTorch twin in the same process, JAX's GPU allocator takes this share of the
# device memory instead of its default 75%, leaving the twin the rest (a ResNet-50 DANN step
# at 256 + 256 in PyTorch needs more than a quarter of an 80 GB H100). Read when JAX's
# backend starts, so `main` sets it before any device is touched; an explicit setting wins.
TORCH_TWIN_JAX_MEM_FRACTION = "0.5"


def main(argv: Sequence[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  mode = argv[0] if argv[:1] and argv[0] in MODES[1:] else "config"
  args = _parser(mode).parse_args(argv if mode == "config" else argv[1:])
  if args.steps < 1 or args.warmup < 0:
    raise ConfigError(
      f"--steps {args.steps} --warmup {args.warmup}: steps must be >= 1, warmup >= 0"
    )
  # Every config is built (and its errors raised) before the backend starts.
  if mode == "config":
    config = cli.load_config(config_spec(args.config, args.task), args.set)
    config.train.progress_bar = False
  else:
    digits = args.model in DIGITS_MODELS
    image_size = args.image_size or (32 if digits else 224)
    method = args.method if mode == "throughput" else "source_only"
    config = throughput_config(args.model, method, args.batch, args.dtype, args.set)
  if args.torch:
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", TORCH_TWIN_JAX_MEM_FRACTION)
  if mode == "config":
    result = benchmark(config, args.steps, args.warmup, args.pipeline, torch=args.torch)
  elif mode == "throughput":
    result = throughput(
      config,
      image_size,
      args.num_classes or (10 if digits else 31),
      args.steps,
      args.warmup,
      torch=args.torch,
    )
  else:
    result = feature_throughput(config, image_size, args.steps, args.warmup, torch=args.torch)
  print(report(result))
  print(json.dumps(result))
  return 0
