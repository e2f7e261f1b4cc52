"""MCD (Saito et al., 2018): maximum classifier discrepancy, three sub-steps per step.

Paper digits recipe: Adam lr 2e-4 (constant), generator updated n = 4 times
per step; the second classifier copies the model head's widths.

Run:  jaxdapt train --config experiments/digits/mcd.py --workdir runs/mcd
Other tasks: --config experiments/digits/mcd.py:uci2ucim
"""

from jaxdapt.configs import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "mcd"
  config.method.mcd_generator_steps = 4
  config.method.aux_head_hidden = tuple(config.model.head_hidden)
  config.optim.name = "adam"
  config.optim.lr = 2e-4
  config.optim.schedule = "constant"
  return config
