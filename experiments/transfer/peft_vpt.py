"""Office-31 with visual prompt tuning (Jia et al., ECCV 2022) of a frozen ViT-B/16.

`peft.method='vpt_deep'` (default) or 'vpt_shallow': 10 learnable prompt tokens after the
class token, at the input only (shallow) or replacing the previous block's outputs at those
positions before each of the 12 blocks (deep); initialised as VPT does (xavier-uniform over
a 16x16x3 patch's pixels). Only the prompts and a linear head on the class token train (no
bottleneck: VPT's head reads the [CLS] feature). Data, schedule and lengths are TLlib's
Office-31 recipe (experiments/protocols/office31.py), not VPT's: VPT grid-searches the lr
per task, which this file does not.
The argument is 'MODE[,TASK[,METHOD]]' (default vpt_deep,A2W,source_only).
  python -c "import timm, safetensors.torch as st; st.save_file(timm.create_model(
      'vit_base_patch16_224.augreg2_in21k_ft_in1k', pretrained=True).state_dict(),
      'vit_b16.safetensors')"
  jaxdapt weights import --arch vit_b16 --source timm --file vit_b16.safetensors \\
      --out weights/vit_b16
  jaxdapt train --config experiments/transfer/peft_vpt.py:vpt_deep,A2W --workdir runs/o31_vpt
"""

from jaxdapt.configs import tllib_task_config

DOMAINS = {"A": "office31/amazon", "D": "office31/dslr", "W": "office31/webcam"}
TASKS = {f"{s}2{t}": (DOMAINS[s], DOMAINS[t]) for s, t in ("AW", "DW", "WD", "AD", "DA", "WA")}
MODES = ("vpt_deep", "vpt_shallow")


def get_config(arg: str = "vpt_deep"):
  mode, _, rest = arg.partition(",")
  if mode not in MODES:
    raise ValueError(f"peft_vpt.py: {mode!r}; allowed: {', '.join(MODES)}")
  task, _, method = rest.partition(",")
  config = tllib_task_config(
    f"{task or 'A2W'},{method or 'source_only'}",
    TASKS,
    model="vit_b16",
    lr=0.01,
    batch_size=32,
    steps=20_000,
    eval_every=1_000,
    init_from="weights/vit_b16",
    prefetch=8,
    augment="imagenet",
    bottleneck_dim=0,
  )
  config.optim.preset = ""  # prompts are new: the full lr, like the head
  config.peft.method = mode
  config.peft.prompt_tokens = 10
  return config
