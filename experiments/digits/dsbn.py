"""Domain-specific BatchNorm (Chang et al., CVPR 2019) under the DANN recipe (dann.py).

Every BatchNorm layer keeps a scale/bias and running statistics per domain; convs and
dense layers are shared; source splits are evaluated with the source branch, target
splits with the target branch. method.bn='dsbn' works with any method that trains on
both domains (not with those adapting a trained one-branch model: SHOT, TENT, ADDA),
e.g. --config experiments/digits/fixmatch.py --set method.bn=dsbn for DSBN +
pseudo-label self-training, close to the paper's second stage.

Run:  jaxdapt train --config experiments/digits/dsbn.py --workdir runs/dsbn
Other tasks: --config experiments/digits/dsbn.py:uci2ucim
"""

from jaxdapt.configs import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "dann"
  config.method.bn = "dsbn"
  return config
