"""Writes docs/protocols.md's tables from the protocol configs' PUBLISHED numbers.

  python experiments/protocols/table.py > docs/protocols-tables.md

One table per protocol: a row of published numbers per method, and under it an empty
'ours' row to fill from runs (never from guesses). tests/test_protocols.py checks that
docs/protocols.md holds exactly these tables.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

PROTOCOLS = ("digits_tllib", "digits_dann", "office31", "office_home", "visda2017", "domainnet")
HERE = os.path.dirname(os.path.abspath(__file__))


def load(name: str) -> ModuleType:
  """A protocol config module by name (config files are not a package)."""
  spec = importlib.util.spec_from_file_location(
    f"protocols_{name}", os.path.join(HERE, f"{name}.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def table(module: ModuleType, name: str) -> str:
  published = module.PUBLISHED
  columns = list(next(iter(published.values()))) if published else list(module.TASKS)
  head = ["method", ""] + columns
  lines = [
    f"### {module.TITLE}",
    "",
    f"`experiments/protocols/{name}.py`; published: {module.SOURCE}.",
    "",
    "| " + " | ".join(head) + " |",
    "|" + "---|" * len(head),
  ]
  blank = [""] * (len(head) - 2)
  if not published:
    lines.append("| " + " | ".join(["(all)", "published"] + ["to be filled"] * len(blank)) + " |")
    lines.append("| " + " | ".join(["", "ours"] + blank) + " |")
  for method, row in published.items():
    values = [f"{row[c]:.1f}" for c in columns]
    lines.append("| " + " | ".join([method, "published"] + values) + " |")
    lines.append("| " + " | ".join(["", "ours"] + blank) + " |")
  return "\n".join(lines)


def tables() -> str:
  return "\n\n".join(table(load(name), name) for name in PROTOCOLS) + "\n"


if __name__ == "__main__":
  print(tables(), end="")
