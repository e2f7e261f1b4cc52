"""Target entropy minimisation (Grandvalet & Bengio, 2004) as an adaptation baseline.

Mean prediction entropy on the target batch, trade-off 0.1 ramped by the
DANN schedule (so the source classifier forms before the target is pushed).

Run:  jaxdapt train --config experiments/digits/entropy_min.py --workdir runs/entmin
Other tasks: --config experiments/digits/entropy_min.py:uci2ucim
"""

from jaxdapt.configs import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "entropy_min"
  config.method.weight = 0.1
  config.method.weight_schedule = "dann"
  return config
