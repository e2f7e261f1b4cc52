"""Shared recipes that the config files in experiments/ build on.

The digits recipe (the offline tasks), the few-shot recipe, Transfer-Learning-Library's
protocol recipe and the helpers of the published-protocol files. They sit above the
methods (MDD's gradient-reversal cap) and below the tools; the schema they start from is
jaxdapt/config.py.
"""

from __future__ import annotations

import ml_collections

from jaxdapt.config import base_config
from jaxdapt.errors import ConfigError
from jaxdapt.methods.mdd import GRL_MAX

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


def fewshot_recipe(task: str, method: str, k: int = 5) -> ml_collections.ConfigDict:
  """The few-shot recipes' base: the digits recipe (digits_config, not
  tuned for few shots) with `method` and k labeled target examples per class."""
  config = digits_config(task)
  config.method.name = method
  config.data.target_labeled_per_class = k
  return config


# Text: Debian package descriptions, English (labelled) -> German, French or Spanish
# (docs/datasets_text.md); en2en is the in-language reference of the few-label study.
TEXT_TASKS = {f"en2{t}": ("debian_text/en", f"debian_text/{t}") for t in ("en", "de", "fr", "es")}
TEXT_WEIGHTS = "runs/minilm"  # `jaxdapt weights import-text --out runs/minilm`


def text_config(task: str = "en2de", method: str = "source_only") -> ml_collections.ConfigDict:
  """The text recipe: all-MiniLM-L6-v2 (real pretrained weights, model.init_from =
  TEXT_WEIGHTS), a linear head on its mean-pooled features, AdamW 5e-5 (weight decay 0.01,
  cosine decay): the usual BERT fine-tuning recipe, not tuned here.

  Sized for a 2-core CPU: each row's first 64 tokens (model.max_tokens; the median English
  description has 79, the median German one 128), 16 rows per domain, 200 steps, evaluated
  at 100 and 200 on a quarter of the source validation split and the whole target test split;
  label-free SND/DEV scores off (train.selection_points = 0). On an accelerator:
  --set model.max_tokens=0 data.batch_size=32 train.steps=1000.
  """
  if task not in TEXT_TASKS:
    raise ConfigError(f"task: unknown {task!r}; allowed: {', '.join(TEXT_TASKS)}")
  c = base_config()
  c.data.source, c.data.target = TEXT_TASKS[task]
  c.data.source_val_split = "validation[:25%]"
  c.data.augment = "none"  # token ids: no pixel augmentation
  c.data.batch_size = 16
  c.data.eval_batch_size = 256
  c.model.name = "minilm_l6"
  c.model.init_from = TEXT_WEIGHTS
  c.model.max_tokens = 64
  c.model.head_hidden = ()
  c.model.bottleneck_dim = 0
  c.method.name = method
  c.method.disc_hidden = (256,)
  c.optim.name = "adamw"
  c.optim.lr = 5e-5
  c.optim.weight_decay = 0.01
  c.optim.schedule = "cosine"
  c.train.steps = 200
  c.train.log_every = 50
  c.train.eval_every = c.train.checkpoint_every = 100
  c.train.keep_checkpoints = 1  # 270 MB a checkpoint (AdamW's two moments)
  c.train.selection_points = 0
  return c


def text_fewlabel_config(arg: str = "k16") -> ml_collections.ConfigDict:
  """English few-label transfer: `target_only` on k labelled debian_text/en training
  descriptions per class ('k4', 'k16', 'k64'; 'all': every one), 100 steps (40 epochs of
  k4, a tenth of one of all), tested once at the end on a quarter of the English test split
  (976 rows). The source side is unused except for a tenth of its validation split, which
  the trainer always scores."""
  k = {"all": -1}.get(arg) or (int(arg[1:]) if arg[:1] == "k" and arg[1:].isdigit() else 0)
  if not k:
    raise ConfigError(f"task: {arg!r}; allowed: k<N> (labels per class, e.g. k16) or all")
  c = text_config("en2en", "target_only")
  c.data.target_labeled_per_class = k
  c.data.source_val_split = "validation[:10%]"
  c.data.target_test_split = "test[:25%]"
  c.train.steps = 100
  c.train.eval_every = c.train.checkpoint_every = c.train.steps
  return c


# PEFT's learning rate in the text studies: the new parameters start at zero (LoRA's B,
# adapters' up-projection) or are few (biases), and the PEFT papers train them at 1e-4 to
# 1e-3 (LoRA on RoBERTa-base: 4e-4 to 5e-4) where full fine-tuning uses 1e-5 to 5e-5.
PEFT_LR = 5e-4


def text_peft_config(task: str = "k16", **peft) -> ml_collections.ConfigDict:
  """text_fewlabel_config(task) with config.peft set from `peft` and lr PEFT_LR."""
  c = text_fewlabel_config(task)
  for field, value in peft.items():
    if field not in c.peft:
      raise ConfigError(f"peft: unknown field {field!r}; fields: {', '.join(c.peft)}")
    c.peft[field] = value
  c.optim.lr = PEFT_LR
  return c


def protocol_task(arg: str, tasks, default_method: str = "dann") -> tuple[str, str]:
  """A protocol config's argument, 'A2W' or 'A2W,cdan', -> (task, method name)."""
  task, _, method = arg.partition(",")
  if task not in tasks:
    raise ConfigError(f"task: unknown {task!r}; allowed: {', '.join(tasks)}")
  return task, method or default_method


def tllib_config(
  *,
  source: str,
  target: str,
  model: str,
  lr: float,
  batch_size: int,
  steps: int,
  eval_every: int,
  method: str = "dann",
  init_from: str = "",
  bottleneck_dim: int = 256,
  source_val_split: str = "train",
  target_test_split: str = "train",
  prefetch: int = 2,
  augment: str = "none",
) -> ml_collections.ConfigDict:
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
  for line in lines[start + 1 :]:
    if not line.strip():
      break
    method, *values = line.split()
    if len(values) != len(columns):
      raise ValueError(
        f"published_table: {method} has {len(values)} values for {len(columns)} columns"
      )
    out[method] = dict(zip(columns, map(float, values)))
  return out


def all_pairs(domains: dict[str, str]) -> dict[str, tuple[str, str]]:
  """{'Ar2Cl': (source, target), ...} for every ordered pair of distinct domains."""
  return {f"{s}2{t}": (domains[s], domains[t]) for s in domains for t in domains if s != t}


def tllib_task_config(
  arg: str, tasks: dict[str, tuple[str, str]], **recipe
) -> ml_collections.ConfigDict:
  """A TLlib protocol file's get_config: 'task[,method]' -> tllib_config(**recipe)."""
  task, method = protocol_task(arg, tasks)
  source, target = tasks[task]
  return tllib_config(source=source, target=target, method=method, **recipe)
