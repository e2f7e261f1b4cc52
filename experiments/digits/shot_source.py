"""SHOT stage 1 (Liang et al., ICML 2020): the source model, source-only with label smoothing.

Label smoothing ε = 0.1 on the source cross-entropy (the paper's source
training; it makes the source hypothesis better calibrated for stage 2).
Otherwise the digits recipe of source_only.py.

Run:  jaxdapt train --config experiments/digits/shot_source.py --workdir runs/shot_src
then stage 2: see experiments/digits/shot.py.
"""

from jaxdapt.configs import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "source_only"
  config.method.label_smoothing = 0.1
  return config
