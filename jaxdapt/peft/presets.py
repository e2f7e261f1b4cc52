"""config.peft.method → the optimizer rule that freezes what a PEFT method does not train.

Each method is an optimizer preset compiled like batchnorm.optim_config's frozen-BN rule:
one `(regex, None)` rule in front of the run's own rule list (optim.rules or the
optim.preset it names, refined by optim.llrd as usual). So the frozen model parameters go
through `optax.set_to_zero` (no optimizer state), the step differentiates only what
trains (optim.value_and_grad), and the run's multipliers, LLRD and unfreezing still apply
to what trains. What trains in every method: the head and bottleneck (the task layers,
'model/head/...', 'model/bottleneck/...'), whatever model.dont_load re-initialises (a frozen
random layer is useless), and the method's parameters ('method/...', e.g. DANN's domain
discriminator). On top of that:

  lora       the LoRA factors (peft/lora.py); base kernels, biases, norms frozen
  bitfit     every bias (Zaken et al., ACL 2022): Dense/Conv biases and the BatchNorm /
             LayerNorm biases (β); norm scales (γ) frozen
  head_only  nothing more (a probe of the head and bottleneck)
  adapter    the bottleneck adapters the model builds with peft.adapter_dim (peft/adapter.py)
  vpt_*      the ViT's prompt tokens (peft.prompt_tokens; shallow: input only, deep: per block)

adapter and vpt_* are model options as well (`model_options`): trainer.build passes them to
the backbone, which then has the new parameters this rule leaves trainable.

A method with its own update step trains the intersection of its subset and this
(methods/subset.py): SHOT keeps the head fixed, so `head_only` then trains only the
bottleneck (nothing, without one), and TENT (BatchNorm scale/bias) trains only the biases
under `bitfit` and nothing under `lora` or `head_only`.
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections

from jaxdapt import finetune
from jaxdapt.peft import adapter, lora

# config.peft.method; '' = off
METHODS = ("", "lora", "bitfit", "head_only", "adapter", "vpt_shallow", "vpt_deep")
# Paths (without the 'model/' prefix) that train in full under every PEFT method.
TASK_LAYERS = ("head/.*", "bottleneck/.*")
_EXTRA = {
  "lora": (lora.FACTORS,),
  "bitfit": (r"(?:.*/)?bias",),
  "head_only": (),
  "adapter": (adapter.ADAPTER_LEAF,),
  "vpt_shallow": (adapter.PROMPT_LEAF,),
  "vpt_deep": (adapter.PROMPT_LEAF,),
}
# Leaves the method adds to the model that the base weights never hold (model.init_from
# starts them at their init; `jaxdapt peft export` stores them): regexes over model paths.
NEW_LEAVES = {
  "lora": (lora.ANY_LEAF,),
  "adapter": (adapter.ADAPTER_LEAF,),
  "vpt_shallow": (adapter.PROMPT_LEAF,),
  "vpt_deep": (adapter.PROMPT_LEAF,),
}


def model_options(peft: ml_collections.ConfigDict) -> dict:
  """The backbone builder options config.peft turns on ({} for the parameter-only
  methods): {'adapter_dim': d} or {'prompt_tokens': n, 'prompt_mode': 'shallow'|'deep'}."""
  if peft.method == "adapter":
    return {"adapter_dim": peft.adapter_dim}
  if peft.method in adapter.VPT_MODES:
    return {"prompt_tokens": peft.prompt_tokens, "prompt_mode": adapter.VPT_MODES[peft.method]}
  return {}


def trainable_regexes(method: str, dont_load: Sequence[str]) -> tuple[str, ...]:
  """Regexes over model paths (no prefix) of every leaf `method` trains."""
  return trained_in_full(dont_load) + _EXTRA[method]


def trained_in_full(dont_load: Sequence[str]) -> tuple[str, ...]:
  """Regexes over model paths (no prefix) of the layers that train whole under PEFT."""
  return TASK_LAYERS + tuple(p for p in dont_load if p not in TASK_LAYERS)


def freeze_rules(method: str, dont_load: Sequence[str]) -> tuple[finetune.Rule, ...]:
  """The rule list prefix of `method`: one rule freezing every other 'model/...' leaf."""
  if not method:
    return ()
  keep = trainable_regexes(method, dont_load)
  alternatives = "|".join(f"(?:{p})" for p in keep)
  return ((f"model/(?!(?:{alternatives})\\Z).*", None),)


def optim_config(
  config: ml_collections.ConfigDict, optim: ml_collections.ConfigDict
) -> ml_collections.ConfigDict:
  """`optim` (config.optim or an already-rewritten copy) with config.peft's freeze rule
  in front of its rules; unchanged without config.peft.method."""
  rules = freeze_rules(config.peft.method, tuple(config.model.dont_load))
  if not rules:
    return optim
  optim = optim.copy_and_resolve_references()
  own = finetune.PRESETS[optim.preset] if optim.preset else optim.rules
  optim.rules = rules + tuple(map(tuple, own))
  optim.preset = ""
  return optim
