"""Throughput of the training step: compile time, step time, images/s, MFU; vs PyTorch.

  python -m jaxdapt.bench --config experiments/digits/dann.py --steps 100
  python -m jaxdapt.bench --config experiments/digits/dann.py --pipeline --no-torch
  python -m jaxdapt.bench throughput --model resnet50 --method dann --batch 256 [--image-size 224]

Config mode builds an experiment's own step (its data sets the shapes). It feeds
one fixed on-device batch (the step alone), or with --pipeline batches from the
grain pipeline (step + host input). --torch (on when torch is importable) also
times the same step written in plain PyTorch (jaxdapt/torch_ref.py; digits DANN
configs) on the same batch and prints the ratio. Throughput mode needs no data:
random images of the given size, generated on device.

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
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

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


def measure(exp, state, first: Any, next_batch: Callable[[], Any], steps: int,
            warmup: int, extra: tuple = ()) -> dict[str, Any]:
  """Compiles `exp.update` for `first`, runs `warmup` then `steps` timed steps."""
  t0 = time.perf_counter()
  compiled = exp.update.lower(state, first, *extra).compile()
  compile_s = time.perf_counter() - t0
  metrics = None
  for _ in range(warmup):
    state, metrics = compiled(state, next_batch(), *extra)
  jax.block_until_ready((state, metrics))
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, next_batch(), *extra)
  jax.block_until_ready((state, metrics))
  elapsed = time.perf_counter() - t0
  config, device = exp.config, jax.devices()[0]
  from jaxdapt.train import compute_dtype
  images = config.data.batch_size * len(exp.method.domains) * steps
  # XLA's cost analysis does not see into FFI calls: with jaxdapt's CPU conv kernels it
  # would count the step without its convolutions, so FLOPs are not reported.
  direct = getattr(exp.model, "conv_kernel", "xla") == "direct"
  flops, peak = (None if direct else step_flops(compiled)), peak_flops(device)
  step_s = elapsed / steps
  return {"method": config.method.name, "model": config.model.name,
          "dtype": compute_dtype(config, exp.mesh).name,  # model.dtype, 'auto' resolved
          "conv_kernel": "direct" if direct else "xla",   # model.conv_kernel, resolved
          "batch_per_domain": config.data.batch_size,
          "domains": len(exp.method.domains), "compile_s": compile_s,
          "step_ms": 1000 * step_s, "steps_per_s": 1 / step_s, "images_per_s": images / elapsed,
          "flops_per_device_step": flops,
          "mfu": flops / step_s / peak if flops and peak else None,
          "devices": jax.device_count(), "platform": device.platform,
          "device_kind": device.device_kind,
          "host": platform.processor() or platform.machine(), "jax": jax.__version__}


def _refresh_extra(exp, state) -> tuple:
  """The update's third argument for methods that precompute one (methods/base.py)."""
  extra = exp.method.refresh(exp, state)
  return () if extra is None else (extra,)


def benchmark(config, steps: int, warmup: int, pipeline: bool,
              torch: bool = False) -> dict[str, Any]:
  """Config mode: the experiment's step on its own data (+ the PyTorch twin if `torch`)."""
  from jaxdapt import sharding, train
  exp = train.build(config)
  state = exp.init(jax.random.key(config.seed))
  its = train.train_iterators(exp)
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


def synthetic_batch(exp, image_shape: tuple[int, ...], num_classes: int, seed: int = 0):
  """Random uint8 images and labels for every domain, made on device and sharded."""
  batch = exp.config.data.batch_size

  def make(key):
    out = {}
    for i, d in enumerate(exp.method.domains):
      k_image, k_label = jax.random.split(jax.random.fold_in(key, i))
      image = jax.random.randint(k_image, (batch, *image_shape), 0, 256, jnp.int32)
      out[d] = {"image": image.astype(jnp.uint8),
                "label": jax.random.randint(k_label, (batch,), 0, num_classes, jnp.int32)}
    return out

  from jaxdapt import sharding
  return jax.jit(make, out_shardings=sharding.batch_sharded(exp.mesh))(jax.random.key(seed))


def throughput_config(model: str, method: str, batch: int, dtype: str = "float32",
                      overrides: Sequence[str] = ()):
  from jaxdapt import config as config_lib
  from jaxdapt.grid import apply_overrides
  config = config_lib.base_config()
  config.model.name, config.method.name = model, method
  config.data.batch_size, config.model.dtype = batch, dtype
  config.train.progress_bar = False
  return apply_overrides(config, overrides)


def throughput(config, image_size: int, num_classes: int, steps: int,
               warmup: int) -> dict[str, Any]:
  """Throughput mode: the step for `config` on synthetic on-device data (no dataset)."""
  from jaxdapt import config as config_lib, methods, sharding, train
  from jaxdapt.errors import ConfigError
  mesh = sharding.make_mesh()
  config_lib.validate(config, device_count=mesh.size)
  method = methods.get_method(config.method)
  if type(method).refresh is not methods.Method.refresh:
    raise ConfigError(f"method.name: {config.method.name!r} precomputes inputs from its data "
                      "(refresh); benchmark it in config mode (--config)")
  image_shape = (image_size, image_size, 3)
  exp = train.build_functions(config, mesh, method, image_shape, num_classes)
  state = exp.init(jax.random.key(config.seed))
  batch = synthetic_batch(exp, image_shape, num_classes)
  result = measure(exp, state, batch, lambda: batch, steps, warmup)
  return {**result, "input": "synthetic", "image_size": image_size, "num_classes": num_classes}


def torch_benchmark(config, local_batch: dict, image_shape: tuple[int, ...], num_classes: int,
                    steps: int, warmup: int) -> dict[str, Any]:
  """Times jaxdapt.torch_ref's twin of the step on the same (host) batch."""
  try:
    import torch
    from jaxdapt import torch_ref
  except ImportError:
    return {"torch_skipped": "torch is not installed"}
  reason = torch_ref.unsupported(config)
  if reason:
    return {"torch_skipped": reason}
  device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cuda":
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True  # XLA's default float32 precision on GPU
  step = torch_ref.TorchStep(config, image_shape, num_classes, device)
  batch = step.to_device({d: local_batch[d] for d in ("source", "target")})
  for _ in range(max(warmup, 1)):
    step(batch)
  step.synchronize()
  t0 = time.perf_counter()
  for _ in range(steps):
    loss = step(batch)
  step.synchronize()
  elapsed = time.perf_counter() - t0
  images = 2 * local_batch["source"]["image"].shape[0] * steps
  return {"torch": torch.__version__, "torch_device": device,
          "torch_threads": torch.get_num_threads(), "torch_amp_bf16": step.amp,
          "torch_step_ms": 1000 * elapsed / steps, "torch_images_per_s": images / elapsed,
          "torch_final_loss": float(loss)}


def report(result: dict[str, Any]) -> str:
  """The human-readable lines (the JSON follows them)."""
  mfu = "n/a" if result.get("mfu") is None else f"{100 * result['mfu']:.1f}%"
  flops = result.get("flops_per_device_step")
  lines = [
      f"{result['method']} step, {result['model']} ({result['dtype']}, "
      f"{result.get('conv_kernel', 'xla')} convs), batch "
      f"{result['batch_per_domain']}×{result['domains']} ({result['input']} input) on "
      f"{result['devices']} {result['platform']} device(s) [{result['device_kind']}]",
      f"jax:   {result['images_per_s']:.0f} img/s, {result['step_ms']:.2f} ms/step, "
      f"compile {result['compile_s']:.1f} s, "
      f"{'n/a' if flops is None else f'{flops / 1e9:.2f}'} GFLOP/step/device, MFU {mfu}"]
  if "torch_images_per_s" in result:
    lines.append(f"torch: {result['torch_images_per_s']:.0f} img/s, "
                 f"{result['torch_step_ms']:.2f} ms/step ({result['torch']}, "
                 f"{result['torch_device']}, {result['torch_threads']} threads)")
    lines.append(f"jax/torch images/s: "
                 f"{result['images_per_s'] / result['torch_images_per_s']:.2f}")
  elif "torch_skipped" in result:
    lines.append(f"torch: skipped ({result['torch_skipped']})")
  return "\n".join(lines)


def _torch_available() -> bool:
  import importlib.util
  return importlib.util.find_spec("torch") is not None


def _parser(throughput_mode: bool) -> argparse.ArgumentParser:
  from jaxdapt import config as config_lib
  parser = argparse.ArgumentParser(prog="python -m jaxdapt.bench" + (
      " throughput" if throughput_mode else ""), description=__doc__.split("\n\n")[0])
  if throughput_mode:
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--method", default="dann")
    parser.add_argument("--batch", type=int, default=256, help="per domain, global")
    parser.add_argument("--image-size", type=int, default=None,
                        help="default: 32 for digit models, else 224")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="default: 10 for digit models, else 31")
    parser.add_argument("--dtype", default="float32", choices=config_lib.DTYPES,
                        help="model.dtype; auto: bfloat16 on GPU/TPU, float32 on CPU")
  else:
    parser.add_argument("--config", default="experiments/digits/dann.py")
    parser.add_argument("--task", default="syn2uci")
    parser.add_argument("--pipeline", action="store_true", help="feed the real grain pipeline")
    parser.add_argument("--torch", action=argparse.BooleanOptionalAction,
                        default=_torch_available(),
                        help="also time the PyTorch twin of the step (default: if installed)")
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--warmup", type=int, default=10)
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON")
  return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  argv = sys.argv[1:] if argv is None else list(argv)
  throughput_mode = argv[:1] == ["throughput"]
  args = _parser(throughput_mode).parse_args(argv[1:] if throughput_mode else argv)
  if throughput_mode:
    digits = args.model in DIGITS_MODELS
    config = throughput_config(args.model, args.method, args.batch, args.dtype, args.set)
    result = throughput(config, args.image_size or (32 if digits else 224),
                        args.num_classes or (10 if digits else 31), args.steps, args.warmup)
  else:
    from jaxdapt.grid import load_config
    method = os.path.splitext(os.path.basename(args.config))[0]
    config = load_config(method, args.task, os.path.dirname(args.config), args.set)
    config.train.progress_bar = False
    result = benchmark(config, args.steps, args.warmup, args.pipeline, torch=args.torch)
  print(report(result))
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
