"""SIGTERM → checkpoint and stop at the next log step, agreed by every process."""

from __future__ import annotations

import signal

import jax
import numpy as np
from jax.experimental import multihost_utils


class Preemption:
  """Turns SIGTERM into a request to checkpoint and exit at the next log step.

  With several processes the signal reaches them at different steps, and a
  process that entered the checkpoint save alone would wait forever on the
  others: they agree at each log step instead (one tiny all-gather), and all
  stop there if any of them was signalled."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def should_stop(self, step: int, every: int) -> bool:
    """Whether to checkpoint and stop after `step`: only at a log step (every `every`
    steps), so the stopped run's metrics.jsonl ends on a complete train row and the
    resumed run writes exactly the rows an uninterrupted run would."""
    if step % every:
      return False
    if jax.process_count() == 1:
      return self.requested
    flags = multihost_utils.process_allgather(np.asarray([self.requested], np.int32))
    return bool(np.asarray(flags).any())

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
