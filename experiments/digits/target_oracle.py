"""Target oracle: train on the target's labeled train split (the upper bound, not DA).

Run:  python -m jaxdapt.main --config=experiments/digits/target_oracle.py --workdir=runs/oracle
Other tasks: --config=experiments/digits/target_oracle.py:uci2ucim
"""
from jaxdapt.config import base_config, with_task


def get_config(task: str = "syn2uci"):
  config = with_task(base_config(), task)
  config.method.name = "target_oracle"
  return config
