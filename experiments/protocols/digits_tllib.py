"""Digits as Transfer-Learning-Library runs them: MNIST <-> USPS (LeNet), SVHN -> MNIST (DTN).

Compare with: Transfer-Learning-Library's benchmark page, "Digits accuracy" table
(docs/dalib/benchmarks/image_classification.rst in thuml/Transfer-Learning-Library,
commit 1cd7e047), target test accuracy (%):

  method        svhn2mnist  mnist2usps  usps2mnist
  source_only      74.1        82.1        74.6
  dann             90.8        91.7        95.2
  dan              82.1        86.0        89.5
  jan              90.3        84.0        86.8
  cdan             93.8        96.0        97.7
  mcd              90.6        94.1        97.6
  afn              88.2        88.6        97.2
  mdd              88.4        94.8        97.8
  mcc              76.6        95.1        94.6

TLlib selects the epoch on the target test set (its val set is the test set), so the
number to put beside these is the summary's `target_acc_oracle`; `target_acc_last` and
`target_acc_best_source_val` are the honest ones.

Recipe (TLlib's examples/domain_adaptation/image_classification/dann.sh, Digits block):
  mnist2usps  mnist -> usps@28x28x1, lenet_tllib, lr 0.01
  usps2mnist  usps@28x28x1 -> mnist, lenet_tllib, lr 0.1
  svhn2mnist  svhn_cropped -> mnist@32x32x3, dtn, lr 0.03
  all: from scratch, batch 128 + 128, 20 x 2,500 = 50,000 iterations, SGD momentum 0.9
  Nesterov, weight decay 1e-3, lr·(1+0.001·i)^-0.75, bottleneck 256, inputs in [-1, 1],
  no flip or crop (resize only), DANN domain classifier 1024-1024.
Known differences: TLlib trains SVHN on its class-balanced image list, here on all of
svhn_cropped's train split; its domain classifier has BatchNorm and its GRL coefficient
ramps over the first 1,000 iterations (here: ramp over the run, method.weight_schedule
'dann'); its weight decay covers every parameter (here: kernels only).

Data: mnist and svhn_cropped from the TFDS catalog (prepare once, see docs/datasets.md),
USPS from your copy ($JAXDAPT_USPS_DIR). Run:
  jaxdapt train --config experiments/protocols/digits_tllib.py:mnist2usps \\
      --workdir=runs/tllib_mnist2usps_dann
  ...:usps2mnist,cdan   (task, method)
"""

from jaxdapt.configs import protocol_task, published_table, tllib_config

TITLE = "Digits (Transfer-Learning-Library protocol)"
SOURCE = (
  "Transfer-Learning-Library benchmark page, Digits table "
  "(docs/dalib/benchmarks/image_classification.rst @ 1cd7e047)"
)
# task -> (source, target, model, lr)
TASKS = {
  "svhn2mnist": ("svhn_cropped", "mnist@32x32x3", "dtn", 0.03),
  "mnist2usps": ("mnist", "usps@28x28x1", "lenet_tllib", 0.01),
  "usps2mnist": ("usps@28x28x1", "mnist", "lenet_tllib", 0.1),
}
PUBLISHED = published_table(__doc__)


def get_config(arg: str = "mnist2usps"):
  task, method = protocol_task(arg, TASKS)
  source, target, model, lr = TASKS[task]
  return tllib_config(
    source=source,
    target=target,
    model=model,
    lr=lr,
    batch_size=128,
    steps=50_000,
    eval_every=2_500,
    method=method,
    source_val_split="test",
    target_test_split="test",
  )
