"""Data parallelism over a one-axis ('data',) mesh spanning every device of every host.

Parameters are replicated, batches are split along their leading axis. Each
process feeds only its local rows; `global_batch` assembles them into one
global jax.Array, so single-host and multi-host code paths are the same.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PyTree = Any


def maybe_initialize_distributed() -> None:
  """Calls jax.distributed.initialize() when a multi-process launch is detected.

  Must run before any device is touched. Detection: an explicit coordinator
  (JAX_COORDINATOR_ADDRESS) or a SLURM job with more than one task; TPU VM
  pods are detected by JAX itself when initialize() is called without args.
  """
  if os.environ.get("JAX_COORDINATOR_ADDRESS") or int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    jax.distributed.initialize()


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
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)
