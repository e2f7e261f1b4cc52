"""LP-FT (Kumar et al., ICLR 2022): linear probe, then full fine-tuning from the probed head.

Fine-tuning a pretrained backbone under a random head distorts its features
early (large head gradients flow into the backbone); probing first gives the
fine-tuning stage a head that already fits them. Stage 1 (`probe`) freezes the
backbone and bottleneck (`optim.preset='linear_probe'`, so XLA runs no backward
pass through them) and trains a linear head; stage 2 (`finetune`) loads the
whole stage-1 model (`model.dont_load=()`) and trains every parameter.

Run (a pretrained backbone first: an imported one, see README "Pretrained
weights", or a source-only model of the same architecture, as here):
  jaxdapt train --config experiments/digits/source_only.py --workdir runs/pre
  jaxdapt train --config experiments/transfer/lp_ft.py:probe --workdir runs/lp \
      --set model.init_from=runs/pre
  jaxdapt train --config experiments/transfer/lp_ft.py:finetune --workdir runs/lpft \
      --set model.init_from=runs/lp
Another task: `:probe,syn2ucim` and `:finetune,syn2ucim` (default uci2ucim).
With BatchNorm (the digits recipe) stage 1 still updates the frozen backbone's
running statistics (training-mode BN); its parameters stay bit-identical.
Stage lengths and learning rates are the digits recipe's, not tuned for LP-FT.
"""

from jaxdapt.configs import digits_config

STAGES = ("probe", "finetune")


def get_config(arg: str = "probe"):
  stage, _, task = arg.partition(",")
  if stage not in STAGES:
    raise ValueError(f"lp_ft.py: stage {stage!r}; allowed: {', '.join(STAGES)}")
  config = digits_config(task or "uci2ucim")
  config.method.name = "source_only"
  config.model.head_hidden = ()  # a linear head: the probe of LP-FT
  if stage == "probe":
    config.optim.preset = "linear_probe"
    config.train.steps = 500
  else:
    config.model.dont_load = ()  # the whole stage-1 model, probed head included
  return config
