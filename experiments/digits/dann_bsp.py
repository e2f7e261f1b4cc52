"""DANN + BSP (Chen et al., 2019): DANN with batch spectral penalization, two stages.

The DANN recipe (dann.py) plus β = 1e-4 (the paper's) times the largest squared
singular value (k = 1) of each domain's batch feature matrix, started from a
source-only model as Transfer-Learning-Library's bsp.py does (it pretrains on
the source, then adapts with BSP; the domain discriminator starts fresh). From
scratch, the penalty (≈ 2 at β = 1e-4 early on) outweighs the cross-entropy and
the source is still underfit when a short schedule ends (README, all-method
table).

Run both stages (the same task for both):
  jaxdapt train --config experiments/digits/source_only.py --workdir runs/so
  jaxdapt train --config experiments/digits/dann_bsp.py --workdir runs/dann_bsp \
      --set model.init_from=runs/so
Other tasks: add :uci2ucim (syn2uci | syn2ucim | uci2ucim) to both --config paths.
"""

from jaxdapt.configs import digits_config

STAGE1 = "source_only"  # jaxdapt.grid trains this first (same task, seed) and inits from it


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "dann"
  config.method.disc_hidden = (100,)
  config.method.bsp_weight = 1e-4
  config.method.bsp_k = 1
  config.model.dont_load = ()  # the whole source model; the discriminator is new
  return config
