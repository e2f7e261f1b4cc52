"""Random-access views of some rows of a source (fixed subsets for scores and few-shot)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class Subset(Sequence):
  """Random-access view of some rows of a source (what `data.eval_batches` needs)."""

  def __init__(self, source: Any, indices: np.ndarray):
    self.source, self.indices = source, np.asarray(indices)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int):
    return self.source[int(self.indices[i])]


def subset(source: Any, limit: int | None, rng: np.random.Generator) -> Any:
  """At most `limit` rows of `source`, sorted, drawn without replacement (None: all)."""
  if limit is None or len(source) <= limit:
    return source
  return Subset(source, np.sort(rng.choice(len(source), size=limit, replace=False)))
