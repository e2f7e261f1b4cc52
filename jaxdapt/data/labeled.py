"""k labeled examples per class: the target labels of supervised / semi-supervised DA.

`data.target_labeled_per_class = k` takes k examples of each class from the
target's training split (k = -1: all of them), stratified and drawn from the
run's seed, so one seed always sees the same labeled examples (baseline and
transfer recipe of a seed share them: jaxdapt/negative_transfer.py pairs them).
The unlabeled target stream is not reduced: as in MME (Saito et al., ICCV 2019)
and semi-supervised learning generally, the labeled examples stay in the
unlabeled pool too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxdapt.data.subset import Subset
from jaxdapt.errors import ConfigError

ALL = -1
# Mixed into the seed so the draw does not repeat other draws seeded by the run's seed.
_STREAM = 0x1ABE1ED


def select_per_class(labels: Sequence[int], k: int, seed: int) -> np.ndarray:
  """Sorted indices of exactly k examples of every class present (k = -1: all).

  Each class's examples are permuted by one generator seeded by (seed, stream),
  classes in increasing order, and the first k kept: deterministic per seed.
  """
  labels = np.asarray(labels)
  if k == ALL:
    return np.arange(len(labels))
  if not isinstance(k, int) or isinstance(k, bool) or k < 1:
    raise ConfigError(
      f"data.target_labeled_per_class: must be a positive integer or -1 (all), got {k!r}"
    )
  rng = np.random.default_rng((seed, _STREAM))
  picked = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    if len(members) < k:
      raise ConfigError(
        f"data.target_labeled_per_class: {k} examples of class {int(c)} "
        f"asked, the target's training split has {len(members)}"
      )
    picked.append(rng.permutation(members)[:k])
  return np.sort(np.concatenate(picked))


def labeled_subset(source: Any, k: int, seed: int) -> Any:
  """The k-per-class labeled view of `source` (reads every label once)."""
  labels = [source[i]["label"] for i in range(len(source))]
  return Subset(source, select_per_class(labels, k, seed))
