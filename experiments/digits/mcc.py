"""MCC (Jin et al., 2020): minimum class confusion on the target batch.

Temperature 2.5, entropy-weighted examples, row-normalised class confusion;
trade-off μ = 1, constant (the paper uses no ramp). Paper SGD recipe.

Run:  jaxdapt train --config experiments/digits/mcc.py --workdir runs/mcc
Other tasks: --config experiments/digits/mcc.py:uci2ucim
"""

from jaxdapt.configs import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "mcc"
  config.method.mcc_temperature = 2.5
  config.method.weight = 1.0
  config.method.weight_schedule = "constant"
  return config
