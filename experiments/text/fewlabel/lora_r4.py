"""LoRA (Hu et al., ICLR 2022), rank 4, alpha 8, on every kernel of the encoder
(config.peft's default targets), the new head trained fully, at PEFT_LR."""

from jaxdapt.configs import text_peft_config


def get_config(task: str = "k16"):
  return text_peft_config(task, method="lora", lora_rank=4, lora_alpha=8)
