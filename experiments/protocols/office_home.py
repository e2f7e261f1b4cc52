"""Office-Home with an ImageNet-pretrained ResNet-50, Transfer-Learning-Library's protocol.

Compare with: Transfer-Learning-Library's benchmark page, "Office-Home accuracy on
ResNet-50" (docs/dalib/benchmarks/image_classification.rst in
thuml/Transfer-Learning-Library, commit 1cd7e047), target accuracy (%), TLlib's runs:

  method       Ar2Cl Ar2Pr Ar2Rw Cl2Ar Cl2Pr Cl2Rw Pr2Ar Pr2Cl Pr2Rw Rw2Ar Rw2Cl Rw2Pr  avg
  source_only  41.1  65.9  73.7  53.1  60.1  63.3  52.2  36.7  71.8  64.8  42.6  75.2  58.4
  dann         53.8  62.6  74.0  55.8  67.3  67.3  55.8  55.1  77.9  71.1  60.7  81.1  65.2
  dan          45.6  67.7  73.9  57.7  63.8  66.0  54.9  40.0  74.5  66.2  49.1  77.9  61.4
  jan          50.8  71.9  76.5  60.6  68.3  68.7  60.5  49.6  76.9  71.0  55.9  80.5  65.9
  cdan         55.2  72.4  77.6  62.0  69.7  70.9  62.4  54.3  80.5  75.5  61.0  83.8  68.8
  mcd          51.7  72.2  78.2  63.7  69.5  70.8  61.5  52.8  78.0  74.5  58.4  81.8  67.8
  afn          53.2  72.7  76.8  65.0  71.3  72.3  65.0  51.4  77.9  72.3  57.8  82.4  68.2
  mdd          56.2  75.4  79.6  63.5  72.1  73.8  62.5  54.8  79.9  73.5  60.9  84.5  69.7
  mcc          58.4  79.6  83.0  67.5  77.0  78.5  66.6  54.8  81.8  74.4  61.4  85.6  72.4

(Its "Origin" column, the original papers' averages: source-only 46.1, DANN 57.6, DAN
56.3, JAN 58.3, CDAN 65.8, AFN 67.3, MDD 68.1.) As for Office-31, TLlib keeps the best
epoch on the target images: compare with `target_acc_oracle`.

Recipe: office31.py's (ResNet-50, bottleneck 256, backbone x0.1, SGD Nesterov, lr 0.01
'inv', batch 32 + 32) with 30 epochs x 1,000 iterations, as TLlib's dann.sh runs
Office-Home (its Office-31 runs use 20). The same known differences as office31.py.

Run:
  export JAXDAPT_OFFICE_HOME_DIR=/data/OfficeHomeDataset_10072016
  jaxdapt train --config experiments/protocols/office_home.py:Ar2Cl --workdir runs/oh_Ar2Cl
"""

from jaxdapt.configs import all_pairs, published_table, tllib_task_config

TITLE = "Office-Home (ResNet-50)"
SOURCE = (
  "Transfer-Learning-Library benchmark page, Office-Home table "
  "(docs/dalib/benchmarks/image_classification.rst @ 1cd7e047)"
)
DOMAINS = {
  "Ar": "office_home/art",
  "Cl": "office_home/clipart",
  "Pr": "office_home/product",
  "Rw": "office_home/real_world",
}
TASKS = all_pairs(DOMAINS)
PUBLISHED = published_table(__doc__)
INIT_FROM = "weights/resnet50_tv"


def get_config(arg: str = "Ar2Cl"):
  return tllib_task_config(
    arg,
    TASKS,
    model="resnet50",
    lr=0.01,
    batch_size=32,
    steps=30_000,
    eval_every=1_000,
    init_from=INIT_FROM,
    prefetch=8,
    augment="imagenet",
  )
