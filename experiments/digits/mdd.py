"""MDD (Zhang et al., 2019): margin disparity discrepancy with an adversarial head.

Margin γ = 4; the auxiliary head f' copies the model head's widths and takes
the full loss (trade-off η = 1); the features get it through gradient reversal
with coefficient 0.1, ramped by the DANN schedule: the authors' code
(thuml/MDD) and Transfer-Learning-Library both reverse with a warm-start layer
that rises to 0.1. At coefficient 1 the disparity swamped the cross-entropy
(README, all-method table). Paper SGD recipe otherwise.

Run:  jaxdapt train --config experiments/digits/mdd.py --workdir runs/mdd
Other tasks: --config experiments/digits/mdd.py:uci2ucim
"""

from jaxdapt.configs import digits_config
from jaxdapt.methods.mdd import GRL_MAX


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "mdd"
  config.method.mdd_margin = 4.0
  config.method.aux_head_hidden = tuple(config.model.head_hidden)
  config.method.weight = GRL_MAX
  return config
