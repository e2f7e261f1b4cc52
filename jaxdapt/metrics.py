"""Run logging: JSON lines in the workdir (+ TensorBoard through tensorboardX when installed).

Only process 0 writes. On resume, rows past the restored step are dropped so
the file reads like an uninterrupted run.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax


def _to_python(value: Any) -> Any:
  try:
    return value.item()
  except AttributeError:
    return value


def _complete_rows(text: str) -> list[dict[str, Any]]:
  """The rows of a metrics.jsonl; a last line cut short by a kill is dropped (it is
  past the restored step anyway: rows are written before the checkpoint that covers them)."""
  rows = []
  lines = [line for line in text.split("\n") if line.strip()]
  for i, line in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      if i < len(lines) - 1:
        raise
  return rows


class MetricWriter:
  def __init__(self, workdir: str, resume_step: int | None = None):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.enabled = jax.process_index() == 0
    self.rows: list[dict[str, Any]] = []
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.rows = _complete_rows(f.read())
      self.rows = [r for r in self.rows if resume_step is not None and r["step"] <= resume_step]
      if self.enabled:
        with open(self.path, "w") as f:
          f.writelines(json.dumps(r) + "\n" for r in self.rows)
    self._tb = None
    if self.enabled:
      try:
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:
        pass

  def write(self, step: int, kind: str, values: dict[str, Any]) -> dict[str, Any]:
    row = {"step": int(step), "kind": kind, **{k: _to_python(v) for k, v in values.items()}}
    self.rows.append(row)
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps(row) + "\n")
      if self._tb is not None:
        for k, v in values.items():
          if isinstance(_to_python(v), (int, float)):
            self._tb.add_scalar(f"{kind}/{k}", _to_python(v), step)
    return row

  def of_kind(self, kind: str) -> list[dict[str, Any]]:
    return [r for r in self.rows if r["kind"] == kind]

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
