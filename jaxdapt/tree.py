"""Parameter-path utilities: the '/'-joined names every rule list, regex and report speaks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

PyTree = Any


def path_name(path: Sequence[Any]) -> str:
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def named_leaves(tree: PyTree) -> list[tuple[str, Any]]:
  return [(path_name(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]
