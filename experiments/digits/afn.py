"""SAFN (Xu et al., 2019): stepwise adaptive feature norm on both domains.

Δr = 1.0, λ = 0.05 (constant), as in the paper; paper SGD recipe otherwise.

Run:  jaxdapt train --config experiments/digits/afn.py --workdir runs/afn
Other tasks: --config experiments/digits/afn.py:uci2ucim
"""

from jaxdapt.configs import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "afn"
  config.method.afn_delta_r = 1.0
  config.method.weight = 0.05
  config.method.weight_schedule = "constant"
  return config
