"""Source-only: train on labeled syn_digits, test on the target (the lower bound).

Run:  jaxdapt train --config experiments/digits/source_only.py --workdir runs/so
Other tasks: --config experiments/digits/source_only.py:uci2ucim (syn2uci | syn2ucim | uci2ucim).
Expected: see the README results table (regenerate with jaxdapt grid).
"""

from jaxdapt.configs import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "source_only"
  return config
