"""Target oracle: every label of the target language's train split (the upper bound;
not an adaptation method), the same encoder and schedule."""

from jaxdapt.configs import text_config


def get_config(task: str = "en2de"):
  return text_config(task, "target_oracle")
