"""k-shot transfer with LoRA: the pretrained backbone frozen, low-rank factors and the head train.

From model.init_from (a source-only run or imported weights), method `target_only` on
k = 5 labeled target examples per class (as experiments/transfer/fewshot_finetune.py),
but `peft.method='lora'`: every backbone kernel W computes as W + (alpha / r)·A·B with
A, B new (B = 0, so step 0 is the pretrained model), W and the other backbone parameters
frozen (no gradient, no optimizer state); the head and bottleneck (model.dont_load) train
in full. docs/peft.md has the design and the parameter / optimizer-state counts.
  jaxdapt train --config experiments/digits/source_only.py:uci2ucim --workdir runs/src
  jaxdapt train --config experiments/transfer/peft_lora.py --workdir runs/lora5 \\
      --set model.init_from=runs/src
  jaxdapt optim --config experiments/transfer/peft_lora.py   # what trains
Rank and alpha are config.peft's defaults (r = 4, alpha = 8); the lr and schedule are the
digits recipe's (jaxdapt.configs.digits_config), not tuned for LoRA or for few shots.
"""

from jaxdapt.configs import fewshot_recipe


def get_config(task: str = "uci2ucim"):
  config = fewshot_recipe(task, "target_only")
  config.peft.method = "lora"
  return config
