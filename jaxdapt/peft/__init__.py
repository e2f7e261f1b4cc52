"""Parameter-efficient transfer (config.peft): the pretrained weights stay frozen and a
small set of new or selected parameters trains.

`lora`: LoRA factors as leaves of the model's params tree, folded in by `lora.merged`
where the model is applied. `presets`: lora / bitfit / head_only as one optimizer rule
in front of the run's rule list. A blocks-layer package: it imports only leaf and block
modules, and the step and trainer layers call it. docs/peft.md has the usage.
"""

from jaxdapt.peft import lora, presets
from jaxdapt.peft.presets import METHODS, freeze_rules, optim_config, trained_in_full

__all__ = ["METHODS", "freeze_rules", "lora", "optim_config", "presets", "trained_in_full"]
