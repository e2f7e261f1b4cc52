"""Show what a config trains, before training: `jaxdapt optim --config FILE [--set ...]`.

Prints the parameter groups the optimizer rules give the model (lr multiplier, thaw step,
tensors, parameters, blocks) and how many parameters train. Builds the experiment (so
the data sources are opened) but compiles and trains nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxdapt.tools import cli


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli.parser("optim", __doc__)
  cli.add_config_arguments(parser)
  args = parser.parse_args(argv)
  config = cli.load_config(args.config, args.set)
  from absl import logging

  logging.set_verbosity(logging.WARNING)
  import jax

  from jaxdapt import batchnorm, optim, trainer

  exp = trainer.build(config)
  state = jax.eval_shape(exp.init, jax.random.key(0))
  optim_config = batchnorm.optim_config(config, state.batch_stats)  # + model.bn_mode
  print(
    f"{config.model.name}, optim.{config.optim.name} lr {config.optim.lr:g} "
    f"({config.optim.schedule}), preset {config.optim.preset or '-'}, "
    f"llrd {config.optim.llrd or '-'}"
  )
  print(optim.describe(optim_config, state.params))
  table = optim.multipliers(optim_config, state.params)
  sizes = dict(optim.named_leaves(jax.tree.map(lambda x: x.size, state.params)))
  trained = sum(sizes[n] for n, (_, mult, _) in table.items() if mult is not None)
  print(f"trainable: {trained:,} of {sum(sizes.values()):,} parameters")
  return 0
