"""The default offline experiment: syn_digits → uci_digits, MCC against source-only.

Trains source-only and MCC with the same recipe (digits_config: the DANN paper's CNN
with BatchNorm and SGD schedule, 1000 steps) and seed, then prints both target
accuracies side by side. A few minutes on 2 CPU cores, plus about a minute for the
first-use generation of the domains.

Run:  jaxdapt train --config experiments/digits/default.py --workdir runs/default

Why MCC: in this repository's all-method table (results/digits_all, 3 seeds, 200 steps)
it is the one single-stage method whose gain over source-only on syn2uci exceeds two
standard deviations (+7.9 points); SHOT gains more (+29.5) but needs a separate
source-training stage, and DAN, the earlier default, was within noise of source-only.
"""

from jaxdapt.configs import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "mcc"
  config.method.mcc_temperature = 2.5
  config.method.weight = 1.0
  config.method.weight_schedule = "constant"
  config.train.baseline = "source_only"
  return config
