"""Houlsby adapters (ICML 2019): two bottleneck MLPs of 64 units per layer, after the
attention and feed-forward outputs, and the new head train, at PEFT_LR."""

from jaxdapt.configs import text_peft_config


def get_config(task: str = "k16"):
  return text_peft_config(task, method="adapter", adapter_dim=64)
