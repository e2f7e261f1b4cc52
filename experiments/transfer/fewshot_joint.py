"""Supervised DA: joint cross-entropy on labeled source and k labeled target per class.

`source_only` with data.target_labeled_per_class = k (5 here; 1, 10, -1 = all): each
step forwards a source batch and a labeled-target batch of the same size and
minimises the cross-entropy over both (methods/fewshot.py). No alignment loss:
fewshot_dan.py adds one, mme.py is the semi-supervised method.
  jaxdapt train --config experiments/transfer/fewshot_joint.py:uci2ucim --workdir runs/j5
  jaxdapt negative-transfer --config experiments/transfer/fewshot_joint.py --seeds 0,1,2
The digits recipe's schedule (jaxdapt.configs.digits_config), not tuned for few shots.
"""

from jaxdapt.configs import fewshot_recipe


def get_config(task: str = "uci2ucim"):
  return fewshot_recipe(task, "source_only")
