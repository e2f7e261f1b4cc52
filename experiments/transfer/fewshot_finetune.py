"""Fine-tune on the k labeled target examples per class alone (method `target_only`).

From model.init_from (a source-only run or imported weights; head and bottleneck
re-initialised, model.dont_load) this is the fine-tuning transfer recipe; without
it, the same run from a random init is the baseline of the negative-transfer check.
k = data.target_labeled_per_class (1, 5, 10 or -1 for all; 5 here), drawn per class
from the seed (jaxdapt/data/labeled.py). Evaluation: target test.
  jaxdapt train --config experiments/digits/source_only.py:uci2ucim --workdir runs/src
  jaxdapt train --config experiments/transfer/fewshot_finetune.py --workdir runs/ft5 \
      --set model.init_from=runs/src
  jaxdapt negative-transfer --config experiments/transfer/fewshot_finetune.py \
      --set model.init_from=runs/src --seeds 0,1,2
The digits recipe's schedule (jaxdapt.configs.digits_config), not tuned for few shots.
"""

from jaxdapt.configs import fewshot_recipe


def get_config(task: str = "uci2ucim"):
  return fewshot_recipe(task, "target_only")
