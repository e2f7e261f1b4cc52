"""JAN (Long et al., 2017): joint MMD over features and softmax predictions.

Product kernel: five Gaussians (bandwidths {1/4..4} × mean sq. distance) on the
features times one Gaussian (bandwidth 1.68) on the softmax; quadratic
(biased) JMMD² estimator; trade-off 1 ramped by the DANN schedule.

Run:  jaxdapt train --config experiments/digits/jan.py --workdir runs/jan
Other tasks: --config experiments/digits/jan.py:uci2ucim
"""

from jaxdapt.configs import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "jan"
  config.method.jan_softmax_bandwidth = 1.68
  return config
