"""BitFit (Ben Zaken et al., ACL 2022): only the encoder's biases (and the new head)
train, at PEFT_LR (jaxdapt.configs.text_peft_config)."""

from jaxdapt.configs import text_peft_config


def get_config(task: str = "k16"):
  return text_peft_config(task, method="bitfit")
