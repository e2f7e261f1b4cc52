"""Parity: reference torch model (random weights, random BN stats) == converted Flax model.

Every listed architecture, eval mode, float32: logits and the output of every
stage (stem BN, every residual block / every VGG conv+BN / fc6, fc7, every ViT
block, the pooled features) within max |diff| <= 1e-4. Inputs are small (64 px
ResNets, 32 px VGG via the 7x7 adaptive pool) to keep CI fast; ViTs run at
their native 224 px.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_weights_torch_refs import RESNETS, build, numpy_state_dict, randomize

from jaxdapt.models import get_model
from jaxdapt.weights import convert

TOL = 1e-4


def _torch_run(model: torch.nn.Module, x: np.ndarray, names: list[str]) -> tuple[dict, np.ndarray]:
  """Logits and outputs of the named submodules (NCHW/NLC -> NHWC/NLC numpy)."""
  outs, hooks = {}, []
  modules = dict(model.named_modules())
  for n in names:
    hooks.append(
      modules[n].register_forward_hook(lambda m, i, o, n=n: outs.__setitem__(n, o.detach().clone()))
    )
  with torch.no_grad():
    logits = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
  for h in hooks:
    h.remove()
  as_np = lambda t: (t.permute(0, 2, 3, 1) if t.ndim == 4 else t).numpy()
  return {n: as_np(t) for n, t in outs.items()}, logits.numpy()


def _flax_run(arch: str, conv, x: np.ndarray, **options) -> tuple[dict, dict]:
  model = get_model(arch, num_classes=conv.num_classes, **options)
  variables = {"params": conv.params}
  if conv.batch_stats:
    variables["batch_stats"] = conv.batch_stats
  out, state = model.apply(
    variables, x, train=False, capture_intermediates=True, mutable=["intermediates"]
  )
  return out, state["intermediates"]["backbone"]


def _get(inter: dict, path: str) -> np.ndarray:
  node = inter
  for part in path.split("/"):
    node = node[part]
  return np.asarray(node["__call__"][0])


def _check(arch, source, torch_names, flax_paths, x, features_key=None, ref_kw=None, **options):
  ref = randomize(build(arch, source, **(ref_kw or {})), seed=len(arch))
  conv = convert(
    numpy_state_dict(ref), arch, source, keep_head=True, img_size=options.get("img_size")
  )
  t_out, t_logits = _torch_run(ref, x, torch_names + ([features_key] if features_key else []))
  out, inter = _flax_run(arch, conv, x, **options)
  worst = {}
  for tn, fp in zip(torch_names, flax_paths):
    got = _get(inter, fp)
    assert got.shape == t_out[tn].shape, (tn, got.shape, t_out[tn].shape)
    worst[fp] = float(np.max(np.abs(got - t_out[tn])))
  if features_key:
    feats = t_out[features_key].reshape(x.shape[0], -1)
    if feats.ndim == 2 and arch.startswith("vit"):
      feats = t_out[features_key][:, 0]
    worst["features"] = float(np.max(np.abs(np.asarray(out["features"]) - feats)))
  worst["logits"] = float(np.max(np.abs(np.asarray(out["logits"]) - t_logits)))
  bad = {k: v for k, v in worst.items() if not v <= TOL}
  assert not bad, f"{arch}: max |diff| above {TOL}: {bad}"
  assert np.std(t_logits) > 1e-2  # a meaningful comparison, not two zero vectors
  return worst


def _x(size: int, seed: int = 0, batch: int = 2) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize(
  "arch,source", [(n, "torchvision") for n in RESNETS] + [("resnet50", "timm")]
)
def test_resnet_parity(arch, source):
  layers = RESNETS[arch][1]
  blocks = [(i, j) for i, n in enumerate(layers, start=1) for j in range(n)]
  torch_names = ["bn1"] + [f"layer{i}.{j}" for i, j in blocks]
  flax_paths = ["bn1"] + [f"layer{i}_{j}" for i, j in blocks]
  pool = "global_pool" if source == "timm" else "avgpool"
  _check(arch, source, torch_names, flax_paths, _x(64), features_key=pool)


@pytest.fixture(scope="module")
def vgg_classifier() -> torch.nn.Sequential:
  """One fc6/fc7/fc8 for all eight VGGs (randomize() re-draws its biases per test)."""
  return build("vgg11").classifier


@pytest.mark.parametrize("arch", [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")])
def test_vgg_parity(arch, vgg_classifier):
  indices = [
    i
    for i, m in enumerate(build(arch, classifier=vgg_classifier).features)
    if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))
  ]
  torch_names = [f"features.{i}" for i in indices] + ["classifier.0", "classifier.3"]
  flax_paths = [f"features_{i}" for i in indices] + ["classifier_0", "classifier_3"]
  # 32 px leaves a 1x1 map that the 7x7 adaptive pool replicates (as torch does), so
  # fc6 sees a spatially constant map; vgg11_bn runs at 64 px (2x2 map, overlapping
  # bins), where the NCHW flatten order before fc6 matters.
  size = 64 if arch == "vgg11_bn" else 32
  _check(
    arch,
    "torchvision",
    torch_names,
    flax_paths,
    _x(size, batch=1),
    ref_kw={"classifier": vgg_classifier},
    fc_dropout=0.5,
  )


@pytest.mark.parametrize("arch", ["vit_s16", "vit_b16"])
def test_vit_parity_224(arch):
  torch_names = ["patch_embed.proj"] + [f"blocks.{i}" for i in range(12)] + ["norm"]
  flax_paths = ["patch_embed/proj"] + [f"blocks_{i}" for i in range(12)] + ["norm"]
  _check(arch, "timm", torch_names, flax_paths, _x(224, batch=1), features_key="norm")
