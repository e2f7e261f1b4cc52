"""Semi-supervised DA: joint cross-entropy on source + k labeled target, plus DAN's MK-MMD.

`dan` (Long et al., ICML 2015; the alignment method with a gain on uci2ucim in the
README's table) with data.target_labeled_per_class = k (5 here): the supervised
loss covers both labeled batches, MK-MMD aligns source and unlabeled target
features (the unlabeled pool keeps the labeled examples, jaxdapt/data/labeled.py).
Another alignment: --set method.name=dann (or deep_coral, cdan, ...).
  jaxdapt train --config experiments/transfer/fewshot_dan.py:uci2ucim --workdir runs/d5
"""

from jaxdapt.configs import fewshot_recipe


def get_config(task: str = "uci2ucim"):
  return fewshot_recipe(task, "dan")
