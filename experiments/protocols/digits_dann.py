"""The DANN paper's digit tasks: MNIST -> MNIST-M and SVHN -> MNIST.

Compare with: Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation",
ICML 2015, Table 1 (accuracy on the target test set): MNIST -> MNIST-M source only .5225,
DANN .7666 (train on target .9596); SVHN -> MNIST source only .5490, DANN .7385 (train on
target .9942). Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 17(59),
2016, repeats these values in its digits table.

Recipe, as the paper describes it:
  mnist2mnistm  mnist@28x28x3 -> mnist_m; the MNIST network (dann_digits: conv5x5-32,
                pool, conv5x5-48, pool; label predictor FC100-FC100; domain classifier FC100)
  svhn2mnist    svhn_cropped -> mnist@32x32x3; the SVHN network (dann_svhn: conv5x5-64,
                pool3/2, conv5x5-64, pool3/2, conv5x5-128; label predictor FC3072-FC2048;
                domain classifier FC1024-FC1024; padding is ours, see models/digit_protocols.py)
  SGD momentum 0.9, lr 0.01/(1+10p)^0.75, GRL coefficient 2/(1+exp(-10p)) - 1, no BatchNorm.
Our choices where the paper is not specific here: batch 64 source + 64 target, 20,000
steps, inputs scaled to [-1, 1] (the paper subtracts the mean image), no augmentation.

Data: mnist and svhn_cropped from the TFDS catalog, MNIST-M from your copy of the
original mnist_m/ folder ($JAXDAPT_MNIST_M_DIR). Run:
  jaxdapt train --config experiments/protocols/digits_dann.py:mnist2mnistm \\
      --workdir=runs/dann_mnist2mnistm
  ...:mnist2mnistm,source_only   (the "Source only" row)
"""

from jaxdapt.config import base_config
from jaxdapt.configs import protocol_task

TITLE = "Digits (DANN paper protocol)"
SOURCE = "Ganin & Lempitsky, ICML 2015, Table 1 (Source only, DANN and Train on target rows)"
# task -> (source, target, model, head_hidden, disc_hidden)
TASKS = {
  "mnist2mnistm": ("mnist@28x28x3", "mnist_m", "dann_digits", (100, 100), (100,)),
  "svhn2mnist": ("svhn_cropped", "mnist@32x32x3", "dann_svhn", (3072, 2048), (1024, 1024)),
}
PUBLISHED: dict[str, dict[str, float]] = {  # the docstring's numbers, in %
  "source_only": {"mnist2mnistm": 52.25, "svhn2mnist": 54.90},
  "dann": {"mnist2mnistm": 76.66, "svhn2mnist": 73.85},
  "target_oracle": {"mnist2mnistm": 95.96, "svhn2mnist": 99.42},
}


def get_config(arg: str = "mnist2mnistm"):
  task, method = protocol_task(arg, TASKS)
  source, target, model, head, disc = TASKS[task]
  c = base_config()
  c.data.source, c.data.source_val_split = source, "test"
  c.data.target, c.data.target_test_split = target, "test"
  c.data.augment = "none"
  c.model.name, c.model.norm, c.model.head_hidden = model, "none", head
  c.method.name, c.method.disc_hidden = method, disc
  c.train.steps = 20_000
  c.train.eval_every = c.train.checkpoint_every = 1_000
  return c
