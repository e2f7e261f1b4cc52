"""Throughput of the training step and of feature extraction: compile time, step
time, images/s, MFU; against the same network and step in PyTorch.

  jaxdapt bench --config experiments/digits/dann.py --steps 100
  jaxdapt bench --config experiments/digits/dann.py --pipeline --no-torch
  jaxdapt bench throughput --model resnet50 --method dann --batch 256 [--image-size 224]
  jaxdapt bench features --model resnet50 --batch 1024
  jaxdapt bench text --model minilm_l6 --batch 32 --seq 128 [--features] [--rounds 5]

Config mode builds an experiment's own step (its data sets the shapes). It feeds
one fixed on-device batch (the step alone), or with --pipeline batches from the
grain pipeline (step + host input). Throughput mode needs no data: random images
of the given size, generated on device. Features mode times the eval-mode forward
that feature extraction runs (features.forward_fn) on such images. --torch (on
when torch is importable) also times the PyTorch twin (jaxdapt/tools/torch_ref.py:
digits and ResNet networks, source_only and DANN steps, channels-last, bf16
autocast on CUDA when JAX computes in bf16) on the same batch and prints the ratio.

Text mode times the text encoder's fine-tuning step (the shared train_step, source_only:
cross-entropy on a linear head over mean-pooled features, AdamW; experiments/text/debian.py's
settings) or with --features its eval forward, on synthetic int32 token batches [B, L]
(random ids, every fourth row padded). Its twin is transformers' BertModel with the same
weights (the packaged all-MiniLM-L6-v2's safetensors loaded into both, or the JAX init
copied over), the same pooling, head and AdamW, on the same batches. JAX and PyTorch run in
alternating rounds (--rounds), so load from other jobs falls on both; the first step's
losses (features: the first batch's features) must agree within 1e-4, or the exit status is
1. It reports sequences/s and the load average.

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
import numpy as np

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
    image_shape = tuple(local[domains[0]]["image"].shape[1:])
    result.update(torch_benchmark(config, local, image_shape, exp.num_classes, steps, warmup))
  return result


def interleaved(
  configs: dict[str, Any], steps: int, warmup: int, rounds: int, torch: bool = False
) -> dict[str, dict[str, Any]]:
  """Config mode for several configs at once, in alternating rounds: each config's update
  is compiled for one fixed batch of its own data and warmed up, then `rounds` rounds each
  time steps / rounds steps of every config in turn; a config's step time is the median
  of its rounds. Load that drifts during the measurement (other jobs, a VM neighbour)
  then falls on every config alike instead of on whichever ran at the time. With `torch`,
  each config that has a twin times it afterwards on the same batch."""
  from jaxdapt import sharding, trainer

  prepared = {}
  for name, config in configs.items():
    exp = trainer.build(config)
    state = exp.init(jax.random.key(config.seed))
    local = next(trainer.train_iterators(exp))
    batch = sharding.global_batch({d: local[d] for d in exp.method.domains}, exp.mesh)
    extra = _refresh_extra(exp, state)
    t0 = time.perf_counter()
    compiled = exp.update.lower(state, batch, *extra).compile()
    box = [state, time.perf_counter() - t0]
    for _ in range(warmup):
      box[0], _ = compiled(box[0], batch, *extra)
    jax.block_until_ready(box[0])
    prepared[name] = (exp, compiled, box, batch, extra, local)
  times: dict[str, list[float]] = {name: [] for name in configs}
  for size in round_sizes(steps, rounds):
    for name, (_, compiled, box, batch, extra, _) in prepared.items():
      t0 = time.perf_counter()
      for _ in range(size):
        box[0], _ = compiled(box[0], batch, *extra)
      jax.block_until_ready(box[0])
      times[name].append((time.perf_counter() - t0) / size)
  results = {}
  for name, (exp, compiled, box, _, _, local) in prepared.items():
    step_s, domains = _median(times[name]), len(exp.method.domains)
    r = _result(exp, exp.config.method.name, compiled, box[1], step_s, domains)
    r.update(input="synthetic", rounds=len(times[name]), round_ms=[1000 * t for t in times[name]])
    if torch:
      domain = exp.method.domains[0]
      shape = tuple(local[domain]["image"].shape[1:])
      r.update(torch_benchmark(configs[name], local, shape, exp.num_classes, steps, warmup))
    results[name] = r
  return results


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
  images = len(step.domains) * local_batch[step.domains[0]]["image"].shape[0]
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


# --- Text mode: the text encoder's fine-tuning step and feature extraction -----------------

TEXT_CLASSES = 10  # debian_text's archive sections (experiments/text/debian.py)
LOSS_TOLERANCE = 1e-4  # |first-step loss, JAX − PyTorch|, float32
FEATURE_TOLERANCE = 1e-4  # max |features, JAX − PyTorch| on the first batch, float32
TEXT_BATCHES = 4  # distinct synthetic batches, cycled (the same order in both frameworks)


def text_config(model: str, batch: int, dtype: str = "auto", overrides: Sequence[str] = ()):
  """experiments/text/debian.py's fine-tuning setup (source_only; a linear head on the
  mean-pooled features; AdamW, lr 5e-5, weight decay 0.01, cosine over 1000 steps) for
  `model` at `batch` sequences, without its data or its model.init_from: text mode loads
  the weights itself, into JAX and into the twin alike."""
  from jaxdapt import config as config_lib

  c = config_lib.base_config()
  c.model.name, c.method.name, c.model.dtype = model, "source_only", dtype
  c.model.head_hidden, c.model.bottleneck_dim = (), 0
  c.data.batch_size = c.data.eval_batch_size = batch
  c.data.augment = "none"
  c.optim.name, c.optim.lr, c.optim.weight_decay, c.optim.schedule = "adamw", 5e-5, 0.01, "cosine"
  c.train.steps, c.train.progress_bar = 1000, False
  return cli.apply_overrides(c, overrides)


def text_encoder(config, num_classes: int):
  """config.model's BertEncoder (no parameters, no backend); ConfigError for other models."""
  from jaxdapt import step
  from jaxdapt.models.text_encoder import BertEncoder

  backbone = step.build_model(config, num_classes, jnp.float32).backbone
  if not isinstance(backbone, BertEncoder):
    raise ConfigError(
      f"model.name: {config.model.name!r} is not a text encoder; bench text takes minilm_l6, "
      "bert_tiny or bert"
    )
  return backbone


def text_weights(choice: str, model: str) -> str | None:
  """--weights: the Hugging Face folder both frameworks load, or None for the JAX model's
  random initialisation (copied into the twin). 'auto': the packaged all-MiniLM-L6-v2 for
  minilm_l6 (its real weights: what fine-tuning starts from), random init otherwise."""
  if choice == "auto":
    choice = "packaged" if model == "minilm_l6" else "random"
  if choice == "random":
    return None
  if choice == "packaged":
    from jaxdapt.weights.hf_text import packaged_minilm

    return packaged_minilm()
  return choice


def token_batches(
  count: int, batch: int, seq: int, vocab: int, num_classes: int, pad_id: int = 0, seed: int = 0
) -> list[dict[str, np.ndarray]]:
  """`count` batches of random int32 token ids [batch, seq] and labels. Every fourth row is
  padded (pad_id) after a random length of seq/4..seq-1, so the attention mask and the
  mean pooling over real tokens are part of what is timed and compared."""
  rng = np.random.default_rng(seed)
  low = 1000 if vocab > 2000 else 1  # ordinary word pieces, clear of [PAD] and [unused*]
  out = []
  for _ in range(count):
    tokens = rng.integers(low, vocab, (batch, seq), dtype=np.int32)
    lengths = np.full(batch, seq)
    padded = np.arange(batch) % 4 == 3
    if seq > 1 and padded.any():
      lengths[padded] = rng.integers(max(1, seq // 4), seq, int(padded.sum()))
    tokens[np.arange(seq)[None, :] >= lengths[:, None]] = pad_id
    labels = rng.integers(0, num_classes, batch).astype(np.int32)
    out.append({"image": tokens, "label": labels})
  return out


def round_sizes(steps: int, rounds: int) -> list[int]:
  """`steps` timed calls split into min(rounds, steps) rounds as evenly as possible."""
  rounds = max(1, min(rounds, steps))
  return [steps // rounds + (i < steps % rounds) for i in range(rounds)]


def alternate(
  runners: dict[str, tuple[Callable[[int], Any], Callable[[Any], None]]],
  warmup: int,
  rounds: Sequence[int],
) -> dict[str, list[float]]:
  """{name: s per call, each round}: every runner `(call(i), wait(out))` makes max(warmup, 1)
  untimed calls, then the rounds alternate between the runners (A's round 1, B's round 1,
  A's round 2, ...), so load from other jobs on a shared machine falls on both alike.
  `call(i)` is the i-th call overall (its batch is i mod the batch count); each round waits
  once, on its last output."""
  n = max(warmup, 1)
  for call, wait in runners.values():
    out = None
    for i in range(n):
      out = call(i)
    wait(out)
  times: dict[str, list[float]] = {name: [] for name in runners}
  for size in rounds:
    for name, (call, wait) in runners.items():
      t0 = time.perf_counter()
      for i in range(n, n + size):
        out = call(i)
      wait(out)
      times[name].append((time.perf_counter() - t0) / size)
    n += size
  return times


def _median(values: Sequence[float]) -> float:
  return float(np.median(np.asarray(values)))


def _load_text_weights(exp, state, encoder, folder: str):
  """`state` with its backbone replaced by the Hugging Face model in `folder` (strict:
  hf_text.load_hf_text_encoder), which must have `encoder`'s sizes."""
  from jaxdapt import sharding
  from jaxdapt.weights.hf_text import load_hf_text_encoder

  params, fields = load_hf_text_encoder(folder)
  wrong = [
    f"{k} {v} (model.name {exp.config.model.name}: {getattr(encoder, k)})"
    for k, v in fields.items()
    if k != "pooling" and getattr(encoder, k) != v
  ]
  if fields.get("pooling", encoder.pooling) != encoder.pooling:
    wrong.append(f"pooling {fields['pooling']} (model: {encoder.pooling})")
  if wrong:
    raise ConfigError(f"--weights {folder}: another model's shape: {', '.join(wrong)}")
  loaded = jax.device_put(params, sharding.replicated(exp.mesh))
  # Leaves the weights lack (LoRA factors, adapters: peft.method) keep their init.
  backbone = _overlay(state.params["model"]["backbone"], loaded)
  model = {**state.params["model"], "backbone": backbone}
  return state.replace(params={**state.params, "model": model})


def _overlay(base: Any, new: Any) -> Any:
  """`base` with every leaf that `new` holds at the same path replaced by new's."""
  if not isinstance(base, dict) or not isinstance(new, dict):
    return new
  return {**base, **{k: _overlay(base.get(k), v) for k, v in new.items()}}


def _text_twin(config) -> tuple[Any, str | None]:
  """(jaxdapt.torch_ref, torch device) for the text step, or (None, why it is skipped)."""
  try:
    from jaxdapt.tools import torch_ref
  except ImportError:
    return None, "torch is not installed"
  import importlib.util

  if importlib.util.find_spec("transformers") is None:
    return None, "transformers is not installed"
  reason = torch_ref.text_unsupported(config)
  return (None, reason) if reason else (torch_ref, _torch_device())


def text_benchmark(
  config,
  seq: int,
  num_classes: int,
  folder: str | None,
  steps: int,
  warmup: int,
  rounds: int,
  devices: int = 1,
  features: bool = False,
  torch: bool = False,
) -> dict[str, Any]:
  """Text mode: the shared train_step (with `features`: the eval forward of
  features.forward_fn) on synthetic int32 token batches [B, seq], and with `torch` its
  twin (torch_ref.TorchTextStep / TorchTextFeatures) from the same weights on the same
  batches in the same order, timed in alternating rounds. The first step's losses (with
  `features`: the first batch's features) of both are compared, so that the ratio
  compares one computation in two frameworks."""
  from jaxdapt import features as features_lib
  from jaxdapt import methods, sharding, trainer

  load_start = os.getloadavg()
  if devices > jax.device_count():
    raise ConfigError(f"--devices {devices}: this process has {jax.device_count()}")
  mesh = sharding.make_mesh(jax.devices()[:devices])
  trainer.validate(config, device_count=mesh.size)
  encoder = text_encoder(config, num_classes)
  exp = trainer.build_functions(
    config, mesh, methods.get_method(config.method), (seq,), num_classes, input_dtype=np.int32
  )
  state = exp.init(jax.random.key(config.seed))
  if folder is not None:
    state = _load_text_weights(exp, state, encoder, folder)
  batch = config.data.batch_size
  host = token_batches(
    TEXT_BATCHES, batch, seq, encoder.vocab_size, num_classes, encoder.pad_id, config.seed
  )
  twin, device = _text_twin(config) if torch else (None, None)
  if twin is not None:  # built before the first JAX step donates the state
    import torch as torch_lib

    weights = jax.device_get(state.params["model"])
    net = twin.build_text_network(
      encoder,
      num_classes,
      weights["head"],
      folder=folder,
      params=None if folder else weights["backbone"],
    )
    make = twin.TorchTextFeatures if features else twin.TorchTextStep
    torch_model = make(config, net, device)
    torch_batches = [
      (
        torch_lib.from_numpy(b["image"]).long().to(device),
        torch_lib.from_numpy(b["label"]).long().to(device),
      )
      for b in host
    ]

  first: dict[str, Any] = {}
  last: dict[str, Any] = {}
  if features:
    forward = features_lib.forward_fn(exp)
    images = [sharding.global_batch(b["image"], mesh) for b in host]
    t0 = time.perf_counter()
    compiled = forward.lower(state.params, state.batch_stats, images[0]).compile()
    compile_s = time.perf_counter() - t0

    def jax_call(i):
      out = compiled(state.params, state.batch_stats, images[i % len(images)])
      if i == 0:
        first["jax"] = out[0]
      return out

    def torch_call(i):
      out = torch_model(torch_batches[i % len(torch_batches)][0])
      if i == 0:
        first["torch"] = out[0]
      return out
  else:
    batches = [sharding.global_batch({"source": b}, mesh) for b in host]
    t0 = time.perf_counter()
    compiled = exp.update.lower(state, batches[0]).compile()
    compile_s = time.perf_counter() - t0
    box = [state]

    def jax_call(i):
      box[0], metrics = compiled(box[0], batches[i % len(batches)])
      if i == 0:
        first["jax"] = metrics["loss"]
      last["jax"] = metrics["loss"]
      return box[0], metrics

    def torch_call(i):
      loss = torch_model(*torch_batches[i % len(torch_batches)])
      if i == 0:
        first["torch"] = loss
      last["torch"] = loss
      return loss

  runners = {"jax": (jax_call, jax.block_until_ready)}
  if twin is not None:
    runners["torch"] = (torch_call, lambda _: torch_model.synchronize())
  sizes = round_sizes(steps, rounds)
  times = alternate(runners, warmup, sizes)
  load_end = os.getloadavg()

  step_s = _median(times["jax"])
  result = _result(
    exp, "features" if features else config.method.name, compiled, compile_s, step_s, 1
  )
  result.update(
    devices=mesh.size,
    input="synthetic tokens",
    seq_len=seq,
    num_classes=num_classes,
    weights=folder or f"random init (seed {config.seed})",
    rounds=len(sizes),
    round_steps=sizes,
    round_ms=[1000 * t for t in times["jax"]],
    sequences_per_s=batch / step_s,
    cpu_count=os.cpu_count(),
    loadavg_start=list(load_start),
    loadavg_end=list(load_end),
  )
  if not features:
    result.update(jax_first_loss=float(first["jax"]), jax_final_loss=float(last["jax"]))
  if torch and twin is None:
    result["torch_skipped"] = device
  if twin is None:
    return result
  torch_s = _median(times["torch"])
  result.update(_torch_fields(torch_s, batch, device, torch_model.amp))
  result.update(
    torch_round_ms=[1000 * t for t in times["torch"]],
    torch_sequences_per_s=batch / torch_s,
    jax_over_torch=torch_s / step_s,
    round_ratios=[t / j for j, t in zip(times["jax"], times["torch"])],
  )
  float32 = result["dtype"] == "float32" and not torch_model.amp
  if features:
    diff = float(np.max(np.abs(np.asarray(first["jax"]) - first["torch"].float().cpu().numpy())))
    result.update(feature_max_abs_diff=diff, tolerance=FEATURE_TOLERANCE)
  else:
    result.update(torch_first_loss=float(first["torch"]), torch_final_loss=float(last["torch"]))
    diff = abs(result["jax_first_loss"] - result["torch_first_loss"])
    result.update(first_loss_abs_diff=diff, tolerance=LOSS_TOLERANCE)
  tolerance = result["tolerance"]
  result["check"] = ("ok" if diff <= tolerance else "failed") if float32 else "n/a (bfloat16)"
  return result


def report_text(result: dict[str, Any]) -> str:
  """The human-readable lines of text mode (the JSON follows them)."""
  what = (
    "feature extraction (eval forward)"
    if result["method"] == "features"
    else f"{result['method']} step"
  )
  flops = result.get("flops_per_device_step")
  mfu = "n/a" if result.get("mfu") is None else f"{100 * result['mfu']:.1f}%"

  def timing(prefix: str, rounds: list[float], seqs: float, ms: float) -> str:
    return (
      f"{prefix} {seqs:.1f} seq/s, {ms:.1f} ms/step (median of {len(rounds)} round(s): "
      f"{min(rounds):.1f}–{max(rounds):.1f} ms)"
    )

  lines = [
    f"{what}, {result['model']} ({result['dtype']}), batch {result['batch_per_domain']} × "
    f"{result['seq_len']} tokens (synthetic tokens; weights: {result['weights']}) on "
    f"{result['devices']} {result['platform']} device(s) [{result['device_kind']}]",
    timing("jax:  ", result["round_ms"], result["sequences_per_s"], result["step_ms"])
    + f", compile {result['compile_s']:.1f} s, "
    f"{'n/a' if flops is None else f'{flops / 1e9:.1f}'} GFLOP/step/device, MFU {mfu}",
  ]
  if "torch_sequences_per_s" in result:
    lines.append(
      timing(
        "torch:", result["torch_round_ms"], result["torch_sequences_per_s"], result["torch_step_ms"]
      )
      + f" ({result['torch']}, {result['torch_device']}, {result['torch_threads']} threads)"
    )
    ratios = result["round_ratios"]
    lines.append(
      f"jax/torch sequences/s: {result['jax_over_torch']:.2f} "
      f"(per round {min(ratios):.2f}–{max(ratios):.2f})"
    )
    if result["method"] == "features":
      lines.append(
        f"first batch's features: max |jax − torch| {result['feature_max_abs_diff']:.1e} "
        f"(tolerance {result['tolerance']:.0e}): {result['check']}"
      )
    else:
      lines.append(
        f"first step's loss: jax {result['jax_first_loss']:.6f}, torch "
        f"{result['torch_first_loss']:.6f}, |diff| {result['first_loss_abs_diff']:.1e} "
        f"(tolerance {result['tolerance']:.0e}): {result['check']}"
      )
  elif "torch_skipped" in result:
    lines.append(f"torch: skipped ({result['torch_skipped']})")
  start, end = result["loadavg_start"], result["loadavg_end"]
  lines.append(
    f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in start)} at the start, "
    f"{', '.join(f'{x:.2f}' for x in end)} at the end, on {result['cpu_count']} cores"
  )
  return "\n".join(lines)


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


MODES = ("config", "throughput", "features", "text")


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
  elif mode == "text":
    parser.add_argument(
      "--model", default="minilm_l6", help="a text encoder: minilm_l6 (default), bert_tiny, bert"
    )
    parser.add_argument("--batch", type=int, default=32, help="sequences per step, global")
    parser.add_argument("--seq", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--num-classes", type=int, default=TEXT_CLASSES)
    parser.add_argument(
      "--features", action="store_true", help="time feature extraction (eval forward)"
    )
    parser.add_argument(
      "--weights",
      default="auto",
      help="packaged (all-MiniLM-L6-v2), random (the JAX init, copied into the twin) or a "
      "Hugging Face BERT folder; auto: packaged for minilm_l6, else random",
    )
    parser.add_argument(
      "--devices",
      type=int,
      default=1,
      help="JAX runs data-parallel over the first N devices (default 1: the twin runs on one)",
    )
    parser.add_argument(
      "--rounds",
      type=int,
      default=5,
      help="split the timed steps into this many rounds, alternating JAX and PyTorch",
    )
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
  if mode != "config":
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
  if mode == "text" and (args.rounds < 1 or args.devices < 1):
    raise ConfigError(f"--rounds {args.rounds} --devices {args.devices}: each must be >= 1")
  if mode == "config":
    config = cli.load_config(config_spec(args.config, args.task), args.set)
    config.train.progress_bar = False
  elif mode == "text":
    config = text_config(args.model, args.batch, args.dtype, args.set)
    encoder = text_encoder(config, args.num_classes)
    if not 1 <= args.seq <= encoder.max_positions:
      raise ConfigError(
        f"--seq {args.seq}: {args.model} takes 1..{encoder.max_positions} tokens per sequence"
      )
    folder = text_weights(args.weights, args.model)
  else:
    digits = args.model in DIGITS_MODELS
    image_size = args.image_size or (32 if digits else 224)
    method = args.method if mode == "throughput" else "source_only"
    config = throughput_config(args.model, method, args.batch, args.dtype, args.set)
  if args.torch:
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", TORCH_TWIN_JAX_MEM_FRACTION)
  if mode == "text":
    result = text_benchmark(
      config,
      args.seq,
      args.num_classes,
      folder,
      args.steps,
      args.warmup,
      args.rounds,
      devices=args.devices,
      features=args.features,
      torch=args.torch,
    )
    print(report_text(result))
    print(json.dumps(result))
    return 1 if result.get("check") == "failed" else 0
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
