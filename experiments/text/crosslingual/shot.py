"""SHOT (Liang et al., ICML 2020) across languages: source-free adaptation of the
source-only run (STAGE1; the grid trains it first for the same task and seed).

The head (source hypothesis) is loaded and frozen; the encoder minimises information
maximisation + 0.3 · cross-entropy to centroid pseudo-labels, recomputed over the whole
target train split every 100 steps (at 0 and 100 of 200: about a third of an epoch of the
German split at 16 rows per step; the paper refreshes once an epoch). Stage 1 is plain
source_only, without the paper's label smoothing, so that one run serves both rows.
"""

from jaxdapt.configs import text_config

STAGE1 = "source_only"


def get_config(task: str = "en2de"):
  config = text_config(task, "shot")
  config.method.shot_beta = 0.3
  config.method.refresh_every = 100
  config.model.dont_load = ()  # the stage-1 head is the hypothesis kept fixed
  config.optim.rules = (("model/head/.*", None), (".*", 1.0))
  return config
