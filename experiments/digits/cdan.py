"""CDAN (Long et al., 2018) on the offline digit tasks.

Discriminator on the randomized multilinear map of features (1200-d) and
softmax (10): 12000 > 4096, so T⊙ with d = 1024. GRL coefficient 1 ramped by
the DANN schedule, discriminator MLP (100,) as DANN's, paper SGD recipe.

Run:  jaxdapt train --config experiments/digits/cdan.py --workdir runs/cdan
Other tasks: --config experiments/digits/cdan.py:uci2ucim
"""

from jaxdapt.configs import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "cdan"
  config.method.disc_hidden = (100,)
  config.method.cdan_random_dim = 1024
  return config
