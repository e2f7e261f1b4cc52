"""Deep CORAL (Sun & Saenko, 2016): match second-order feature statistics.

Loss ‖C_s − C_t‖²_F / (4d²) on the backbone features, trade-off 1 (ramped).

Run:  jaxdapt train --config experiments/digits/deep_coral.py --workdir runs/coral
Other tasks: --config experiments/digits/deep_coral.py:uci2ucim
"""

from jaxdapt.configs import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "deep_coral"
  return config
