"""MCC with LoRA: mcc.py's method with the encoder frozen and LoRA factors (rank 4,
alpha 8, every encoder kernel) plus the new head trained, at the text studies' PEFT_LR
(jaxdapt.configs). Issue 22's unsupervised-DA row: does adapting 0.8 % of the parameters
across languages keep full fine-tuning's accuracy?"""

from jaxdapt.configs import PEFT_LR, text_config


def get_config(task: str = "en2de"):
  config = text_config(task, "mcc")
  config.peft.method = "lora"
  config.peft.lora_rank = 4
  config.peft.lora_alpha = 8
  config.optim.lr = PEFT_LR
  return config
