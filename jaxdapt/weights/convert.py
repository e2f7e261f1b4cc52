"""torch state_dict -> this project's Flax `params` / `batch_stats` trees.

The expected tensors are derived from the Flax model itself (jax.eval_shape of
the registered backbone), each Flax leaf mapped back to the torch key it comes
from, so the check is exact: a file with a missing, extra or mis-shaped tensor
fails naming each one (only num_batches_tracked is ignored).

Name rules (Flax module path -> torch key):
  `name_{n}` -> `name.{n}` (layer1_0 -> layer1.0, features_7 -> features.7,
  blocks_3 -> blocks.3); ResNet `downsample_conv` / `downsample_bn` ->
  `downsample.0` / `downsample.1`; leaves kernel|scale -> weight, bias -> bias,
  mean|var -> running_mean|running_var, other params keep their name
  (cls_token, pos_embed).
Layouts: conv kernels OIHW -> HWIO (grouped ones too: [O, I/g, kh, kw] ->
[kh, kw, I/g, O]), Linear weights [out, in] -> [in, out]; everything else is
copied. VGG's channel-first flatten before fc6 lives in the model, so
classifier.0 needs only the transpose. The ViT pos_embed is resampled when the
file's grid differs from the model's.

The classification layer (torchvision `fc` / `classifier.6`, timm `fc` /
`head`) maps to the Classifier's `head/out` only with keep_head=True;
otherwise it is listed as skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxdapt.models import MODELS
from jaxdapt.models.vit import resample_pos_embed
from jaxdapt.weights.errors import WeightsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)  # timm's augreg ViT weights


@dataclasses.dataclass(frozen=True)
class Arch:
  """An importable architecture: registry name, family, head key, sources."""

  name: str
  family: str  # resnet | vgg | vit
  head: str  # torch prefix of the original classification layer
  sources: tuple[str, ...]


_TV = ("torchvision",)
ARCHS: dict[str, Arch] = {
  a.name: a
  for a in (
    *(
      Arch(n, "resnet", "fc", _TV)
      for n in (
        "resnet18",
        "resnet34",
        "resnet101",
        "resnet152",
        "wide_resnet50_2",
        "resnext50_32x4d",
      )
    ),
    Arch("resnet50", "resnet", "fc", ("torchvision", "timm")),
    *(
      Arch(f"vgg{d}{bn}", "vgg", "classifier.6", _TV)
      for d in (11, 13, 16, 19)
      for bn in ("", "_bn")
    ),
    Arch("vit_s16", "vit", "head", ("timm",)),
    Arch("vit_b16", "vit", "head", ("timm",)),
  )
}


def get_arch(name: str, source: str) -> Arch:
  if name not in ARCHS:
    raise WeightsError(f"--arch: {name!r} has no converter; allowed: {', '.join(sorted(ARCHS))}")
  arch = ARCHS[name]
  if source not in arch.sources:
    raise WeightsError(
      f"--source: {name} weights come from {', '.join(arch.sources)}, not {source!r}"
    )
  return arch


def preprocessing(arch: Arch, source: str) -> dict[str, Any]:
  """Input normalisation and resolution the original weights were trained with."""
  vit = arch.family == "vit"
  return {
    "mean": list(HALF if vit else IMAGENET_MEAN),
    "std": list(HALF if vit else IMAGENET_STD),
    "resolution": 224,
    "crop_pct": 0.9 if vit else 0.875,
    "resize_interpolation": "bicubic" if source == "timm" else "bilinear",
  }


@dataclasses.dataclass(frozen=True)
class Entry:
  """One expected torch tensor and where it goes in the Classifier variables."""

  key: str
  shape: tuple[int, ...]  # torch layout
  collection: str  # params | batch_stats
  path: tuple[str, ...]  # e.g. ('backbone', 'conv1', 'kernel')
  layout: str  # conv | linear | copy


_LEAF = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}
_MODULE = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}


def torch_key(path: tuple[str, ...]) -> str:
  """Flax path inside the backbone -> torch state_dict key (see module docstring)."""
  *mods, leaf = path
  parts = [_MODULE.get(m) or re.sub(r"_(\d+)$", r".\1", m) for m in mods]
  return ".".join(parts + [_LEAF.get(leaf, leaf)])


def _torch_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
  if layout == "conv":
    h, w, i, o = shape
    return (o, i, h, w)
  if layout == "linear":
    return tuple(reversed(shape))
  return tuple(shape)


def _to_flax(value: np.ndarray, layout: str) -> np.ndarray:
  """Transposed views, not copies: fc6 alone is 400 MB, and JAX / Orbax copy anyway."""
  if layout == "conv":
    return value.transpose(2, 3, 1, 0)
  if layout == "linear":
    return value.T
  return value


def _layout(path: tuple[str, ...], ndim: int) -> str:
  if path[-1] == "kernel":
    return {4: "conv", 2: "linear"}[ndim]
  return "copy"


def backbone_options(arch: Arch, img_size: int | None) -> dict[str, Any]:
  """Registry options the converted weights are for (only ViT has any)."""
  return {"img_size": img_size or 224} if arch.family == "vit" else {}


@functools.lru_cache(maxsize=8)
def expected(arch_name: str, img_size: int | None = None) -> tuple[tuple[Entry, ...], int]:
  """(entries of the backbone, feature width) for `arch_name`, from jax.eval_shape."""
  arch = ARCHS[arch_name]
  options = backbone_options(arch, img_size)
  module = MODELS.get(arch_name)(**options)
  side = options.get("img_size", 32)
  out, variables = jax.eval_shape(
    lambda: module.init_with_output(
      jax.random.key(0), jnp.zeros((1, side, side, 3), jnp.float32), train=False
    )
  )
  entries = []
  for collection in ("params", "batch_stats"):
    for path, leaf in traverse_util.flatten_dict(variables.get(collection, {})).items():
      layout = _layout(path, len(leaf.shape))
      entries.append(
        Entry(
          torch_key(path),
          _torch_shape(leaf.shape, layout),
          collection,
          ("backbone",) + path,
          layout,
        )
      )
  return tuple(entries), int(np.prod(out.shape[1:]))


@dataclasses.dataclass
class Converted:
  """Classifier-layout trees plus what happened to every tensor of the file."""

  params: dict
  batch_stats: dict
  num_classes: int | None  # of the file's head, if it has one
  rows: list[tuple[str, tuple[int, ...], str]]  # (torch key, torch shape, target or why skipped)


def _shape_str(shape: tuple[int, ...]) -> str:
  return "[" + ", ".join(map(str, shape)) + "]"


def convert(
  tensors: Mapping[str, np.ndarray],
  arch_name: str,
  source: str,
  *,
  keep_head: bool = False,
  img_size: int | None = None,
  pos_interpolation: str = "bilinear",
  what: str = "weights",
) -> Converted:
  """Strictly maps a torch state_dict onto the Flax variables of `arch_name`.

  `what` names the file in errors. Raises WeightsError listing every missing,
  extra and mis-shaped tensor at once.
  """
  arch = get_arch(arch_name, source)
  entries, feat_dim = expected(arch_name, img_size)
  by_key = {e.key: e for e in entries}
  head_keys = {f"{arch.head}.weight", f"{arch.head}.bias"}
  missing = [f"{k} {_shape_str(e.shape)}" for k, e in by_key.items() if k not in tensors]
  extra, misshaped, rows = [], [], []
  flat: dict[tuple[str, ...], np.ndarray] = {}
  for key, value in tensors.items():
    shape = tuple(value.shape)
    if key.endswith("num_batches_tracked"):
      rows.append((key, shape, "ignored (BatchNorm counter)"))
    elif key in head_keys:
      rows.append((key, shape, "head/out (--keep-head)" if keep_head else "skipped (head)"))
    elif key not in by_key:
      extra.append(f"{key} {_shape_str(shape)}")
      rows.append((key, shape, "UNEXPECTED"))
    else:
      e = by_key[key]
      if key == "pos_embed" and shape != e.shape:
        value = _resample_pos(value, e.shape, pos_interpolation, misshaped)
        if value is None:
          continue
      elif shape != e.shape:
        misshaped.append(
          f"{key}: file {_shape_str(shape)}, {arch_name} expects {_shape_str(e.shape)}"
        )
        rows.append((key, shape, "MIS-SHAPED"))
        continue
      flat[(e.collection,) + e.path] = _to_flax(value, e.layout)
      note = {"conv": " (OIHW->HWIO)", "linear": " (transposed)"}.get(e.layout, "")
      if key == "pos_embed" and shape != e.shape:
        note = f" (resampled {pos_interpolation} to {_shape_str(e.shape)})"
      rows.append((key, shape, f"{e.collection}/{'/'.join(e.path)}{note}"))
  num_classes = None
  if f"{arch.head}.weight" in tensors:
    num_classes = int(tensors[f"{arch.head}.weight"].shape[0])
  if keep_head:
    _convert_head(tensors, arch, feat_dim, flat, missing, misshaped)
  problems = [
    (missing, "missing"),
    (extra, "unexpected (not part of " + arch_name + ")"),
    (misshaped, "mis-shaped"),
  ]
  if any(p for p, _ in problems):
    lines = [f"{what} do not fit {arch_name} ({source}):"]
    for items, label in problems:
      if items:
        lines.append(f"  {len(items)} {label}: " + "; ".join(items))
    raise WeightsError("\n".join(lines))
  trees = traverse_util.unflatten_dict(flat)
  return Converted(trees.get("params", {}), trees.get("batch_stats", {}), num_classes, rows)


def _resample_pos(
  value: np.ndarray, want: tuple[int, ...], mode: str, misshaped: list[str]
) -> np.ndarray | None:
  n = value.shape[1] - 1 if value.ndim == 3 else -1
  g = int(round(max(n, 0) ** 0.5))
  if value.ndim != 3 or value.shape[0] != 1 or value.shape[2] != want[2] or g * g != n:
    misshaped.append(
      f"pos_embed: file {_shape_str(value.shape)}, expects {_shape_str(want)} "
      f"(or any [1, 1 + g*g, {want[2]}] to resample)"
    )
    return None
  gw = int(round((want[1] - 1) ** 0.5))
  return resample_pos_embed(value.astype(np.float32), (gw, gw), mode)


def _convert_head(
  tensors: Mapping[str, np.ndarray],
  arch: Arch,
  feat_dim: int,
  flat: dict,
  missing: list[str],
  misshaped: list[str],
) -> None:
  w, b = tensors.get(f"{arch.head}.weight"), tensors.get(f"{arch.head}.bias")
  if w is None or b is None:
    missing.append(f"{arch.head}.weight/.bias (asked to keep the head)")
    return
  if w.ndim != 2 or w.shape[1] != feat_dim or b.shape != (w.shape[0],):
    misshaped.append(
      f"{arch.head}: weight {_shape_str(w.shape)} / bias {_shape_str(b.shape)}, "
      f"expects [C, {feat_dim}] / [C]"
    )
    return
  flat[("params", "head", "out", "kernel")] = w.T
  flat[("params", "head", "out", "bias")] = b


def guess_arch(tensors: Mapping[str, np.ndarray]) -> str | None:
  """Best guess at the architecture from key names and a few shapes (for `inspect`)."""
  if "cls_token" in tensors:
    return {384: "vit_s16", 768: "vit_b16"}.get(int(tensors["cls_token"].shape[-1]))
  if "features.0.weight" in tensors:
    convs = sum(1 for k, v in tensors.items() if k.startswith("features.") and v.ndim == 4)
    depth = {8: 11, 10: 13, 13: 16, 16: 19}.get(convs)
    bn = "features.1.running_mean" in tensors
    return f"vgg{depth}{'_bn' if bn else ''}" if depth else None
  if "layer1.0.conv1.weight" not in tensors:
    return None
  blocks = tuple(
    len({k.split(".")[1] for k in tensors if k.startswith(f"layer{i}.")}) for i in range(1, 5)
  )
  if "layer1.0.conv3.weight" not in tensors:
    return {(2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet34"}.get(blocks)
  if blocks == (3, 4, 23, 3):
    return "resnet101"
  if blocks == (3, 8, 36, 3):
    return "resnet152"
  if blocks != (3, 4, 6, 3):
    return None
  conv2 = tensors["layer1.0.conv2.weight"].shape
  return {(64, 64): "resnet50", (128, 128): "wide_resnet50_2", (128, 4): "resnext50_32x4d"}.get(
    (conv2[0], conv2[1])
  )
