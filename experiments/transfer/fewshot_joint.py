"""Supervised DA: joint cross-entropy on labeled source and k labeled target per class.

`source_only` with data.target_labeled_per_class = k (5 here; 1, 10, -1 = all): each
step forwards a source batch and a labeled-target batch of the same size and
minimises the cross-entropy over both (methods/fewshot.py). No alignment loss:
fewshot_dan.py adds one, mme.py is the semi-supervised method.
  python -m jaxdapt.main --config=experiments/transfer/fewshot_joint.py:uci2ucim --workdir=runs/j5
  python -m jaxdapt.negative_transfer --config experiments/transfer/fewshot_joint.py --seeds 0,1,2
The digits recipe's schedule (jaxdapt.config.digits_config), not tuned for few shots.
"""
from jaxdapt.methods.fewshot import recipe


def get_config(task: str = "uci2ucim"):
  return recipe(task, "source_only")
