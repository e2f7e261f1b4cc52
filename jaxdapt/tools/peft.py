"""A PEFT run's checkpoint as a small delta, or as plain weights: `jaxdapt peft export|merge`.

export: the leaves the run's peft.method trained (LoRA factors, adapters, prompts, biases;
the head, bottleneck, dont_load layers; BatchNorm statistics that moved) and a reference
to its base weights (model.init_from, with the sha256 of the files they are read from),
written to OUT/delta.npz and OUT/peft.json; prints the delta's bytes next to the full
checkpoint's. jaxdapt.peft.delta.reconstruct(OUT) gives the run's parameters back, bitwise.

merge: a LoRA run's factors folded into its kernels (W + scale·A·B), written as an import
directory (OUT/checkpoint, OUT/metadata.json) that model.init_from reads like imported
weights. Only LoRA folds: adapters and prompts add computation (export them instead).

  jaxdapt peft export --workdir runs/lora5 --out runs/lora5_delta
  jaxdapt peft merge --workdir runs/lora5 --out weights/lora5_merged
"""

from __future__ import annotations

import argparse
import json
import os
import types
from collections.abc import Sequence

from jaxdapt.errors import ConfigError
from jaxdapt.tools import cli


def _run_config(workdir: str) -> dict:
  """The config.json a run wrote when it started (the JSON of its ConfigDict)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isdir(os.path.join(workdir, "checkpoints")) or not os.path.isfile(path):
    raise ConfigError(
      f"--workdir: {workdir} is not a jaxdapt run (no checkpoints/ and config.json)"
    )
  with open(path) as f:
    return json.load(f)


def _peft_method(config: dict) -> str:
  return config.get("peft", {}).get("method", "")


def _size(n: int) -> str:
  for unit, div in (("MB", 1 << 20), ("kB", 1 << 10)):
    if n >= div:
      return f"{n:,} bytes ({n / div:.1f} {unit})"
  return f"{n:,} bytes"


def cmd_export(args: argparse.Namespace) -> int:
  config = _run_config(args.workdir)
  method = _peft_method(config)
  if not method:
    raise ConfigError(
      f"peft export: {args.workdir} was trained with peft.method='' (every parameter "
      f"trains): it has no delta; its checkpoint is the model"
    )
  init_from = config["model"].get("init_from", "")
  if not init_from:
    raise ConfigError(
      f"peft export: {args.workdir} has no model.init_from: its frozen parameters are a "
      f"random init, not base weights a delta can refer to"
    )
  from jaxdapt import checkpoint
  from jaxdapt.init_from import split_run_step
  from jaxdapt.peft import delta

  params, batch_stats, step = checkpoint.load_model_variables(args.workdir, args.step)
  base_run, base_step = split_run_step(init_from)
  base_params, base_stats, ref = delta.load_base(base_run, base_step, init_from)
  dont_load = tuple(config["model"].get("dont_load", ()))
  leaves = delta.split(params, batch_stats, base_params, base_stats, method, dont_load)
  metadata = {
    "run": {
      "workdir": os.path.abspath(args.workdir),
      "step": step,
      "model": config["model"]["name"],
      "peft": config.get("peft", {}),
    },
    "base": ref,
    "tensors": {c: sorted(v) for c, v in leaves.items()},
  }
  out = delta.save(args.out, leaves, metadata, force=args.force)
  small = delta.nbytes(os.path.join(out, delta.DELTA_FILE)) + delta.nbytes(
    os.path.join(out, delta.META_FILE)
  )
  full_dir = os.path.join(os.path.abspath(args.workdir), "checkpoints", str(step))
  full = delta.nbytes(full_dir)
  n = sum(len(v) for v in leaves.values())
  print(
    f"delta: {n} tensors (peft.method={method!r}), {_size(small)} -> {out}\n"
    f"full checkpoint {full_dir}: {_size(full)} ({full / max(small, 1):.1f}x the delta)\n"
    f"base: model.init_from={init_from} ({ref['kind']}"
    + (f" step {ref['step']}" if ref["kind"] == "run" else "")
    + f"), sha256 of {len(ref['sha256'])} files recorded"
  )
  return 0


def cmd_merge(args: argparse.Namespace) -> int:
  config = _run_config(args.workdir)
  method = _peft_method(config)
  if method != "lora":
    raise ConfigError(
      f"peft merge: {args.workdir} was trained with peft.method={method!r}; only LoRA "
      f"factors fold into plain weights (adapters and prompts add computation: use "
      f"`jaxdapt peft export`)"
    )
  from jaxdapt import checkpoint, step
  from jaxdapt.peft import lora
  from jaxdapt.weights import save_pretrained

  params, batch_stats, at = checkpoint.load_model_variables(args.workdir, args.step)
  merged = lora.merge_checkpoint_params(params)
  folded = sum(1 for name in _names(params) if name.endswith(lora.A))
  init_from = config["model"].get("init_from", "")
  # The run's input normalisation (its base's, when an import set it), so a model started
  # from the merged weights sees inputs as the run did.
  mean, std = step.input_mean_std(
    types.SimpleNamespace(model=types.SimpleNamespace(init_from=init_from))
  )
  metadata = {
    "arch": config["model"]["name"],
    "source": "jaxdapt peft merge",
    "run": os.path.abspath(args.workdir),
    "step": at,
    "init_from": init_from,
    "peft": config.get("peft", {}),
    "head_loaded": True,
    "mean": list(mean),
    "std": list(std),
  }
  out = save_pretrained(args.out, merged, batch_stats, metadata, force=args.force)
  print(
    f"{args.workdir} step {at}: {folded} LoRA kernels merged into plain weights -> {out}; "
    f"load with model.name={metadata['arch']!r}, model.init_from={out!r}"
  )
  return 0


def _names(tree) -> list[str]:
  from jaxdapt.tree import named_leaves

  return [n for n, _ in named_leaves(tree)]


def build_parser() -> argparse.ArgumentParser:
  p = cli.parser("peft", __doc__)
  sub = p.add_subparsers(dest="command", required=True)
  for name, fn, text in (
    ("export", cmd_export, "the run's trained leaves + a checked reference to its base"),
    ("merge", cmd_merge, "a LoRA run folded into plain weights (an import directory)"),
  ):
    cmd = sub.add_parser(name, help=text)
    cmd.add_argument("--workdir", required=True, help="the PEFT run (a jaxdapt workdir)")
    cmd.add_argument("--step", type=int, default=None, help="its checkpoint (default: latest)")
    cmd.add_argument("--out", required=True, help="the directory to write")
    cmd.add_argument("--force", action="store_true", help="overwrite what OUT holds")
    cmd.set_defaults(fn=fn)
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  return args.fn(args)
