"""MCC (Jin et al., ECCV 2020) across languages: minimum class confusion on the
unlabelled target batch, temperature 2.5 (the paper's)."""

from jaxdapt.configs import text_config


def get_config(task: str = "en2de"):
  return text_config(task, "mcc")
