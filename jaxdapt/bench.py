"""Throughput of the training step: compile time, steps/s, images/s.

  python -m jaxdapt.bench --config experiments/digits/dann.py --steps 100
  python -m jaxdapt.bench --config experiments/digits/dann.py --pipeline   # real input pipeline

Synthetic mode feeds one fixed on-device batch (the step alone); pipeline mode
feeds batches from the grain pipeline (step + host input). Images/s counts
every image the step forwards (source + target for adaptation methods).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Sequence

import jax


def benchmark(config, steps: int, warmup: int, pipeline: bool) -> dict[str, float]:
  from jaxdapt import sharding, train
  exp = train.build(config)
  state = exp.init(jax.random.key(config.seed))
  its = train.train_iterators(exp)
  domains = exp.method.domains
  first = sharding.global_batch({d: next(its)[d] for d in domains}, exp.mesh)

  def next_batch():
    if not pipeline:
      return first
    local = next(its)
    return sharding.global_batch({d: local[d] for d in domains}, exp.mesh)

  t0 = time.perf_counter()
  compiled = exp.update.lower(state, first).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    state, metrics = compiled(state, next_batch())
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, next_batch())
  jax.block_until_ready(metrics)
  elapsed = time.perf_counter() - t0
  images = config.data.batch_size * len(domains) * steps
  return {"method": config.method.name, "model": config.model.name,
          "batch_per_domain": config.data.batch_size, "domains": len(domains),
          "input": "pipeline" if pipeline else "synthetic", "compile_s": compile_s,
          "step_ms": 1000 * elapsed / steps, "steps_per_s": steps / elapsed,
          "images_per_s": images / elapsed, "devices": jax.device_count(),
          "platform": jax.devices()[0].platform, "device_kind": jax.devices()[0].device_kind,
          "host": platform.processor() or platform.machine(), "jax": jax.__version__}


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="experiments/digits/dann.py")
  parser.add_argument("--task", default="syn2uci")
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--warmup", type=int, default=10)
  parser.add_argument("--pipeline", action="store_true", help="feed the real grain pipeline")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON")
  args = parser.parse_args(argv)
  from jaxdapt.grid import load_config
  import os
  method = os.path.splitext(os.path.basename(args.config))[0]
  config = load_config(method, args.task, os.path.dirname(args.config), args.set)
  config.train.progress_bar = False
  result = benchmark(config, args.steps, args.warmup, args.pipeline)
  print(f"{result['method']} step, {result['model']}, batch {result['batch_per_domain']}×"
        f"{result['domains']} ({result['input']} input) on {result['devices']} "
        f"{result['platform']} device(s) [{result['device_kind']}]: "
        f"{result['steps_per_s']:.2f} steps/s, {result['images_per_s']:.0f} images/s, "
        f"{result['step_ms']:.1f} ms/step, compile {result['compile_s']:.1f} s")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
