"""LoRA (Hu et al., ICLR 2022), rank 16, on every kernel of the encoder, the new head
trained fully, at PEFT_LR. Alpha stays 8 as at rank 4 (scale alpha/r 0.5 instead of 2):
Hu et al. keep alpha fixed across ranks rather than retuning the lr, as the digits PEFT
table does (jaxdapt/tools/transfer_table.py, LORA_ALPHA)."""

from jaxdapt.configs import text_peft_config


def get_config(task: str = "k16"):
  return text_peft_config(task, method="lora", lora_rank=16, lora_alpha=8)
