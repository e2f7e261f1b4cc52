"""Target oracle: train on the target's labeled train split (the upper bound, not DA).

Run:  jaxdapt train --config experiments/digits/target_oracle.py --workdir runs/oracle
Other tasks: --config experiments/digits/target_oracle.py:uci2ucim
"""

from jaxdapt.configs import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "target_oracle"
  return config
