"""SHOT stage 2 (Liang et al., ICML 2020): source-free adaptation of a stage-1 model.

Only target images are seen: the head (source hypothesis) is loaded and
frozen; the feature extractor minimises information maximisation
(mean entropy − entropy of the mean prediction) + β · cross-entropy to
pseudo-labels from prediction-weighted class centroids (cosine distance, one
refinement round), β = 0.3. Centroids are recomputed over the whole target
train split every epoch (refresh_every = 17 steps: 1,078 uci images at batch
64). SGD momentum 0.9, lr 0.01 with the (1 + 10p)^-0.75 decay; 30 epochs.
See jaxdapt/methods/shot.py.

Run both stages (the same task for both):
  jaxdapt train --config experiments/digits/shot_source.py --workdir runs/shot_src
  jaxdapt train --config experiments/digits/shot.py --workdir runs/shot \
      --set model.init_from=runs/shot_src
Other tasks: add :uci2ucim (syn2uci | syn2ucim | uci2ucim) to both --config paths; for a
target other than uci_digits(_m) set --config.method.refresh_every to its epoch length.
"""

from jaxdapt.configs import digits_config

STAGE1 = "shot_source"  # jaxdapt.grid trains this first (same task, seed) and inits from it
GRID_PINNED = (
  "train.steps",
  "train.eval_every",
  "train.checkpoint_every",
  "train.log_every",
)  # the method's own schedule; grid-wide overrides skip these

EPOCH_STEPS = 17  # ⌈1,078 target train images / batch 64⌉


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "shot"
  config.method.shot_beta = 0.3
  config.method.refresh_every = EPOCH_STEPS
  config.model.dont_load = ()  # the stage-1 head is the hypothesis kept fixed
  config.optim.rules = (("model/head/.*", None), (".*", 1.0))
  config.train.steps = 30 * EPOCH_STEPS
  config.train.log_every = EPOCH_STEPS
  config.train.eval_every = 10 * EPOCH_STEPS
  config.train.checkpoint_every = 10 * EPOCH_STEPS
  return config
