"""Fine-tuning on k labeled target examples per class with one regulariser against forgetting.

`:REG[,TASK]` with REG one of (jaxdapt/methods/regularizers.py has the papers):
  l2sp   α = 0.1 on ‖w − w⁰‖², β = 0.01 on the new head (Li et al., ICML 2018)
  delta  0.01 × attention-weighted distance of the backbone's output to the start's
         (Li et al., ICLR 2019); start from a probed model (lp_ft.py:probe) for its weights
  bss    η = 0.001 on the smallest singular value of the features (Chen et al., NeurIPS 2019)
  lwf    λ_o = 1, T = 2 distillation from the starting model (Li & Hoiem, 2016); loads the
         whole starting model, head included (model.dont_load = ())
L2-SP's and DELTA's weights are not tuned here. Needs a starting model:
  jaxdapt train --config experiments/digits/source_only.py:uci2ucim --workdir runs/src
  jaxdapt train --config experiments/transfer/regularized.py:l2sp --workdir runs/l2sp \
      --set model.init_from=runs/src
The task defaults to uci2ucim; k = 5 (data.target_labeled_per_class).
"""

from jaxdapt.configs import fewshot_recipe

REGULARIZERS = {
  "l2sp": {"l2sp_alpha": 0.1, "l2sp_beta": 0.01},
  "delta": {"delta_weight": 0.01},
  "bss": {"bss_weight": 0.001, "bss_k": 1},
  "lwf": {"lwf_weight": 1.0, "lwf_temperature": 2.0},
}


def get_config(arg: str = "l2sp"):
  name, _, task = arg.partition(",")
  fields = REGULARIZERS.get(name)
  if fields is None:
    raise ValueError(f"regularized.py: {name!r}; allowed: {', '.join(REGULARIZERS)}")
  config = fewshot_recipe(task or "uci2ucim", "target_only")
  for field, value in fields.items():
    config.regularizer[field] = value
  if name == "lwf":
    config.model.dont_load = ()
  return config
