"""The layer rule of jaxdapt/layers.py: no import (inside functions included) reaches a
layer above the importer's, and the module graph has no cycle."""

import ast
import os
import subprocess
import sys

import pytest

from jaxdapt import layers

ROOT = os.path.join(os.path.dirname(__file__), "..", "jaxdapt")


def _modules() -> dict[str, str]:
  mods = {}
  for folder, _, files in os.walk(ROOT):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(folder, f)
        name = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
        mods[name.removesuffix(".__init__")] = path
  return mods


def _imports(name: str, path: str, mods: dict[str, str]) -> list[tuple[int, str]]:
  """(line, imported jaxdapt module) for every import in the file, at any depth."""
  package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
  out = []
  with open(path) as f:
    tree = ast.parse(f.read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
      targets = [f"{base}.{a.name}" for a in node.names] or [base]
      targets = [t if t in mods else base for t in targets]
    else:
      continue
    for target in targets:
      if target.split(".")[0] != "jaxdapt":
        continue
      while target not in mods:
        target = target.rpartition(".")[0]
      # A package's __init__ runs before any of its modules: not an edge of its own.
      if target != name and not name.startswith(target + "."):
        out.append((node.lineno, target))
  return out


def _graph():
  mods = _modules()
  return mods, {m: _imports(m, p, mods) for m, p in mods.items()}


def test_every_module_has_a_layer():
  for module in _modules():
    layers.layer_of(module)  # raises for an unclaimed module


def test_no_module_imports_a_layer_above_its_own():
  mods, edges = _graph()
  bad = []
  for module, imports in edges.items():
    mine = layers.layer_of(module)
    for line, target in imports:
      if layers.layer_of(target) > mine:
        bad.append(
          f"{os.path.relpath(mods[module], os.path.dirname(ROOT))}:{line} imports "
          f"{target} ({layers.LAYERS[layers.layer_of(target)][0]}) from layer "
          f"{layers.LAYERS[mine][0]}"
        )
  assert not bad, "\n".join(bad)


def _cycle(edges: dict[str, list[tuple[int, str]]]) -> list[str] | None:
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(m):
    state[m] = 1
    stack.append(m)
    for _, t in edges[m]:
      if state.get(t) == 1:
        return stack[stack.index(t) :] + [t]
      if t not in state:
        found = visit(t)
        if found:
          return found
    stack.pop()
    state[m] = 2
    return None

  for m in sorted(edges):
    if m not in state:
      found = visit(m)
      if found:
        return found
  return None


def test_no_import_cycle():
  _, edges = _graph()
  cycle = _cycle(edges)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_catch_what_they_are_for():
  """A cycle and an upward import are reported (the checks above can fail)."""
  assert _cycle({"a": [(1, "b")], "b": [(2, "a")]}) == ["a", "b", "a"]
  assert _cycle({"a": [(1, "b")], "b": []}) is None
  assert layers.layer_of("jaxdapt.step") > layers.layer_of("jaxdapt.batchnorm")
  assert layers.layer_of("jaxdapt.trainer.loop") > layers.layer_of("jaxdapt.methods.dann")
  with pytest.raises(ValueError):
    layers.layer_of("elsewhere.module")


def _environment_changed_by(first: str, then: str) -> bool:
  probe = (
    f"import os, json; {first}; before = dict(os.environ); {then}; "
    "print(json.dumps(dict(os.environ) != before))"
  )
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run(
    [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
  ).stdout.split()
  return out[-1] == "true"


def test_importing_jaxdapt_leaves_the_environment_unchanged():
  assert not _environment_changed_by("pass", "import jaxdapt")
  # jax sets TF_CPP_MIN_LOG_LEVEL and TPU_SKIP_MDS_QUERY when imported; jaxdapt's own
  # modules add nothing to that (no XLA_FLAGS, no allocator settings).
  deps = "import jax, flax, optax, grain, orbax.checkpoint, tensorflow_datasets"
  assert not _environment_changed_by(deps, "import jaxdapt.trainer, jaxdapt.tools.main")
  # ... whereas the command's process setup does change it (so this probe can fail),
  # where this jaxlib has a default flag.
  from jaxdapt.runtime import xla_defaults

  if xla_defaults.with_defaults("", xla_defaults._jaxlib_version()):  # noqa: SLF001
    assert _environment_changed_by(deps, "import jaxdapt.runtime; jaxdapt.runtime.setup()")
