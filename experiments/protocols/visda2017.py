"""VisDA-2017 synthetic -> real with an ImageNet-pretrained ResNet-101, TLlib's protocol.

Compare with: Transfer-Learning-Library's benchmark page, "VisDA-2017 accuracy
ResNet-101" (docs/dalib/benchmarks/image_classification.rst in
thuml/Transfer-Learning-Library, commit 1cd7e047), target accuracy (%), TLlib's runs
(adversarial methods: mean of 3). "mean" averages the 12 per-class accuracies (the
number VisDA papers report); "avg" is the accuracy over all images, which is what the
trainer logs, so "avg" is the column to compare with:

  method       mean   avg
  source_only  51.7  56.9
  dann         79.5  74.9
  dan          66.4  67.2
  jan          73.4  70.3
  cdan         80.1  76.5
  mcd          77.7  76.7
  afn          75.0  74.4
  mdd          82.0  79.8
  mcc          83.6  80.4

TLlib keeps the best epoch on the target images: compare with `target_acc_oracle`.

Recipe (TLlib's dann.sh, VisDA-2017 line): torchvision ResNet-101 (ImageNet), bottleneck
256, backbone x0.1, SGD Nesterov, lr 0.01 'inv', weight decay 1e-3, batch 32 + 32, 30
epochs x 1,000 iterations, training images center-cropped (`--train-resizing cen.crop`,
which the eval crop here matches; TLlib adds a random flip). Per-class accuracy is not
computed yet. Other known differences as in office31.py.

Run:
  jaxdapt weights import --arch resnet101 --source torchvision \\
      --file resnet101.pth --out weights/resnet101_tv
  export JAXDAPT_VISDA2017_DIR=/data/visda-2017
  jaxdapt train --config experiments/protocols/visda2017.py --workdir runs/visda_dann
"""

from jaxdapt.configs import published_table, tllib_task_config

TITLE = "VisDA-2017 (ResNet-101; mean per class / accuracy over images)"
SOURCE = (
  "Transfer-Learning-Library benchmark page, VisDA-2017 table "
  "(docs/dalib/benchmarks/image_classification.rst @ 1cd7e047)"
)
TASKS = {"S2R": ("visda2017/synthetic", "visda2017/real")}
PUBLISHED = published_table(__doc__)
INIT_FROM = "weights/resnet101_tv"


def get_config(arg: str = "S2R"):
  return tllib_task_config(
    arg,
    TASKS,
    model="resnet101",
    lr=0.01,
    batch_size=32,
    steps=30_000,
    eval_every=1_000,
    init_from=INIT_FROM,
    prefetch=8,
  )
