"""The only module that talks to Orbax.

One composite checkpoint per saved step: the train state, the data-iterator
position and the config. Two managers share the workdir:
  checkpoints/  the latest `keep` steps (what a rerun resumes from)
  best/         the single best step by source-validation accuracy
Saves are asynchronous; `wait()` before reading or exiting. A checkpoint that
cannot be read raises CheckpointError naming it and leaves it on disk.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging

from jaxdapt.errors import CheckpointError

PyTree = Any
BEST_METRIC = "source_val_acc"


class _IteratorState:
  """Adapts an iterator with dict get_state/set_state to grain's Orbax handler.

  grain's handler writes one `process_{i}-of-{n}.json` per process, so every
  host of a multi-host run saves and restores its own data position.
  """

  def __init__(self, iterator: Any):
    self.iterator = iterator

  def get_state(self) -> bytes:
    return json.dumps(self.iterator.get_state()).encode()

  def set_state(self, state: bytes) -> None:
    self.iterator.set_state(json.loads(state.decode()))

  def start_prefetch(self) -> None:
    pass


def _save_arrays_whole_on_one_host() -> None:
  """With one process, every replica of a replicated array is local, so Orbax's
  replica-parallel save only cuts each array into per-device slices, through an eager
  slice op compiled per parameter shape and device (seconds per save for a ResNet-18
  on 8 local devices), to write the same bytes. Orbax already turns it off on GPU; this
  turns it off on any single-process run. Multi-host runs keep it (each host then
  writes a share)."""
  if jax.process_count() > 1:
    return
  current = ocp.type_handlers.get_type_handler(jax.Array)
  if not getattr(current, "_use_replica_parallel", False):
    return
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax warns about every override
  try:
    ocp.type_handlers.register_type_handler(
      jax.Array,
      ocp.type_handlers.ArrayHandler(
        use_replica_parallel=False,
        array_metadata_store=getattr(current, "_array_metadata_store", None),
      ),
      override=True,
    )
  finally:
    absl_logging.set_verbosity(verbosity)


def _first_line(error: BaseException) -> str:
  """The innermost cause's first line, without TensorStore's spec dump."""
  while (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__
  text = str(error).strip().splitlines()
  line = text[0].split(" See full TensorStore details")[0] if text else ""
  return f"{type(error).__name__}: {line[:200]}"


def _quiet_unraisable(unraisable) -> None:
  """Orbax reads arrays in concurrent coroutines; when one fails, the others' errors are
  'ignored' and would be printed as tracebacks after our one-line error."""
  del unraisable


class _NoOcdbtMergeNotice(logging.Filter):
  """Orbax warns at every save that it found no OCDBT files to merge; with OCDBT off
  (Checkpointer) that is the expected state, not a warning."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "Skipping merge of OCDBT checkpoints" not in record.getMessage()


_NO_OCDBT_NOTICE = _NoOcdbtMergeNotice()


class Checkpointer:
  def __init__(self, workdir: str, keep: int, is_regular: Callable[[int], bool] | None = None):
    workdir = os.path.abspath(workdir)
    _save_arrays_whole_on_one_host()
    logging.getLogger("absl").addFilter(_NO_OCDBT_NOTICE)  # once: a filter is added once
    # One file set per array (zarr, no OCDBT): OCDBT names its data files at random, so
    # two saves of the same state differed byte for byte; this way a resumed run's
    # checkpoints equal an uninterrupted run's (tests/test_preemption.py).
    handlers = lambda: dict(
      state=ocp.StandardCheckpointHandler(use_ocdbt=False),
      data=grain.checkpoint.CheckpointHandler(),
      config=ocp.JsonCheckpointHandler(),
    )
    # Both managers may save the same step at once. Orbax names its cross-process
    # barriers after the step, so without distinct prefixes a multi-process run
    # collides on '_async_write_complete.<step>' and hangs (single-process is unaffected).
    sync = lambda name: ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name)
    # Retention is ours (save): Orbax's max_to_keep would let a preemption checkpoint
    # (a step between regular saves) push out a regular one, so a resumed run would end
    # with other steps on disk than an uninterrupted one.
    self.keep = keep
    self.is_regular = is_regular or (lambda step: True)
    self.latest = ocp.CheckpointManager(
      os.path.join(workdir, "checkpoints"),
      item_handlers=handlers(),
      options=ocp.CheckpointManagerOptions(
        max_to_keep=None,
        create=True,
        cleanup_tmp_directories=True,
        multiprocessing_options=sync("latest"),
      ),
    )
    self.best = ocp.CheckpointManager(
      os.path.join(workdir, "best"),
      item_handlers=handlers(),
      options=ocp.CheckpointManagerOptions(
        max_to_keep=1,
        create=True,
        best_fn=lambda m: m[BEST_METRIC],
        best_mode="max",
        keep_checkpoints_without_metrics=False,
        cleanup_tmp_directories=True,
        multiprocessing_options=sync("best"),
      ),
    )

  @staticmethod
  def _args(state, iterator, config) -> ocp.args.Composite:
    return ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=grain.checkpoint.CheckpointSave(_IteratorState(iterator)),
      config=ocp.args.JsonSave(json.loads(config.to_json())),
    )

  def save(
    self,
    step: int,
    state: PyTree,
    iterator: Any,
    config: ml_collections.ConfigDict,
    metrics: dict[str, float] | None = None,
  ) -> None:
    """Saves state, the iterator's position (per process) and the config at `step`.

    The newest `keep` steps of the schedule (`is_regular`) stay on disk, and a step off it
    (a preemption checkpoint) only until the next save, so the steps on disk do not
    depend on whether the run was stopped and resumed."""
    self.latest.wait_until_finished()
    steps = sorted(self.latest.all_steps())
    regulars = [s for s in steps if self.is_regular(s)]
    room = self.keep - 1 if self.is_regular(step) else self.keep
    stale = [s for s in steps if not self.is_regular(s)] + regulars[: max(0, len(regulars) - room)]
    for old in stale:
      self.latest.delete(old)
    self.latest.save(step, args=self._args(state, iterator, config))
    if metrics is not None and BEST_METRIC in metrics:
      self.best.save(
        step,
        args=self._args(state, iterator, config),
        metrics={k: float(v) for k, v in metrics.items()},
      )

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def saved_config(self) -> dict | None:
    """The config stored with the latest checkpoint (None when there is none)."""
    step = self.latest.latest_step()
    if step is None:
      return None
    try:
      return self.latest.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))[
        "config"
      ]
    except Exception as e:
      raise CheckpointError(
        f"checkpoint step {step} in {self.latest.directory}/{step}: its config could not be "
        f"read ({_first_line(e)}); it was left untouched"
      ) from None

  def restore(
    self,
    abstract_state: PyTree,
    iterator: Any = None,
    step: int | None = None,
    manager: str = "latest",
  ) -> tuple[PyTree, dict]:
    """Restores (state, config_dict) at `step` (default: latest); sets `iterator`'s position."""
    mngr = self.latest if manager == "latest" else self.best
    step = mngr.latest_step() if step is None else step
    if manager == "best" and step is None:
      step = mngr.best_step()
    if step is None:
      raise CheckpointError(f"no checkpoint in {mngr.directory}")
    try:
      items = dict(state=ocp.args.StandardRestore(abstract_state), config=ocp.args.JsonRestore())
      if iterator is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(_IteratorState(iterator))
      restored = mngr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # Orbax raises many types for unreadable files
      hook, sys.unraisablehook = sys.unraisablehook, _quiet_unraisable
      try:
        gc.collect()  # the failed read's other coroutines, now, with the hook quiet
      finally:
        sys.unraisablehook = hook
      raise CheckpointError(
        f"checkpoint step {step} in {mngr.directory}/{step} could not be restored "
        f"({_first_line(e)}); it was left untouched: move it aside to resume from an earlier "
        f"step ({', '.join(map(str, mngr.all_steps()))} on disk) or use a new workdir"
      ) from None
    return restored["state"], restored["config"]

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def abstract_like(tree: PyTree) -> PyTree:
  """ShapeDtypeStructs (with shardings) describing `tree`, as a restore target."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def load_model_variables(workdir: str, step: int | None = None) -> tuple[PyTree, PyTree, int]:
  """(model params, batch_stats, step) of a jaxdapt workdir's checkpoint at `step`
  (default: the latest), as numpy.

  Read without a target structure, so any architecture's run can serve as a
  starting point (`config.model.init_from`); the strict merge checks the fit.
  """
  mngr = ocp.CheckpointManager(
    os.path.join(os.path.abspath(workdir), "checkpoints"), item_names=("state",)
  )
  if step is not None and step not in mngr.all_steps():
    steps = ", ".join(map(str, sorted(mngr.all_steps()))) or "none"
    mngr.close()
    raise CheckpointError(
      f"init_from: no checkpoint at step {step} in {workdir}/checkpoints (steps on disk: {steps})"
    )
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise CheckpointError(f"init_from: no checkpoint in {workdir}/checkpoints")
  path = os.path.join(mngr.directory, str(step), "state")
  try:
    with ocp.PyTreeCheckpointer() as ckptr:
      meta = ckptr.metadata(path).item_metadata
      args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
      tree = ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))
  except Exception as e:
    raise CheckpointError(
      f"init_from: {path} could not be read ({type(e).__name__}: {str(e)[:300]})"
    ) from e
  finally:
    mngr.close()
  return tree["params"]["model"], tree.get("batch_stats", {}), step
