"""MME, minimax entropy (Saito et al., ICCV 2019) with k labeled target examples per class.

The paper's hyperparameters: cosine classifier with temperature T = 0.05
(model.cosine_temperature) on the backbone's features (a linear head,
model.head_hidden = ()), entropy trade-off λ = 0.1 held constant (method.weight,
method.weight_schedule). The paper reports 1- and 3-shot; k = 5 here like the
other few-shot recipes (--set data.target_labeled_per_class=3). The rest is
the digits recipe (jaxdapt.configs.digits_config), not tuned for MME.
  jaxdapt train --config experiments/transfer/mme.py:uci2ucim --workdir runs/mme5
"""

from jaxdapt.configs import fewshot_recipe


def get_config(task: str = "uci2ucim"):
  config = fewshot_recipe(task, "mme")
  config.method.weight = 0.1
  config.method.weight_schedule = "constant"
  config.model.head_hidden = ()
  config.model.cosine_temperature = 0.05
  return config
