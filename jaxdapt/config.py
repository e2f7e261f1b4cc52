"""The config schema: every field an experiment may set, with its default.

Experiment files in experiments/ start from `base_config()` and change fields;
the returned ConfigDict is locked, so a typo (`config.optim.lr_decay = ...`)
fails where it is written. `validate` runs before anything is built and turns
every impossible value into a one-line ConfigError naming the field and the
allowed values.
"""
from __future__ import annotations

import ml_collections

from jaxdapt.errors import ConfigError

BN_POLICIES = ("joint", "separate")
LR_SCHEDULES = ("constant", "dann", "cosine")
OPTIMIZERS = ("sgd", "adam", "adamw")
DTYPES = ("float32", "bfloat16")
AUGMENTS = ("none", "shift")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.source = "syn_digits"          # labeled source domain
  c.data.source_split = "train"
  c.data.source_val_split = "validation"  # model selection without target labels
  c.data.target = "uci_digits"          # unlabeled target domain
  c.data.target_split = "train"         # its labels are used only by target_oracle
  c.data.target_test_split = "test"
  c.data.data_dir = ""                  # '' → $JAXDAPT_DATA_DIR or ~/.cache/jaxdapt
  c.data.augment = "shift"
  c.data.batch_size = 64                # global, per domain
  c.data.eval_batch_size = 512
  c.data.prefetch = 2

  c.model = ml_collections.ConfigDict()
  c.model.name = "dann_digits"
  c.model.norm = "default"              # the model's own default (see jaxdapt/models)
  c.model.bottleneck_dim = 0            # 0: no bottleneck
  c.model.head_hidden = (100, 100)
  c.model.dropout = 0.0
  c.model.small_input = False           # ResNet/VGG: stem for 32×32 inputs
  c.model.dtype = "float32"             # computation dtype; params stay float32
  # Start from pretrained weights: a directory written by `python -m jaxdapt.weights import`
  # or a jaxdapt workdir (its latest checkpoint). Loading is strict: every parameter is
  # loaded or matches a dont_load regex (over '/'-joined paths such as 'head/out/kernel').
  c.model.init_from = ""
  c.model.dont_load = ("head/.*", "bottleneck/.*")

  c.method = ml_collections.ConfigDict()
  c.method.name = "source_only"
  c.method.bn = "joint"                 # BatchNorm over two domains: joint | separate
  c.method.weight = 1.0                 # trade-off of the transfer loss
  c.method.weight_schedule = "dann"     # constant | dann (2/(1+e^{-10p}) - 1)
  c.method.disc_hidden = (100,)         # DANN domain classifier
  c.method.mmd_bandwidths = (0.25, 0.5, 1.0, 2.0, 4.0)  # DAN kernels, × mean sq. distance
  c.method.cdan_random_dim = 1024       # CDAN: randomized multilinear map width (D·C > 4096)
  c.method.bsp_weight = 0.0             # BSP penalty in dann/cdan (paper: 1e-4); 0 = off
  c.method.bsp_k = 1                    # BSP: number of top singular values penalised
  c.method.mcc_temperature = 2.5        # MCC probability rescaling temperature T
  c.method.jan_softmax_bandwidth = 1.68  # JAN: kernel exp(-|p-q|²/bw) on the softmax layer
  c.method.afn_delta_r = 1.0            # AFN (stepwise): norm increment Δr
  c.method.mdd_margin = 4.0             # MDD margin γ
  c.method.aux_head_hidden = (100, 100)  # MDD/MCD second classifier widths (= model.head_hidden)
  c.method.mcd_generator_steps = 4      # MCD: generator updates (step C) per iteration

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "sgd"
  c.optim.lr = 0.01
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 0.0            # applied to ≥2-d parameters only
  c.optim.schedule = "dann"             # lr·(1+10p)^-0.75 (DANN paper)
  # (regex over '/'-joined paths 'model/...' or 'method/...', lr multiplier | None=frozen);
  # first match wins; every parameter must match one rule.
  c.optim.rules = ((".*", 1.0),)

  c.train = ml_collections.ConfigDict()
  c.train.steps = 2000
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 2
  c.train.baseline = ""                 # e.g. 'source_only': also train it and print side by side
  c.train.progress_bar = True
  c.lock()
  return c


# Offline tasks: name → (source, source validation split, target).
TASKS = {
    "syn2uci": ("syn_digits", "validation", "uci_digits"),
    "syn2ucim": ("syn_digits", "validation", "uci_digits_m"),
    "uci2ucim": ("uci_digits", "test", "uci_digits_m"),
}


def with_task(config: ml_collections.ConfigDict, task: str) -> ml_collections.ConfigDict:
  """Points config.data at one of the offline TASKS (the config-file argument)."""
  if task not in TASKS:
    raise ConfigError(f"task: unknown {task!r}; allowed: {', '.join(TASKS)}")
  config.data.source, config.data.source_val_split, config.data.target = TASKS[task]
  return config


def digits_config(task: str = "syn2uci") -> ml_collections.ConfigDict:
  """Shared recipe of experiments/digits: DANN-paper CNN with BatchNorm, paper SGD schedule.

  BatchNorm (joint statistics over source + target) is what made DANN work on
  the pure style shift uci → uci_m (see README, "DANN: what mattered").
  """
  config = with_task(base_config(), task)
  config.model.name = "dann_digits"
  config.model.norm = "batch"
  config.model.head_hidden = (100, 100)
  # uci → uci_m needs the longer run for DANN's gain to appear (README); the syn tasks
  # have 20× more source images and are run shorter to fit the CPU budget of the grid.
  config.train.steps = 2000 if task == "uci2ucim" else 1000
  return config


def _check_choice(field: str, value, allowed) -> None:
  if value not in allowed:
    raise ConfigError(f"{field}: {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


def _check_keys(config, schema, prefix: str = "") -> None:
  for key in config.keys():
    name = f"{prefix}{key}"
    if key not in schema:
      raise ConfigError(f"{name}: unknown config field; allowed here: {', '.join(sorted(schema.keys()))}")
    if isinstance(schema[key], ml_collections.ConfigDict):
      if not isinstance(config[key], (ml_collections.ConfigDict, dict)):
        raise ConfigError(f"{name}: must be a group of fields, got {config[key]!r}")
      _check_keys(config[key], schema[key], name + ".")


def _check_positive(field: str, value) -> None:
  if not isinstance(value, int) or value <= 0:
    raise ConfigError(f"{field}: must be a positive integer, got {value!r}")


def validate(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
  """Raises ConfigError for the first field that cannot work."""
  from jaxdapt import methods, models  # registries; imported late to keep this module light
  import re

  _check_keys(config, base_config())
  methods.METHODS.get(config.method.name)
  models.MODELS.get(config.model.name)
  _check_choice("method.bn", config.method.bn, BN_POLICIES)
  _check_choice("method.weight_schedule", config.method.weight_schedule,
                methods.base.WEIGHT_SCHEDULES)
  _check_choice("optim.name", config.optim.name, OPTIMIZERS)
  _check_choice("optim.schedule", config.optim.schedule, LR_SCHEDULES)
  _check_choice("model.dtype", config.model.dtype, DTYPES)
  _check_choice("data.augment", config.data.augment, AUGMENTS)
  for field in ("data.batch_size", "data.eval_batch_size", "train.steps", "train.log_every",
                "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints"):
    group, key = field.split(".")
    _check_positive(field, config[group][key])
  if config.train.checkpoint_every % config.train.log_every:
    raise ConfigError(
        f"train.checkpoint_every: {config.train.checkpoint_every} must be a multiple of "
        f"train.log_every ({config.train.log_every}) so no checkpoint holds an unchecked loss")
  if config.optim.lr <= 0:
    raise ConfigError(f"optim.lr: must be > 0, got {config.optim.lr}")
  for i, rule in enumerate(config.optim.rules):
    if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
      raise ConfigError(f"optim.rules[{i}]: must be a (regex, multiplier | None) pair, got {rule!r}")
    try:
      re.compile(rule[0])
    except re.error as e:
      raise ConfigError(f"optim.rules[{i}]: bad regex {rule[0]!r}: {e}") from None
    if rule[1] is not None and not isinstance(rule[1], (int, float)):
      raise ConfigError(f"optim.rules[{i}]: multiplier must be a number or None, got {rule[1]!r}")
  if config.train.baseline:
    methods.METHODS.get(config.train.baseline)
  if device_count is not None:
    for field in ("data.batch_size", "data.eval_batch_size"):
      group, key = field.split(".")
      if config[group][key] % device_count:
        raise ConfigError(
            f"{field}: {config[group][key]} does not divide over {device_count} devices; "
            f"use a multiple of {device_count}")
