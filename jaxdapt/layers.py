"""The layers of jaxdapt, low to high: a module imports only from its own layer or below.

tests/test_layers.py parses every import of every module (those inside functions
too) and fails, naming the import, when a module imports a layer above its own or when
the imports form a cycle. A module belongs to the first entry whose prefix names it
(a package name covers its modules); every module must belong to one.
"""

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
  # Leaves: typed errors, name registries, parameter paths, the config schema.
  (
    "leaf",
    (
      "jaxdapt",
      "jaxdapt.layers",
      "jaxdapt.errors",
      "jaxdapt.registry",
      "jaxdapt.tree",
      "jaxdapt.config",
    ),
  ),
  # Building blocks: pure functions and data over trees, arrays and files.
  (
    "blocks",
    (
      "jaxdapt.data",
      "jaxdapt.models",
      "jaxdapt.kernels",
      "jaxdapt.weights",
      "jaxdapt.runtime",
      "jaxdapt.losses",
      "jaxdapt.optim",
      "jaxdapt.finetune",
      "jaxdapt.batchnorm",
      "jaxdapt.checkpoint",
      "jaxdapt.sharding",
      "jaxdapt.metrics",
      "jaxdapt.peft",
    ),
  ),
  # The step layer: state, model application, pure jitted steps, feature extraction,
  # loading a model's starting weights.
  ("step", ("jaxdapt.step", "jaxdapt.features", "jaxdapt.init_from")),
  # Adaptation methods and regularisers; analysis functions (no CLI).
  ("methods", ("jaxdapt.methods", "jaxdapt.analysis")),
  # The trainer (build, evaluate, loop, validation) and the shared recipes.
  ("trainer", ("jaxdapt.trainer", "jaxdapt.configs")),
  # The applications behind `jaxdapt <tool>`.
  ("tools", ("jaxdapt.tools", "jaxdapt.__main__")),
)


def layer_of(module: str) -> int:
  """The index in LAYERS of `module` (a dotted name); ValueError if none claims it."""
  best, best_len = None, -1
  for i, (_, prefixes) in enumerate(LAYERS):
    for prefix in prefixes:
      if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
        best, best_len = i, len(prefix)
  if best is None:
    raise ValueError(f"{module}: no layer in jaxdapt/layers.py claims it")
  return best
