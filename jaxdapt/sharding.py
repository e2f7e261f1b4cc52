"""Data parallelism over a one-axis ('data',) mesh spanning every device of every host.

Parameters are replicated, batches are split along their leading axis. Each
process feeds only its local rows; `global_batch` assembles them into one
global jax.Array, so single-host and multi-host code paths are the same.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PyTree = Any


def maybe_initialize_distributed() -> bool:
  """Joins a multi-process JAX runtime when the launch environment describes one.

  Must run before any device is touched. Explicit coordinator variables
  (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID: Kubernetes,
  tests, hand launches) win; otherwise a SLURM job with several tasks or a
  multi-worker TPU VM pod is auto-detected by JAX. Returns True if initialised.
  """
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize(
      coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
      num_processes=int(env["JAX_NUM_PROCESSES"]) if "JAX_NUM_PROCESSES" in env else None,
      process_id=int(env["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in env else None,
    )
    return True
  tpu_workers = env.get("TPU_WORKER_HOSTNAMES", "")
  if int(env.get("SLURM_NTASKS", "1")) > 1 or "," in tpu_workers:
    jax.distributed.initialize()
    return True
  return False


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def global_batch(local: PyTree, mesh: Mesh) -> PyTree:
  """Host-local numpy batch → global jax.Arrays sharded along 'data'."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local
  )
