"""LP-FT (Kumar et al., ICLR 2022): fine-tuning (finetune.py's recipe) from the linear
probe's run (STAGE1), its probed head included, so the first gradients reaching the
encoder come from a head that already fits its features."""

from jaxdapt.configs import text_fewlabel_config

STAGE1 = "linear_probe"


def get_config(task: str = "k16"):
  config = text_fewlabel_config(task)
  config.model.dont_load = ()
  return config
