"""TENT (Wang et al., ICLR 2021): test-time entropy minimisation of a source model.

Online, one pass over the target test split (the stream being adapted to,
no augmentation): each batch is predicted, then its mean prediction entropy
is minimised by the BatchNorm scale/bias alone (optim.rules freeze every
other parameter), BatchNorm normalising by the batch's own statistics.
Reports the online accuracy (train `online_acc`, summary `target_online_acc`)
beside the usual evaluation. Paper: Adam lr 1e-3 at batch 128 (CIFAR), SGD
momentum 0.9 lr 2.5e-4 at batch 64 (ImageNet). Here: Adam, lr 5e-4 (the
CIFAR setting scaled to batch 64 so the 719-image uci test split gives 11
updates), constant.

Run (stage 1 is a plain source model with BatchNorm):
  jaxdapt train --config experiments/digits/source_only.py --workdir runs/so
  jaxdapt train --config experiments/digits/tent.py --workdir runs/tent \
      --set model.init_from=runs/so
Other tasks: add :uci2ucim (syn2uci | syn2ucim | uci2ucim) to both --config paths; for a
target other than uci_digits(_m) set --config.train.steps to ⌊test images / 64⌋.
"""

from jaxdapt.configs import digits_config

STAGE1 = "source_only"  # jaxdapt.grid trains this first (same task, seed) and inits from it
GRID_PINNED = (
  "train.steps",
  "train.eval_every",
  "train.checkpoint_every",
  "train.log_every",
)  # the method's own schedule; grid-wide overrides skip these

TEST_IMAGES = 719  # the uci_digits / uci_digits_m test split


def get_config(task: str = "syn2uci"):
  config = digits_config(task)
  config.method.name = "tent"
  config.model.dont_load = ()
  config.data.target_split = "test"
  config.data.augment = "none"
  config.data.batch_size = 64
  config.optim.name = "adam"
  config.optim.lr = 5e-4
  config.optim.schedule = "constant"
  config.optim.rules = ((r"model/.*/bn\d*/(scale|bias)", 1.0), (".*", None))
  config.train.steps = TEST_IMAGES // config.data.batch_size  # one pass
  config.train.log_every = 1  # online accuracy per batch
  config.train.eval_every = config.train.steps
  config.train.checkpoint_every = config.train.steps
  return config
