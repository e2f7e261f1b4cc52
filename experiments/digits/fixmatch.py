"""FixMatch (Sohn et al., NeurIPS 2020) as a UDA baseline on the offline digit tasks.

Labeled source CE + λ · CE of the target's strong view (RandAugment-lite, 2 random ops
at random magnitudes, + Cutout of half the side, made on device) against the hard
pseudo-labels of its weak view (the pipeline's ±2 px shift), where the weak view's
confidence ≥ τ. Paper: τ = 0.95, λ = 1 (constant); the shared digits recipe otherwise
(SGD momentum 0.9, lr 0.01/(1+10p)^0.75, batch 64 source + 64 target, joint BatchNorm
over source, weak and strong views).

Run:  jaxdapt train --config experiments/digits/fixmatch.py --workdir runs/fixmatch
Other tasks: --config experiments/digits/fixmatch.py:uci2ucim
"""

from jaxdapt.configs import digits_config


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "fixmatch"
  config.method.weight = 1.0
  config.method.weight_schedule = "constant"
  config.method.fixmatch_threshold = 0.95
  config.method.fixmatch_ops = 2
  config.method.fixmatch_cutout = 0.5
  config.data.augment = "shift"  # the weak view
  return config
