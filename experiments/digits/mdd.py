"""MDD (Zhang et al., 2019): margin disparity discrepancy with an adversarial head.

Margin γ = 4; the auxiliary head f' copies the model head's widths; GRL
coefficient 1 ramped by the DANN schedule; paper SGD recipe otherwise.

Run:  python -m jaxdapt.main --config=experiments/digits/mdd.py --workdir=runs/mdd
Other tasks: --config=experiments/digits/mdd.py:uci2ucim
"""
from jaxdapt.config import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "mdd"
  config.method.mdd_margin = 4.0
  config.method.aux_head_hidden = tuple(config.model.head_hidden)
  return config
