"""DomainNet (clipart, painting, real, sketch) with ResNet-101, TLlib's protocol.

Compare with: Transfer-Learning-Library's benchmark page, "DomainNet accuracy on
ResNet-101" (docs/dalib/benchmarks/image_classification.rst in
thuml/Transfer-Learning-Library, commit 1cd7e047), accuracy (%) on the target's test
split, TLlib's runs:

  method       c2p  c2r  c2s  p2c  p2r  p2s  r2c  r2p  r2s  s2c  s2p  s2r  avg
  source_only  32.7 50.6 39.4 41.1 56.8 35.0 48.6 48.8 36.1 49.0 34.8 46.1 43.3
  dann         37.9 54.3 44.4 41.7 55.6 36.8 50.7 50.8 40.1 55.0 45.0 54.5 47.2
  dan          38.8 55.2 43.9 45.9 59.0 40.8 50.8 49.8 38.9 56.1 45.9 55.5 48.4
  jan          40.5 56.7 45.1 47.2 59.9 43.0 54.2 52.6 41.9 56.6 46.2 55.5 50.0
  cdan         40.4 56.8 46.1 45.1 58.4 40.5 55.6 53.6 43.0 57.2 46.4 55.7 49.9
  mcd          37.5 52.9 44.0 44.6 54.5 41.6 52.0 51.5 39.7 55.5 44.6 52.0 47.5
  mdd          42.9 59.5 47.5 48.6 59.4 42.6 58.3 53.7 46.2 58.7 46.5 57.7 51.8
  mcc          37.7 55.7 42.6 45.4 59.8 39.9 54.4 53.1 37.0 58.1 46.3 56.2 48.9

TLlib picks the epoch on the target's train split with its labels and reports the test
split at that epoch; the trainer evaluates the test split only, so `target_acc_oracle`
(best test epoch) is an upper bound of that selection and `target_acc_last` the
label-free number.

Recipe (TLlib's dann.sh, DomainNet block): torchvision ResNet-101 (ImageNet), bottleneck
1024, backbone x0.1, SGD Nesterov, lr 0.01 'inv', weight decay 1e-3, batch 32 + 32, 30
epochs x 2,500 iterations, TLlib's training transform. Data: the TFDS catalog's
`domainnet/<domain>` (train and test splits; prepare once, see docs/datasets.md; TLlib
uses the "cleaned" release with the official split files, check that your prepared
version is the same). Other known differences as in office31.py.

Run:
  jaxdapt train --config experiments/protocols/domainnet.py:c2p --workdir runs/dn_c2p
"""

from jaxdapt.configs import all_pairs, published_table, tllib_task_config

TITLE = "DomainNet (ResNet-101)"
SOURCE = (
  "Transfer-Learning-Library benchmark page, DomainNet table "
  "(docs/dalib/benchmarks/image_classification.rst @ 1cd7e047)"
)
DOMAINS = {
  "c": "domainnet/clipart",
  "p": "domainnet/painting",
  "r": "domainnet/real",
  "s": "domainnet/sketch",
}
TASKS = all_pairs(DOMAINS)
PUBLISHED = published_table(__doc__)
INIT_FROM = "weights/resnet101_tv"


def get_config(arg: str = "c2p"):
  return tllib_task_config(
    arg,
    TASKS,
    model="resnet101",
    lr=0.01,
    batch_size=32,
    steps=75_000,
    eval_every=2_500,
    init_from=INIT_FROM,
    prefetch=8,
    augment="imagenet",
    bottleneck_dim=1024,
    source_val_split="test",
    target_test_split="test",
  )
