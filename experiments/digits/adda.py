"""ADDA (Tzeng et al., CVPR 2017): adversarial adaptation of a target encoder, two stages.

Stage 1 is source_only. Stage 2 initialises the target encoder from the
source encoder, keeps the source encoder and the classifier fixed, and
alternates a discriminator step (source features vs target features; MLP
500-500-1 with ReLU, the paper's digits discriminator) with a target-encoder
step on the inverted-label GAN loss. Evaluation: target encoder + source
classifier. Adam, lr 2e-4, β1 = 0.5, constant (the authors' code).

Run both stages (the same task for both):
  jaxdapt train --config experiments/digits/source_only.py --workdir runs/so
  jaxdapt train --config experiments/digits/adda.py --workdir runs/adda \
      --set model.init_from=runs/so
Other tasks: add :uci2ucim (syn2uci | syn2ucim | uci2ucim) to both --config paths.
"""

from jaxdapt.configs import digits_config

STAGE1 = "source_only"  # jaxdapt.grid trains this first (same task, seed) and inits from it


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "adda"
  config.method.disc_hidden = (500, 500)
  config.model.dont_load = ()
  config.optim.name = "adam"
  config.optim.lr = 2e-4
  config.optim.b1 = 0.5
  config.optim.schedule = "constant"
  config.optim.rules = (("model/head/.*", None), (".*", 1.0))
  return config
