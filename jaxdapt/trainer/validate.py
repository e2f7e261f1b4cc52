"""Cross-subsystem validation: the config against the registries, the subsystems' own
allowed values and the method's and add-ons' check_config hooks, before anything is built.

Each allowed-value list lives in the module that uses it (batchnorm.BN_POLICIES,
optim.OPTIMIZERS, data.pipeline.AUGMENTS, ...); this module only checks against them.
"""

from __future__ import annotations

import inspect
import math
import re

import ml_collections

from jaxdapt import batchnorm, finetune, methods, models, optim, peft, step
from jaxdapt.config import base_config
from jaxdapt.data import pipeline
from jaxdapt.errors import ConfigError
from jaxdapt.kernels import cpu_conv


def _check_choice(field: str, value, allowed) -> None:
  if value not in allowed:
    raise ConfigError(f"{field}: {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


def _check_keys(config, schema, prefix: str = "") -> None:
  for key in config.keys():
    name = f"{prefix}{key}"
    if key not in schema:
      raise ConfigError(
        f"{name}: unknown config field; allowed here: {', '.join(sorted(schema.keys()))}"
      )
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
  if not _is_number(optim.weight_decay) or optim.weight_decay < 0:
    raise ConfigError(f"optim.weight_decay: must be a number >= 0, got {optim.weight_decay!r}")
  _check_choice("optim.preset", optim.preset, ("",) + tuple(finetune.PRESETS))
  if optim.preset and tuple(map(tuple, optim.rules)) != tuple(base_config().optim.rules):
    raise ConfigError(
      f"optim.preset: {optim.preset!r} is a rule list and replaces "
      f"optim.rules, which is also set ({optim.rules!r}); set only one"
    )
  if not _is_number(optim.llrd) or not 0 <= optim.llrd <= 1:
    raise ConfigError(
      f"optim.llrd: must be a decay factor in [0, 1] (0 or 1: off), got {optim.llrd!r}"
    )
  for i, entry in enumerate(optim.unfreeze):
    if not (
      isinstance(entry, (tuple, list))
      and len(entry) == 2
      and isinstance(entry[0], int)
      and not isinstance(entry[0], bool)
      and entry[0] > 0
      and isinstance(entry[1], str)
    ):
      raise ConfigError(f"optim.unfreeze[{i}]: must be a (step > 0, regex) pair, got {entry!r}")
    try:
      re.compile(entry[1])
    except re.error as e:
      raise ConfigError(f"optim.unfreeze[{i}]: bad regex {entry[1]!r}: {e}") from None


def _validate_peft(cfg: ml_collections.ConfigDict, model_name: str) -> None:
  """config.peft (jaxdapt/peft); whether each LoRA target matches a kernel is checked
  where the model's parameters are known (trainer.build_functions). Adapters and prompts
  are backbone options: the model must take them (its builder has the option)."""
  _check_choice("peft.method", cfg.method, peft.METHODS)
  _check_positive("peft.lora_rank", cfg.lora_rank)
  _check_positive("peft.adapter_dim", cfg.adapter_dim)
  _check_positive("peft.prompt_tokens", cfg.prompt_tokens)
  options = peft.model_options(cfg)
  builder = inspect.signature(models.MODELS.get(model_name)).parameters
  missing = [o for o in options if o not in builder]
  if missing:
    able = [
      m
      for m in models.MODELS.names()
      if all(o in inspect.signature(models.MODELS.get(m)).parameters for o in options)
    ]
    what = "adapters" if cfg.method == "adapter" else "prompt tokens"
    raise ConfigError(
      f"peft.method: {cfg.method!r} needs a model that builds {what}; model.name "
      f"{model_name} does not (models that do: {', '.join(able)})"
    )
  if not _is_number(cfg.lora_alpha) or cfg.lora_alpha <= 0:
    raise ConfigError(f"peft.lora_alpha: must be a number > 0, got {cfg.lora_alpha!r}")
  if not _is_number(cfg.lora_dropout) or not 0 <= cfg.lora_dropout < 1:
    raise ConfigError(f"peft.lora_dropout: must be in [0, 1), got {cfg.lora_dropout!r}")
  targets = cfg.lora_targets
  if isinstance(targets, str) or not isinstance(targets, (tuple, list)):
    raise ConfigError(f"peft.lora_targets: must be a list of regexes, got {targets!r}")
  if cfg.method == "lora" and not targets:
    raise ConfigError("peft.lora_targets: empty; peft.method='lora' needs at least one regex")
  for i, target in enumerate(targets):
    if not isinstance(target, str):
      raise ConfigError(f"peft.lora_targets[{i}]: must be a regex string, got {target!r}")
    try:
      re.compile(target)
    except re.error as e:
      raise ConfigError(f"peft.lora_targets[{i}]: bad regex {target!r}: {e}") from None


def _check_finite(config, prefix: str = "") -> None:
  """No NaN or infinity anywhere (optim.lr=nan would compile, train and stop on a
  non-finite loss; checked here, before anything is built or written)."""
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      _check_finite(value, name + ".")
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
      if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"{name}: must be a finite number, got {value!r}")


def validate(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
  """Raises ConfigError for the first field that cannot work."""
  _check_keys(config, base_config())
  _check_finite(config)
  methods.METHODS.get(config.method.name)
  models.MODELS.get(config.model.name)
  if config.method.bn == "frozen":
    raise ConfigError(
      "method.bn: 'frozen' is model.bn_mode='frozen_stats' (running statistics"
      " in training) or 'frozen' (and scale/bias); method.bn is how domains "
      f"share BatchNorm: {', '.join(batchnorm.BN_POLICIES)}"
    )
  _check_choice("method.bn", config.method.bn, batchnorm.BN_POLICIES)
  _check_choice("model.bn_mode", config.model.bn_mode, batchnorm.BN_MODES)
  _check_choice("train.eval_target_bn", config.train.eval_target_bn, batchnorm.EVAL_TARGET_BN)
  if config.method.bn == "dsbn" and methods.METHODS.get(config.method.name).adapts_trained_model:
    raise ConfigError(
      f"method.bn: 'dsbn' keeps a BatchNorm branch per domain, but method "
      f"{config.method.name!r} adapts a model with one; use joint or separate"
    )
  _check_choice(
    "method.weight_schedule", config.method.weight_schedule, methods.base.WEIGHT_SCHEDULES
  )
  _check_choice("optim.name", config.optim.name, optim.OPTIMIZERS)
  _check_choice("optim.schedule", config.optim.schedule, optim.LR_SCHEDULES)
  _check_choice("model.dtype", config.model.dtype, step.DTYPES)
  _check_choice("model.remat", config.model.remat, (False, True))
  _check_choice("model.conv_kernel", config.model.conv_kernel, cpu_conv.KERNELS)
  _check_choice("data.augment", config.data.augment, pipeline.AUGMENTS)
  for field in (
    "data.batch_size",
    "data.eval_batch_size",
    "train.steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.grad_accum_steps",
  ):
    group, key = field.split(".")
    _check_positive(field, config[group][key])
  if config.train.checkpoint_every % config.train.log_every:
    raise ConfigError(
      f"train.checkpoint_every: {config.train.checkpoint_every} must be a multiple of "
      f"train.log_every ({config.train.log_every}) so no checkpoint holds an unchecked loss"
    )
  smoothing = config.method.label_smoothing
  if (
    isinstance(smoothing, bool)
    or not isinstance(smoothing, (int, float))
    or not (0 <= smoothing < 1)
  ):
    raise ConfigError(f"method.label_smoothing: must be in [0, 1), got {smoothing!r}")
  every = config.method.refresh_every
  if isinstance(every, bool) or not isinstance(every, int) or every < 0:
    raise ConfigError(f"method.refresh_every: must be an integer >= 0, got {every!r}")
  if methods.METHODS.get(config.method.name).adapts_trained_model:
    name = config.method.name
    if not config.model.init_from:
      raise ConfigError(
        f"model.init_from: method {name!r} adapts a trained source model; set "
        f"it to the stage-1 workdir (see experiments/digits/{name}.py)"
      )
    if tuple(config.model.dont_load):
      raise ConfigError(
        f"model.dont_load: method {name!r} starts from the whole source model "
        f"(head included); must be (), got {tuple(config.model.dont_load)}"
      )
  if config.optim.lr <= 0:
    raise ConfigError(f"optim.lr: must be > 0, got {config.optim.lr}")
  if not _is_number(config.optim.b1) or not 0 <= config.optim.b1 < 1:
    raise ConfigError(
      f"optim.b1: Adam's first-moment decay must be in [0, 1), got {config.optim.b1!r}"
    )
  _validate_finetune(config.optim)
  _validate_peft(config.peft, config.model.name)
  methods.check_config(config)  # k-shot target labels, regularisers, MME's cosine head
  for i, rule in enumerate(config.optim.rules):
    if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
      raise ConfigError(
        f"optim.rules[{i}]: must be a (regex, multiplier | None) pair, got {rule!r}"
      )
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
          f"use a multiple of {device_count}"
        )
  _validate_grad_accum(config, device_count or 1)


def _validate_grad_accum(config: ml_collections.ConfigDict, device_count: int) -> None:
  """train.grad_accum_steps against the method (its step must accumulate) and the batch."""
  n, name = config.train.grad_accum_steps, config.method.name
  if n == 1:
    return
  if not methods.METHODS.get(name).accumulates_gradients:
    raise ConfigError(
      f"train.grad_accum_steps: method {name!r} has its own update step, "
      f"which does not accumulate gradients over micro-batches; use 1"
    )
  if config.data.batch_size % (n * device_count):
    raise ConfigError(
      f"data.batch_size: {config.data.batch_size} does not split into {n} micro-batches "
      f"(train.grad_accum_steps) over {device_count} device(s); use a multiple of "
      f"{n * device_count}"
    )
