"""AdaBN (Li et al., 2016/2018): a source-only model evaluated on the target with its
BatchNorm statistics recomputed on the target train images (no labels, no training on
the target). Source validation keeps the source statistics.

The same evaluation after any other method: --set train.eval_target_bn=target
(e.g. experiments/digits/dann.py with it reports DANN + AdaBN).

Run:  jaxdapt train --config experiments/digits/adabn.py --workdir runs/adabn
Other tasks: --config experiments/digits/adabn.py:uci2ucim
"""

from jaxdapt.configs import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)  # BatchNorm after each conv
  config.method.name = "adabn"
  return config
