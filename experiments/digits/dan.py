"""DAN (Long et al., 2015): multi-kernel MMD between source and target features.

Five Gaussian kernels, bandwidths {1/4, 1/2, 1, 2, 4} × the mean pairwise
squared distance, unbiased MMD², trade-off 1 ramped by the DANN schedule.

Run:  jaxdapt train --config experiments/digits/dan.py --workdir runs/dan
Other tasks: --config experiments/digits/dan.py:uci2ucim
"""

from jaxdapt.configs import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "dan"
  return config
