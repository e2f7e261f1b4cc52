"""Office-31 with adapters (Houlsby et al., ICML 2019) in a frozen ImageNet ResNet-50.

`peft.method='adapter'`: after each of the 16 bottleneck blocks a residual bottleneck MLP
(1x1 conv 2048/1024/512/256 → 64, ReLU, 1x1 conv back, the up projection zero so step 0 is
the pretrained network) trains with the bottleneck and head; every pretrained parameter is
frozen (no gradient, no optimizer state). Otherwise TLlib's Office-31 recipe
(experiments/protocols/office31.py: bottleneck 256 + linear head, SGD 0.01 Nesterov, 'inv'
schedule, 20 epochs x 1,000 iterations), but every trained parameter at the full lr (the
'discriminative' preset would put the adapters, new layers under backbone/, at 0.1x).
The argument is 'TASK[,METHOD]' (default A2W, method source_only; any method, e.g.
A2W,dann). ViT (both sublayers of each block) and the text encoders (each BertLayer) take
adapters too: --set model.name=... with their weights (docs/peft.md).
  jaxdapt weights import --arch resnet50 --source torchvision \\
      --file resnet50.pth --out weights/resnet50_tv
  jaxdapt train --config experiments/transfer/peft_adapter.py:A2W --workdir runs/o31_adapter
  jaxdapt peft export --workdir runs/o31_adapter --out runs/o31_adapter_delta
The recipe is not tuned for adapters (Houlsby et al. tune the lr per task, 1e-4 to 1e-3
with Adam, on BERT).
"""

from jaxdapt.configs import tllib_task_config

DOMAINS = {"A": "office31/amazon", "D": "office31/dslr", "W": "office31/webcam"}
TASKS = {f"{s}2{t}": (DOMAINS[s], DOMAINS[t]) for s, t in ("AW", "DW", "WD", "AD", "DA", "WA")}


def get_config(arg: str = "A2W"):
  task, _, method = arg.partition(",")
  config = tllib_task_config(
    f"{task},{method or 'source_only'}",
    TASKS,
    model="resnet50",
    lr=0.01,
    batch_size=32,
    steps=20_000,
    eval_every=1_000,
    init_from="weights/resnet50_tv",
    prefetch=8,
    augment="imagenet",
  )
  config.optim.preset = ""  # adapters are new: the full lr, like the head
  config.peft.method = "adapter"
  config.peft.adapter_dim = 64
  return config
