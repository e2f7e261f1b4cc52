"""k-shot transfer with BitFit (`:bitfit`) or the head alone (`:head_only`).

From model.init_from, method `target_only` on k = 5 labeled target examples per class
(as experiments/transfer/fewshot_finetune.py), with `peft.method`:
  bitfit     every bias trains (Zaken et al., ACL 2022: Dense/Conv biases and the
             BatchNorm biases β), the rest of the backbone is frozen;
  head_only  the backbone is frozen whole.
In both the head and bottleneck (model.dont_load) train in full, and the frozen
parameters get no gradient and no optimizer state (docs/peft.md).
  jaxdapt train --config experiments/digits/source_only.py:uci2ucim --workdir runs/src
  jaxdapt train --config experiments/transfer/peft_bitfit.py:bitfit --workdir runs/bitfit5 \\
      --set model.init_from=runs/src
Another task: `:bitfit,syn2ucim` (default uci2ucim). With BatchNorm (the digits recipe)
the frozen backbone's running statistics still update (training-mode BN); freeze them
too with --set model.bn_mode=frozen_stats. The lr and schedule are the digits recipe's,
not tuned.
"""

from jaxdapt.configs import fewshot_recipe

METHODS = ("bitfit", "head_only")


def get_config(arg: str = "bitfit"):
  method, _, task = arg.partition(",")
  if method not in METHODS:
    raise ValueError(f"peft_bitfit.py: {method!r}; allowed: {', '.join(METHODS)}")
  config = fewshot_recipe(task or "uci2ucim", "target_only")
  config.peft.method = method
  return config
