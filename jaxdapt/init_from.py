"""model.init_from: start a state from pretrained weights or another run's checkpoint.

Loading is strict (weights.merge_into): every parameter is loaded or matches a
model.dont_load regex. A single-branch model loads into both BatchNorm branches of a
DSBN model; a DSBN checkpoint loads only into a DSBN model.

LoRA (config.peft, jaxdapt/peft/lora.py): the weights are first merged (peft.lora.merged),
so a LoRA run's factors are folded into its kernels, and a merged or unmerged LoRA run
loads alike, into any model of the architecture. The LoRA leaves of the model being
started are new parameters, never loaded (as if model.dont_load named them): a LoRA model
starts as the loaded model exactly (B = 0) with fresh factors, whether the weights came
from a plain run, an import, or a LoRA run (whose factors are then part of the base).

Adapters and prompt tokens (peft.method 'adapter', 'vpt_*') add computation, so they cannot
be folded into a base: the model's adapter / prompt leaves are new parameters (kept at their
init, which leaves the loaded model's function unchanged) when the weights hold none; when
the weights hold them (an adapter or VPT run) they load like any parameter (strictly: the
same peft.adapter_dim / prompt_tokens), and weights holding them cannot load into a model
without them (a one-line ConfigError: dropping them would silently change the function).
"""

from __future__ import annotations

import dataclasses
import os
import re

import jax

from jaxdapt import batchnorm, checkpoint, peft, sharding, weights
from jaxdapt.errors import ConfigError
from jaxdapt.step import TrainState
from jaxdapt.tree import named_leaves

# Leaves a backbone builds for peft.method 'adapter' / 'vpt_*', as the init_from rule sees them.
_MODEL_OPTION_LEAVES = (
  (peft.adapter.ADAPTER_LEAF, "adapters", "peft.method='adapter' with the same adapter_dim"),
  (peft.adapter.PROMPT_LEAF, "prompt tokens", "the same peft.method='vpt_*' and prompt_tokens"),
)


def new_leaves(init_from: str, model_params, pretrained_params) -> tuple[str, ...]:
  """Regexes of the model's leaves that `pretrained_params` cannot supply and that start at
  their init: LoRA factors always, adapters / prompts when the weights have none. Raises
  ConfigError for weights with adapters or prompts that the model lacks."""
  model = [n for n, _ in named_leaves(model_params)]
  weights = [n for n, _ in named_leaves(pretrained_params)]
  out = [peft.lora.ANY_LEAF]
  for regex, what, how in _MODEL_OPTION_LEAVES:
    held = next((n for n in weights if re.fullmatch(regex, n)), None)
    if held is None:
      out.append(regex)
    elif not any(re.fullmatch(regex, n) for n in model):
      raise ConfigError(
        f"model.init_from: {init_from} holds {what} ({held}, ...), which cannot be folded "
        f"into plain weights; load it into a model that has them ({how})"
      )
  return tuple(out)


def split_run_step(init_from: str) -> tuple[str, int | None]:
  """'RUN@STEP' → (RUN, STEP): that checkpoint of a jaxdapt workdir; else (init_from, None)."""
  run, at, step = init_from.rpartition("@")
  return (run, int(step)) if at and step.isdigit() else (init_from, None)


def load_init_from(exp, state: TrainState) -> TrainState:
  """Replaces the model's initial variables by config.model.init_from (strict merge).

  `exp` is the trainer's Experiment (only its config and mesh are read), so methods that
  start from a trained model (ADDA's source encoder, the regularisers' step-0 model) load
  it the same way the trainer does."""
  cfg = exp.config.model
  run, step = split_run_step(cfg.init_from)
  if os.path.isdir(os.path.join(run, "checkpoints")):  # a jaxdapt workdir
    params, batch_stats, step = checkpoint.load_model_variables(run, step)
    pretrained = weights.PretrainedWeights(params, batch_stats, {"arch": cfg.name, "step": step})
  else:  # a directory written by `jaxdapt weights import`
    pretrained = weights.load_pretrained(cfg.init_from, arch=cfg.name)
  pretrained = dataclasses.replace(pretrained, params=peft.lora.merged(pretrained.params))
  params, batch_stats = jax.device_get((state.params["model"], state.batch_stats))
  copy_branch = False  # DSBN model, one-branch weights: load one branch, copy it to all
  if exp.config.method.bn == "dsbn":
    plain = batchnorm.branch(params, batch_stats, "source")
    if not batchnorm.holds_branches(pretrained.batch_stats, plain[1]):
      (params, batch_stats), copy_branch = plain, True
  elif batchnorm.holds_branches(pretrained.batch_stats, batch_stats):
    raise ConfigError(
      f"model.init_from: {cfg.init_from} holds a DSBN model (a BatchNorm "
      f"branch per domain); load it with method.bn='dsbn'"
    )
  params, batch_stats, report = weights.merge_into(
    params,
    batch_stats,
    pretrained,
    tuple(cfg.dont_load) + new_leaves(cfg.init_from, params, pretrained.params),
  )
  if copy_branch:
    params, batch_stats = batchnorm.stack(params, batch_stats)
  if jax.process_index() == 0:
    print(f"init_from {cfg.init_from}: {report.summary()}", flush=True)
  replicated = sharding.replicated(exp.mesh)
  return state.replace(
    params={**state.params, "model": jax.device_put(params, replicated)},
    batch_stats=jax.device_put(batch_stats, replicated),
  )
