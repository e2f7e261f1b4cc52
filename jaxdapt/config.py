"""The config schema: every field an experiment may set, with its default.

Experiment files in experiments/ start from `base_config()` and change fields;
the returned ConfigDict is locked, so a typo (`config.optim.lr_decay = ...`)
fails where it is written. `validate` runs before anything is built and turns
every impossible value into a one-line ConfigError naming the field and the
allowed values.
"""
from __future__ import annotations

import difflib

import ml_collections

from jaxdapt.errors import ConfigError
from jaxdapt.kernels import cpu_conv

BN_POLICIES = ("joint", "separate", "dsbn")  # jaxdapt/batchnorm.py
BN_MODES = ("train", "frozen_stats", "frozen")
EVAL_TARGET_BN = ("running", "target")
LR_SCHEDULES = ("constant", "dann", "cosine", "inv")  # inv: lr·(1+0.001·i)^-0.75 (optim.py)
OPTIMIZERS = ("sgd", "adam", "adamw")
DTYPES = ("auto", "float32", "bfloat16")  # model.dtype; train.compute_dtype resolves auto
AUGMENTS = ("none", "shift", "imagenet")  # host augmentations, applied in data/pipeline.py
CONV_KERNELS = cpu_conv.KERNELS  # model.conv_kernel; resolved by cpu_conv.resolve


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
  # Splits whose images fit in this many MB are read into RAM once when the run starts
  # (data/in_memory.py: same rows, no per-row record reads); 0: always read from disk.
  c.data.in_memory_mb = 256
  # k labeled target training examples per class (stratified, drawn from the seed) as a
  # third domain `target_labeled`: 0 off, -1 all; jaxdapt/methods/fewshot.py.
  c.data.target_labeled_per_class = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = "dann_digits"
  c.model.norm = "default"              # the model's own default (see jaxdapt/models)
  c.model.bottleneck_dim = 0            # 0: no bottleneck
  c.model.head_hidden = (100, 100)
  c.model.dropout = 0.0                 # head dropout, before its output layer (classifier.py)
  c.model.cosine_temperature = 0.0      # > 0: cosine-classifier output layer (MME: 0.05)
  c.model.small_input = False           # ResNet/VGG: stem for 32×32 inputs
  # ResNet: base width w (stem and stages w, 2w, 4w, 8w; same parameter names); 0: the
  # model's own (64, torchvision's, which imported weights need).
  c.model.width = 0
  # Mixed-precision policy (train.compute_dtype): the dtype of activations and of the
  # backbone/bottleneck/head matmuls. 'auto': bfloat16 on GPU/TPU, float32 on CPU (XLA:CPU's
  # bf16 convolutions are slow). Whatever it is, parameters, optimizer state, BatchNorm
  # statistics, the classifier's output layer, method heads (domain discriminator, MCD/MDD
  # heads), logits and features handed to losses, every loss and metric are float32.
  c.model.dtype = "auto"
  # Recompute the backbone blocks' activations in the backward pass (nn.remat around ResNet
  # blocks, VGG stages, ViT blocks, dann_digits conv blocks): less memory, ~1/3 more compute.
  # Parameter paths are unchanged, so checkpoints and imported weights load either way.
  c.model.remat = False
  # Convolution kernels: 'auto' runs the convs they cover (float32, stride 1, unpadded,
  # 16-64 output channels: dann_digits') through jaxdapt's CPU kernels when the run has one
  # CPU device and a C++ compiler builds them, else XLA's; 'xla' | 'direct' force one
  # ('direct' fails where it cannot run); jaxdapt/kernels/cpu_conv.py.
  c.model.conv_kernel = "auto"
  # Backbone BatchNorm in training: train | frozen_stats (running statistics, never
  # updated) | frozen (and scale/bias frozen through an optimizer rule); jaxdapt/batchnorm.py.
  c.model.bn_mode = "train"
  # Start from pretrained weights: a directory written by `python -m jaxdapt.weights import`
  # or a jaxdapt workdir (its latest checkpoint; RUN@STEP: that step's). Loading is strict:
  # every parameter is loaded or matches a dont_load regex (over '/'-joined paths such as
  # 'head/out/kernel').
  c.model.init_from = ""
  c.model.dont_load = ("head/.*", "bottleneck/.*")

  c.method = ml_collections.ConfigDict()
  c.method.name = "source_only"
  c.method.bn = "joint"                 # BatchNorm over two domains: joint | separate | dsbn
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
  c.method.label_smoothing = 0.0        # ε of the supervised cross-entropy (SHOT stage 1: 0.1)
  c.method.refresh_every = 0            # steps between Method.refresh calls; 0 = only at start
  c.method.shot_beta = 0.3              # SHOT: weight β of the pseudo-label cross-entropy
  c.method.fixmatch_threshold = 0.95    # FixMatch: confidence τ of a weak-view pseudo-label
  c.method.fixmatch_ops = 2             # FixMatch: RandAugment ops per strong view
  c.method.fixmatch_cutout = 0.5        # FixMatch: cutout square side / image side (0: off)

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "sgd"
  c.optim.lr = 0.01
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.b1 = 0.9                      # adam/adamw: first-moment decay β1 (ADDA's code: 0.5)
  # On conv/dense kernels only (not biases, norms, ViT tokens): L2 added to the gradient
  # for sgd/adam (torch's weight_decay), decoupled for adamw.
  c.optim.weight_decay = 0.0
  c.optim.schedule = "dann"             # lr·(1+10p)^-0.75 (DANN paper)
  # (regex over '/'-joined paths 'model/...' or 'method/...', lr multiplier | None=frozen);
  # first match wins; every parameter must match one rule. The fields below compile to
  # such a list (jaxdapt/finetune.py); `python -m jaxdapt.optim --config=...` prints it.
  c.optim.rules = ((".*", 1.0),)
  # A named rule list instead of `rules`: 'discriminative' (backbone at 0.1× lr) or
  # 'linear_probe' (backbone and bottleneck frozen: stage 1 of experiments/transfer/lp_ft.py).
  c.optim.preset = ""
  # Layer-wise lr decay: a backbone block at depth d (stem/embedding 0) of D gets
  # llrd^(D − d) × its rule's multiplier; head, bottleneck, method at ×1. 0 or 1: off.
  c.optim.llrd = 0.0
  # Gradual unfreezing: ((step, regex), ...): matching parameters get zero updates and no
  # optimizer-state change for updates 0..step−1, then train (first matching entry wins).
  c.optim.unfreeze = ()

  # Against forgetting when fine-tuning from model.init_from; each 0 = off; any method with
  # the shared step (jaxdapt/methods/regularizers.py has the papers and hyperparameters).
  c.regularizer = ml_collections.ConfigDict()
  c.regularizer.l2sp_alpha = 0.0        # L2-SP: α/2‖w − w⁰‖² on what init_from supplies
  c.regularizer.l2sp_beta = 0.0         # L2-SP: β/2‖w‖² on the new layers (dont_load)
  c.regularizer.delta_weight = 0.0      # DELTA: attention-weighted feature-map distance
  c.regularizer.delta_layers = ("backbone",)  # DELTA: modules whose outputs are compared
  c.regularizer.delta_attention_points = 128  # DELTA: rows scoring the channels, once
  c.regularizer.bss_weight = 0.0        # BSS η (paper 0.001)
  c.regularizer.bss_k = 1               # BSS: smallest singular values penalised
  c.regularizer.lwf_weight = 0.0        # LwF λ_o (paper 1)
  c.regularizer.lwf_temperature = 2.0   # LwF T (paper 2)

  c.train = ml_collections.ConfigDict()
  c.train.steps = 2000
  # Split each step's batch (data.batch_size per domain) into this many micro-batches inside
  # the compiled step; gradients are averaged into ONE optimizer update. BatchNorm
  # statistics update micro-batch by micro-batch, and every loss sees one micro-batch, so
  # batch-statistic losses (MMD, CORAL, MCC, BSP, domain discriminators) see the smaller
  # batch: with them N > 1 is not the same objective as N = 1 (the usual trade-off).
  c.train.grad_accum_steps = 1
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 2
  c.train.baseline = ""                 # e.g. 'source_only': also train it and print side by side
  c.train.progress_bar = True
  # Rows per domain (source train, source val, target train) scored at each evaluation by
  # the label-free selection criteria SND and DEV (analysis/selection.py); 0 turns them off.
  c.train.selection_points = 1000
  # BatchNorm statistics target splits are evaluated with: running (what training left) |
  # target (AdaBN: recomputed on the target train images at each evaluation).
  c.train.eval_target_bn = "running"
  # Persistent XLA compilation cache; 'auto': ~/.cache/jaxdapt/xla_cache, '': off.
  c.train.compilation_cache_dir = "auto"
  c.lock()
  return c


# Offline tasks: name → (source, source validation split, target).
TASKS = {
    "syn2uci": ("syn_digits", "validation", "uci_digits"),
    "syn2ucim": ("syn_digits", "validation", "uci_digits_m"),
    "uci2ucim": ("uci_digits", "test", "uci_digits_m"),
    # Disjoint halves of Fashion-MNIST train; needs the idx files or the TFDS catalog.
    "fashion2fashionm": ("fashion_mnist", "validation", "fashion_mnist_m"),
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
  # fashion → fashion_m: the length its prototype was measured at (shared/notes).
  config.train.steps = {"uci2ucim": 2000, "fashion2fashionm": 3000}.get(task, 1000)
  return config


def find_field(config, dotted: str, label: str):
  """(group, key) of the field at the dotted path `dotted`, for reading or setting it. A
  path that leaves the config raises a ConfigError that starts with `label` and lists the
  fields of the group where it left (with the nearest name, for a typo)."""
  node, path = config, dotted.split(".")
  for i, key in enumerate(path):
    if not hasattr(node, "keys") or key not in node:
      keys = sorted(node.keys()) if hasattr(node, "keys") else []
      near = difflib.get_close_matches(key, keys, n=1)
      raise ConfigError(f"{label}: unknown config field; fields of "
                        f"{'.'.join(path[:i]) or 'config'}: {', '.join(keys) or 'none'}"
                        + (f"; did you mean {near[0]!r}?" if near else ""))
    group, node = node, node[key]
  return group, path[-1]


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


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate_finetune(optim: ml_collections.ConfigDict) -> None:
  """optim.weight_decay / preset / llrd / unfreeze (jaxdapt/finetune.py)."""
  import re
  from jaxdapt import finetune
  if not _is_number(optim.weight_decay) or optim.weight_decay < 0:
    raise ConfigError(f"optim.weight_decay: must be a number >= 0, got {optim.weight_decay!r}")
  _check_choice("optim.preset", optim.preset, ("",) + tuple(finetune.PRESETS))
  if optim.preset and tuple(map(tuple, optim.rules)) != tuple(base_config().optim.rules):
    raise ConfigError(f"optim.preset: {optim.preset!r} is a rule list and replaces "
                      f"optim.rules, which is also set ({optim.rules!r}); set only one")
  if not _is_number(optim.llrd) or not 0 <= optim.llrd <= 1:
    raise ConfigError(f"optim.llrd: must be a decay factor in [0, 1] (0 or 1: off), "
                      f"got {optim.llrd!r}")
  for i, entry in enumerate(optim.unfreeze):
    if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], int)
            and not isinstance(entry[0], bool) and entry[0] > 0 and isinstance(entry[1], str)):
      raise ConfigError(f"optim.unfreeze[{i}]: must be a (step > 0, regex) pair, got {entry!r}")
    try:
      re.compile(entry[1])
    except re.error as e:
      raise ConfigError(f"optim.unfreeze[{i}]: bad regex {entry[1]!r}: {e}") from None


def validate(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
  """Raises ConfigError for the first field that cannot work."""
  from jaxdapt import methods, models  # registries; imported late to keep this module light
  import re

  _check_keys(config, base_config())
  methods.METHODS.get(config.method.name)
  models.MODELS.get(config.model.name)
  if config.method.bn == "frozen":
    raise ConfigError("method.bn: 'frozen' is model.bn_mode='frozen_stats' (running statistics"
                      " in training) or 'frozen' (and scale/bias); method.bn is how domains "
                      f"share BatchNorm: {', '.join(BN_POLICIES)}")
  _check_choice("method.bn", config.method.bn, BN_POLICIES)
  _check_choice("model.bn_mode", config.model.bn_mode, BN_MODES)
  _check_choice("train.eval_target_bn", config.train.eval_target_bn, EVAL_TARGET_BN)
  if config.method.bn == "dsbn" and methods.METHODS.get(config.method.name).adapts_trained_model:
    raise ConfigError(f"method.bn: 'dsbn' keeps a BatchNorm branch per domain, but method "
                      f"{config.method.name!r} adapts a model with one; use joint or separate")
  _check_choice("method.weight_schedule", config.method.weight_schedule,
                methods.base.WEIGHT_SCHEDULES)
  _check_choice("optim.name", config.optim.name, OPTIMIZERS)
  _check_choice("optim.schedule", config.optim.schedule, LR_SCHEDULES)
  _check_choice("model.dtype", config.model.dtype, DTYPES)
  _check_choice("model.remat", config.model.remat, (False, True))
  _check_choice("model.conv_kernel", config.model.conv_kernel, CONV_KERNELS)
  _check_choice("data.augment", config.data.augment, AUGMENTS)
  for field in ("data.batch_size", "data.eval_batch_size", "train.steps", "train.log_every",
                "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints",
                "train.grad_accum_steps"):
    group, key = field.split(".")
    _check_positive(field, config[group][key])
  if config.train.checkpoint_every % config.train.log_every:
    raise ConfigError(
        f"train.checkpoint_every: {config.train.checkpoint_every} must be a multiple of "
        f"train.log_every ({config.train.log_every}) so no checkpoint holds an unchecked loss")
  smoothing = config.method.label_smoothing
  if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not (
      0 <= smoothing < 1):
    raise ConfigError(f"method.label_smoothing: must be in [0, 1), got {smoothing!r}")
  every = config.method.refresh_every
  if isinstance(every, bool) or not isinstance(every, int) or every < 0:
    raise ConfigError(f"method.refresh_every: must be an integer >= 0, got {every!r}")
  if methods.METHODS.get(config.method.name).adapts_trained_model:
    name = config.method.name
    if not config.model.init_from:
      raise ConfigError(f"model.init_from: method {name!r} adapts a trained source model; set "
                        f"it to the stage-1 workdir (see experiments/digits/{name}.py)")
    if tuple(config.model.dont_load):
      raise ConfigError(f"model.dont_load: method {name!r} starts from the whole source model "
                        f"(head included); must be (), got {tuple(config.model.dont_load)}")
  if config.optim.lr <= 0:
    raise ConfigError(f"optim.lr: must be > 0, got {config.optim.lr}")
  if not _is_number(config.optim.b1) or not 0 <= config.optim.b1 < 1:
    raise ConfigError(f"optim.b1: Adam's first-moment decay must be in [0, 1), "
                      f"got {config.optim.b1!r}")
  _validate_finetune(config.optim)
  methods.check_config(config)  # k-shot target labels, regularisers, MME's cosine head
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
  _validate_grad_accum(config, device_count or 1)


def _validate_grad_accum(config: ml_collections.ConfigDict, device_count: int) -> None:
  """train.grad_accum_steps against the method (its step must accumulate) and the batch."""
  from jaxdapt import methods
  n, name = config.train.grad_accum_steps, config.method.name
  if n == 1:
    return
  if not methods.METHODS.get(name).accumulates_gradients:
    raise ConfigError(f"train.grad_accum_steps: method {name!r} has its own update step, "
                      f"which does not accumulate gradients over micro-batches; use 1")
  if config.data.batch_size % (n * device_count):
    raise ConfigError(
        f"data.batch_size: {config.data.batch_size} does not split into {n} micro-batches "
        f"(train.grad_accum_steps) over {device_count} device(s); use a multiple of "
        f"{n * device_count}")


# --- Published protocols (experiments/protocols/*.py) ---------------------------------------


def protocol_task(arg: str, tasks, default_method: str = "dann") -> tuple[str, str]:
  """A protocol config's argument, 'A2W' or 'A2W,cdan', -> (task, method name)."""
  task, _, method = arg.partition(",")
  if task not in tasks:
    raise ConfigError(f"task: unknown {task!r}; allowed: {', '.join(tasks)}")
  return task, method or default_method


def tllib_config(*, source: str, target: str, model: str, lr: float, batch_size: int,
                 steps: int, eval_every: int, method: str = "dann", init_from: str = "",
                 bottleneck_dim: int = 256, source_val_split: str = "train",
                 target_test_split: str = "train", prefetch: int = 2,
                 augment: str = "none") -> ml_collections.ConfigDict:
  """Transfer-Learning-Library's recipe (its examples/domain_adaptation/image_classification
  scripts): SGD momentum 0.9 Nesterov, weight decay 1e-3, lr·(1+0.001·i)^-0.75 ('inv'),
  bottleneck Dense-BN-ReLU then a linear head, a pretrained backbone (`init_from`) at 0.1×
  the lr, DANN's domain classifier 1024-1024; `augment`: 'imagenet' (random-resized crop +
  flip of the decoded original, TLlib's train transform) for 224² folder/catalog domains,
  'none' for the digit protocols (the view's resize only).

  The target is read twice: its 'train' split unlabeled for adaptation and
  `target_test_split` for accuracy (Office/VisDA: the same images, as TLlib does).
  """
  c = base_config()
  c.data.source, c.data.source_val_split = source, source_val_split
  c.data.target, c.data.target_test_split = target, target_test_split
  c.data.augment = augment
  c.data.batch_size = batch_size
  c.data.eval_batch_size = 256
  c.data.prefetch = prefetch  # 224² protocols: 8 JPEG-decoding threads
  c.model.name = model
  c.model.bottleneck_dim = bottleneck_dim
  c.model.head_hidden = ()
  c.model.init_from = init_from
  c.method.name = method
  c.method.disc_hidden = (1024, 1024)
  if method == "mdd":  # TLlib's MDD reverses the gradient with a warm start up to 0.1
    from jaxdapt.methods.mdd import GRL_MAX
    c.method.weight = GRL_MAX
  c.optim.lr = lr
  c.optim.nesterov = True
  c.optim.weight_decay = 1e-3
  c.optim.schedule = "inv"
  c.optim.preset = "discriminative" if init_from else ""
  c.train.steps = steps
  c.train.eval_every = c.train.checkpoint_every = eval_every
  return c


def published_table(doc: str) -> dict[str, dict[str, float]]:
  """The table in a protocol file's docstring -> {method: {column: value}}.

  The table starts at a line 'method <column> ...' and ends at the next blank line; each
  row is 'method value ...'. Parsing the docstring keeps one copy of the numbers.
  """
  lines = doc.splitlines()
  start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["method"])
  columns = lines[start].split()[1:]
  out = {}
  for line in lines[start + 1:]:
    if not line.strip():
      break
    method, *values = line.split()
    if len(values) != len(columns):
      raise ValueError(f"published_table: {method} has {len(values)} values for "
                       f"{len(columns)} columns")
    out[method] = dict(zip(columns, map(float, values)))
  return out


def all_pairs(domains: dict[str, str]) -> dict[str, tuple[str, str]]:
  """{'Ar2Cl': (source, target), ...} for every ordered pair of distinct domains."""
  return {f"{s}2{t}": (domains[s], domains[t]) for s in domains for t in domains if s != t}


def tllib_task_config(arg: str, tasks: dict[str, tuple[str, str]],
                      **recipe) -> ml_collections.ConfigDict:
  """A TLlib protocol file's get_config: 'task[,method]' -> tllib_config(**recipe)."""
  task, method = protocol_task(arg, tasks)
  source, target = tasks[task]
  return tllib_config(source=source, target=target, method=method, **recipe)
