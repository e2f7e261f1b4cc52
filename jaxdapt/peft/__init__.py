"""Parameter-efficient transfer (config.peft): the pretrained weights stay frozen and a
small set of new or selected parameters trains.

`lora`: LoRA factors as leaves of the model's params tree, folded in by `lora.merged`
where the model is applied. `adapter`: bottleneck adapters and ViT prompt tokens, built by
the backbones as model options (they add computation, not a delta). `presets`: every
method as one optimizer rule in front of the run's rule list. `delta`: a run's trainable
leaves apart from its base weights (`jaxdapt peft export`). A blocks-layer package: it
imports only leaf and block modules, and the step and trainer layers call it. docs/peft.md
has the usage.
"""

from jaxdapt.peft import adapter, lora, presets
from jaxdapt.peft.presets import (
  METHODS,
  freeze_rules,
  model_options,
  optim_config,
  trainable_regexes,
  trained_in_full,
)

__all__ = [
  "METHODS",
  "adapter",
  "freeze_rules",
  "lora",
  "model_options",
  "optim_config",
  "presets",
  "trainable_regexes",
  "trained_in_full",
]
