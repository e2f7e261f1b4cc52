"""The only module that talks to Orbax.

One composite checkpoint per saved step: the train state, the data-iterator
position and the config. Two managers share the workdir:
  checkpoints/  the latest `keep` steps (what a rerun resumes from)
  best/         the single best step by source-validation accuracy
Saves are asynchronous; `wait()` before reading or exiting. A checkpoint that
cannot be read raises CheckpointError naming it and leaves it on disk.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from jaxdapt.errors import CheckpointError

PyTree = Any
BEST_METRIC = "source_val_acc"


class Checkpointer:

  def __init__(self, workdir: str, keep: int):
    workdir = os.path.abspath(workdir)
    item_names = ("state", "data", "config")
    self.latest = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"), item_names=item_names,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    self.best = ocp.CheckpointManager(
        os.path.join(workdir, "best"), item_names=item_names,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda m: m[BEST_METRIC], best_mode="max",
            keep_checkpoints_without_metrics=False))

  @staticmethod
  def _args(state, data_state, config) -> ocp.args.Composite:
    return ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        config=ocp.args.JsonSave(config.to_dict() if hasattr(config, "to_dict") else config))

  def save(self, step: int, state: PyTree, data_state: dict, config: ml_collections.ConfigDict,
           metrics: dict[str, float] | None = None) -> None:
    self.latest.save(step, args=self._args(state, data_state, config))
    if metrics is not None and BEST_METRIC in metrics:
      self.best.save(step, args=self._args(state, data_state, config),
                     metrics={k: float(v) for k, v in metrics.items()})

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def restore(self, abstract_state: PyTree, step: int | None = None,
              manager: str = "latest") -> tuple[PyTree, dict, dict]:
    """Restores (state, data_state, config_dict) at `step` (default: latest)."""
    mngr = self.latest if manager == "latest" else self.best
    step = mngr.latest_step() if step is None else step
    if manager == "best" and step is None:
      step = mngr.best_step()
    if step is None:
      raise CheckpointError(f"no checkpoint in {mngr.directory}")
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          data=ocp.args.JsonRestore(),
          config=ocp.args.JsonRestore()))
    except Exception as e:  # Orbax raises many types for unreadable files
      raise CheckpointError(
          f"checkpoint {mngr.directory}/{step} could not be restored ({type(e).__name__}: "
          f"{str(e)[:300]}). It was left untouched; move it aside to resume from an earlier "
          f"step ({', '.join(map(str, mngr.all_steps()))} on disk) or use a new workdir.") from e
    return restored["state"], restored["data"], restored["config"]

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def abstract_like(tree: PyTree) -> PyTree:
  """ShapeDtypeStructs (with shardings) describing `tree`, as a restore target."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
