"""The same architecture, data and schedule as finetune.py from a random initialisation
(BERT's normal(0.02)): what the pretrained weights are worth at k labels per class."""

from jaxdapt.configs import text_fewlabel_config


def get_config(task: str = "k16"):
  config = text_fewlabel_config(task)
  config.model.init_from = ""
  return config
