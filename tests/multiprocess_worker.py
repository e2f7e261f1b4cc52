"""One process of a (multi-process) CPU training run, for tests/test_multiprocess.py.

  python tests/multiprocess_worker.py DATA_DIR WORKDIR OUT_JSON

The launching test sets XLA_FLAGS (fake CPU devices) and, for a multi-process
run, JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID. Every
process trains; process 0 writes the summary, the train losses, the eval rows
and per-leaf checksums of the final parameters to OUT_JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jaxdapt.runtime

jaxdapt.runtime.setup()  # as the `jaxdapt` command does, before JAX starts

import jax  # noqa: E402

T0 = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def mp_config(data_dir: str):
  """tests/test_train.py's tiny DANN run, with BatchNorm (cross-device statistics)."""
  from test_train import tiny_config

  c = tiny_config(data_dir, "dann")
  c.model.norm = "batch"
  c.data.prefetch = 0  # no grain threads: less to go wrong, same batches
  c.train.selection_points = 40  # the label-free sel_* criteria gather features across processes
  return c


def params_checksum(params) -> dict[str, list[float]]:
  """Per-leaf sums (and absolute sums), so a mismatch names the parameter."""
  import numpy as np

  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(params)):
    name = jax.tree_util.keystr(path)
    leaf = np.asarray(leaf, np.float64)
    out[name] = [float(leaf.sum()), float(np.abs(leaf).sum())]
  return out


def log(message: str) -> None:
  """Progress on stderr (the test shows it when a run fails or hangs)."""
  print(
    f"[{time.perf_counter() - T0:6.1f} s] process {jax.process_index()}: {message}",
    file=sys.stderr,
    flush=True,
  )


def main(data_dir: str, workdir: str, out_path: str) -> None:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from jaxdapt import checkpoint, sharding, trainer

  distributed = sharding.maybe_initialize_distributed()
  log(
    f"of {jax.process_count()}, distributed={distributed}, local devices "
    f"{jax.local_device_count()}, global {jax.device_count()}"
  )
  config = mp_config(data_dir)
  summary = trainer.train_and_evaluate(config, workdir)
  log("trained")
  exp = trainer.build(config)
  ckpt = checkpoint.Checkpointer(workdir, config.train.keep_checkpoints)
  state, _ = ckpt.restore(jax.eval_shape(exp.init, jax.random.key(config.seed)))
  ckpt.close()
  result = {
    "summary": summary,
    "params": params_checksum(state.params),
    "batch_stats": params_checksum(state.batch_stats),
    "process_count": jax.process_count(),
    "device_count": jax.device_count(),
  }
  if jax.process_index() == 0:
    rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    result["train"] = [
      {k: r[k] for k in ("step", "loss", "cls_loss", "transfer_loss")}
      for r in rows
      if r["kind"] == "train"
    ]
    result["eval"] = [r for r in rows if r["kind"] == "eval"]
    with open(out_path, "w") as f:
      json.dump(result, f)
  log("done")


if __name__ == "__main__":
  main(*sys.argv[1:4])
