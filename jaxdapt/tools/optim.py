"""Show what a config trains, before training: `jaxdapt optim --config FILE [--set ...]`.

Prints the parameter groups the optimizer rules give the model (lr multiplier, thaw step,
tensors, parameters, blocks; with the rules model.bn_mode and config.peft add), how many
parameters train, and the bytes of the optimizer state (frozen groups hold none). Builds
the experiment (so the data sources are opened) but compiles and trains nothing.
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

  from jaxdapt import optim, trainer
  from jaxdapt.trainer.build import optimizer_config

  exp = trainer.build(config)
  state = jax.eval_shape(exp.init, jax.random.key(0))
  optim_config = optimizer_config(config, state.batch_stats)  # + model.bn_mode, peft
  print(
    f"{config.model.name}, optim.{config.optim.name} lr {config.optim.lr:g} "
    f"({config.optim.schedule}), preset {config.optim.preset or '-'}, "
    f"llrd {config.optim.llrd or '-'}, peft {config.peft.method or '-'}"
  )
  print(optim.describe(optim_config, state.params))
  table = optim.multipliers(optim_config, state.params)
  sizes = dict(optim.named_leaves(jax.tree.map(lambda x: x.size, state.params)))
  trained = sum(sizes[n] for n, (_, mult, _) in table.items() if mult is not None)
  print(f"trainable: {trained:,} of {sum(sizes.values()):,} parameters")
  nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  print(
    f"optimizer state: {nbytes(state.opt_state):,} bytes "
    f"(parameters: {nbytes(state.params):,} bytes)"
  )
  return 0
