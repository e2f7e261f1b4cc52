"""What a run costs beside its accuracy: trainable parameters, optimizer-state and parameter
bytes (from the initial state's shapes, as `jaxdapt optim`), checkpoint bytes on disk and
seconds per step (from the run's files). transfer-table and `grid --costs` report them.
"""

from __future__ import annotations

import json
import os
from typing import Any

COST_HELP = (
  "trainable parameters and optimizer-state bytes from the leaves of the state a run "
  "starts with (jax.eval_shape of its init, as `jaxdapt optim`); checkpoint: bytes of the "
  "files of the newest step in the run's checkpoints/ (state, data position, config); "
  "ms/step: data.batch_size × domains / images_per_s of the last train row of "
  "metrics.jsonl (the first logged interval includes compiling)"
)


def _nbytes(tree) -> int:
  import jax

  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def model_costs(config) -> dict[str, Any]:
  """What a run's config trains, before training (the numbers of `jaxdapt optim`):
  trainable and total parameters, optimizer-state and parameter bytes from the leaves of
  the initial state's shapes, and the images one step reads (for ms/step)."""
  import jax

  from jaxdapt import optim, trainer
  from jaxdapt.trainer.build import optimizer_config

  exp = trainer.build(config)
  state = jax.eval_shape(exp.init, jax.random.key(0))
  table = optim.multipliers(optimizer_config(config, state.batch_stats), state.params)
  sizes = dict(optim.named_leaves(jax.tree.map(lambda x: x.size, state.params)))
  return {
    "trainable": sum(sizes[n] for n, (_, mult, _) in table.items() if mult is not None),
    "parameters": sum(sizes.values()),
    "optimizer_state_bytes": _nbytes(state.opt_state),
    "parameter_bytes": _nbytes(state.params),
    "images_per_step": config.data.batch_size * len(exp.method.domains),
    "peft": peft_label(config.peft),
  }


def peft_label(peft) -> str:
  """config.peft in a few words ('–' when off), e.g. 'lora r=4 α=8'."""
  if peft.method == "lora":
    return f"lora r={peft.lora_rank} α={peft.lora_alpha:g}"
  if peft.method == "adapter" and "adapter_dim" in peft:
    return f"adapter dim={peft.adapter_dim}"
  if peft.method.startswith("vpt") and "prompt_tokens" in peft:
    return f"{peft.method} {peft.prompt_tokens} tokens"
  return peft.method or "–"


def checkpoint_bytes(workdir: str) -> int | None:
  """Bytes of the files of the newest step in workdir/checkpoints (what one saved step
  costs on disk: state, data position, config); None without one."""
  root = os.path.join(workdir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else []
  if not steps:
    return None
  top = os.path.join(root, str(steps[-1]))
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(top) for f in files)


def step_seconds(workdir: str, images_per_step: int) -> float | None:
  """Seconds per training step over the last logged interval of metrics.jsonl: the
  first interval also holds compiling (or loading the cached program), the last one only
  steps. None without a train row."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    rows = [r for r in map(json.loads, filter(str.strip, f)) if r["kind"] == "train"]
  return images_per_step / rows[-1]["images_per_s"] if rows else None
