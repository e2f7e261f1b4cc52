"""k-shot labelled target: the source-only run (STAGE1) fine-tuned on 16 labelled
target-language descriptions per class (160 rows; `target_only`, head kept), the same
schedule. Supervised DA's cheapest answer: what a few translations' labels buy."""

from jaxdapt.configs import text_config

STAGE1 = "source_only"
K = 16


def get_config(task: str = "en2de"):
  config = text_config(task, "target_only")
  config.data.target_labeled_per_class = K
  config.model.dont_load = ()  # the source model's head: the same ten sections
  return config
