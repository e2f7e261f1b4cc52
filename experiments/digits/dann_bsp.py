"""DANN + BSP (Chen et al., 2019): DANN with batch spectral penalization.

The DANN recipe (dann.py) plus β = 1e-4 times the largest squared singular
value (k = 1) of each domain's batch feature matrix.

Run:  python -m jaxdapt.main --config=experiments/digits/dann_bsp.py --workdir=runs/dann_bsp
Other tasks: --config=experiments/digits/dann_bsp.py:uci2ucim
"""
from jaxdapt.config import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "dann"
  config.method.disc_hidden = (100,)
  config.method.bsp_weight = 1e-4
  config.method.bsp_k = 1
  return config
