"""Office-31 with an ImageNet-pretrained ResNet-50, Transfer-Learning-Library's protocol.

Compare with: Transfer-Learning-Library's benchmark page, "Office-31 accuracy on
ResNet-50" (docs/dalib/benchmarks/image_classification.rst in
thuml/Transfer-Learning-Library, commit 1cd7e047), target accuracy (%), TLlib's runs
(adversarial methods: mean of 3):

  method       A2W   D2W   W2D    A2D   D2A   W2A   avg
  source_only  75.8  95.5   99.0  79.3  63.6  63.8  79.5
  dann         91.4  97.9  100.0  83.6  73.3  70.4  86.1
  dan          84.2  98.4  100.0  87.3  66.9  65.2  83.7
  jan          93.7  98.4  100.0  89.4  69.2  71.0  87.0
  cdan         93.8  98.5  100.0  89.9  73.4  70.4  87.7
  mcd          90.4  98.5  100.0  87.3  68.3  67.6  85.4
  afn          94.0  98.9  100.0  94.4  72.9  71.1  88.6
  mdd          95.6  98.6  100.0  94.4  76.6  72.2  89.6
  mcc          94.1  98.4   99.8  95.6  75.5  74.2  89.6

(The same page's "Origin" column, the original papers' averages: source-only 76.1,
DANN 82.2, DAN 80.4, JAN 84.3, CDAN 87.7, AFN 85.7, MDD 88.9, MCC 89.4.) TLlib tests on
all target images and keeps the epoch that scores best there, so compare with the
summary's `target_acc_oracle`; `target_acc_last` is the label-free number.

Recipe (TLlib's dann.sh, Office-31 block, and dann.py defaults): torchvision ResNet-50
(ImageNet), bottleneck 256 (Dense-BN-ReLU) + linear head, backbone lr x0.1, SGD momentum
0.9 Nesterov, weight decay 1e-3, lr 0.01·(1+0.001·i)^-0.75, batch 32 + 32, 20 epochs x
1,000 iterations, domain classifier 1024-1024, ImageNet mean/std (read from the imported
weights' metadata), training crops random-resized 224 + flip (data.augment='imagenet',
TLlib's train transform). Known differences (docs/protocols.md): TLlib's
domain classifier has BatchNorm, its GRL coefficient ramps over 1,000 iterations (here
over the run), its weight decay covers every parameter (here kernels only).

Run (weights once: torchvision's original ImageNet ResNet-50, IMAGENET1K_V1, whose
state_dict you have as resnet50.pth; then any task[,method]):
  jaxdapt weights import --arch resnet50 --source torchvision \\
      --file resnet50.pth --out weights/resnet50_tv
  export JAXDAPT_OFFICE31_DIR=/data/office31
  jaxdapt train --config experiments/protocols/office31.py:A2W --workdir runs/o31_A2W
  ...:D2A,cdan   --set model.init_from=/elsewhere/resnet50_tv
"""

from jaxdapt.configs import published_table, tllib_task_config

TITLE = "Office-31 (ResNet-50)"
SOURCE = (
  "Transfer-Learning-Library benchmark page, Office-31 table "
  "(docs/dalib/benchmarks/image_classification.rst @ 1cd7e047)"
)
DOMAINS = {"A": "office31/amazon", "D": "office31/dslr", "W": "office31/webcam"}
TASKS = {f"{s}2{t}": (DOMAINS[s], DOMAINS[t]) for s, t in ("AW", "DW", "WD", "AD", "DA", "WA")}
PUBLISHED = published_table(__doc__)
INIT_FROM = "weights/resnet50_tv"


def get_config(arg: str = "A2W"):
  return tllib_task_config(
    arg,
    TASKS,
    model="resnet50",
    lr=0.01,
    batch_size=32,
    steps=20_000,
    eval_every=1_000,
    init_from=INIT_FROM,
    prefetch=8,
    augment="imagenet",
  )
