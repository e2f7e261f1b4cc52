"""Linear probe: the pretrained encoder frozen (no backward pass through it), a linear
head on its mean-pooled features trained by AdamW at 1e-3. A head from zero on frozen
features needs a larger step than fine-tuning's 5e-5; 1e-3 was fixed before the runs."""

from jaxdapt.configs import text_fewlabel_config

LR = 1e-3


def get_config(task: str = "k16"):
  config = text_fewlabel_config(task)
  config.optim.preset = "linear_probe"
  config.optim.lr = LR
  return config
