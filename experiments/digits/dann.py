"""DANN (Ganin & Lempitsky, 2015) on the offline digit tasks.

Paper recipe: gradient reversal on the backbone features with
λ_p = 2/(1+exp(-10p)) - 1, domain classifier MLP, SGD momentum 0.9,
lr 0.01/(1+10p)^0.75, batch 64 source + 64 target.

Run:  jaxdapt train --config experiments/digits/dann.py --workdir runs/dann
Other tasks: --config experiments/digits/dann.py:uci2ucim
"""

from jaxdapt.configs import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "dann"
  config.method.disc_hidden = (100,)
  return config
