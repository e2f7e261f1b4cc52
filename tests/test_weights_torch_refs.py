"""Reference PyTorch models with torchvision's / timm's exact state_dict names and shapes.

torchvision and timm are not installed in CI (torchvision pulls a CUDA
torch), so the parity tests use these plain torch.nn re-implementations. The
tests in this file pin them to the real libraries: parameter totals as
torchvision/timm report them and the key names of their state_dicts.
torch is required: a missing torch is a collection error, never a skip. The
torchvision ResNets are jaxdapt/torch_models.py's (pinned here like the rest).
"""

from __future__ import annotations

import math

try:
  import torch
  import torch.nn.functional as F
  from torch import nn
except ImportError as e:  # fail loudly: parity tests must not silently vanish
  raise ImportError(
    "the weight parity tests need torch (CPU build): pip install -e '.[test]'  (pins torch==2.13.0)"
  ) from e

import pytest

# The torchvision ResNets live in the package: the benchmark's PyTorch twin uses them too.
from jaxdapt.tools.torch_models import RESNETS, torchvision_resnet
from jaxdapt.tools.torch_models import conv as _conv


# ---------------------------------------------------------------- ResNet-50 (timm)
class TimmBottleneck(nn.Module):
  """timm.models.resnet.Bottleneck (drop_block / aa / attention layers are Identity)."""

  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1, self.bn1, self.act1 = _conv(inplanes, planes, 1), nn.BatchNorm2d(planes), nn.ReLU()
    self.conv2, self.bn2 = _conv(planes, planes, 3, stride), nn.BatchNorm2d(planes)
    self.drop_block, self.act2, self.aa = nn.Identity(), nn.ReLU(), nn.Identity()
    self.conv3, self.bn3 = _conv(planes, planes * 4, 1), nn.BatchNorm2d(planes * 4)
    self.se, self.act3, self.downsample = nn.Identity(), nn.ReLU(), downsample

  def forward(self, x):
    sc = x if self.downsample is None else self.downsample(x)
    y = self.act1(self.bn1(self.conv1(x)))
    y = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(y)))))
    return self.act3(self.se(self.bn3(self.conv3(y))) + sc)


class TimmResNet50(nn.Module):
  """timm.models.resnet.ResNet(Bottleneck, [3, 4, 6, 3]) as `timm.create_model('resnet50')`."""

  def __init__(self, num_classes=1000):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1, self.act1 = nn.BatchNorm2d(64), nn.ReLU()
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    inplanes = 64
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
      stride, blocks = (1 if i == 1 else 2), []
      for j in range(n):
        down = None
        if j == 0:  # timm's downsample_conv: Sequential(conv, norm)
          down = nn.Sequential(_conv(inplanes, planes * 4, 1, stride), nn.BatchNorm2d(planes * 4))
        blocks.append(TimmBottleneck(inplanes, planes, stride if j == 0 else 1, down))
        inplanes = planes * 4
      setattr(self, f"layer{i}", nn.Sequential(*blocks))
    self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    self.fc = nn.Linear(2048, num_classes)

  def forward(self, x):
    x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.fc(self.global_pool(x))


# ---------------------------------------------------------------- VGG (torchvision)
VGG_CFGS = {
  11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
  13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
  16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
  19: (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
  ),
}


class VGG(nn.Module):
  """torchvision.models.VGG: `features`, `avgpool`, `classifier` Sequentials."""

  def __init__(
    self, depth: int, bn: bool, num_classes: int = 1000, classifier: nn.Sequential | None = None
  ):
    super().__init__()
    layers, c = [], 3
    for v in VGG_CFGS[depth]:
      if v == "M":
        layers.append(nn.MaxPool2d(2, 2))
        continue
      layers.append(nn.Conv2d(c, v, 3, padding=1))
      layers += [nn.BatchNorm2d(v), nn.ReLU(inplace=True)] if bn else [nn.ReLU(inplace=True)]
      c = v
    self.features = nn.Sequential(*layers)
    self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    self.classifier = classifier or nn.Sequential(  # tests share one: fc6 is 102M params
      nn.Linear(512 * 7 * 7, 4096),
      nn.ReLU(True),
      nn.Dropout(),
      nn.Linear(4096, 4096),
      nn.ReLU(True),
      nn.Dropout(),
      nn.Linear(4096, num_classes),
    )

  def forward(self, x):
    return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def torchvision_vgg(name: str, classifier: nn.Sequential | None = None) -> VGG:
  return VGG(int(name[3:5]), name.endswith("_bn"), classifier=classifier)


# ---------------------------------------------------------------- ViT (timm)
class PatchEmbed(nn.Module):
  def __init__(self, dim: int, patch: int = 16):
    super().__init__()
    self.proj = nn.Conv2d(3, dim, patch, patch)
    self.norm = nn.Identity()

  def forward(self, x):
    return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class Attention(nn.Module):
  def __init__(self, dim: int, heads: int):
    super().__init__()
    self.num_heads, self.head_dim = heads, dim // heads
    self.qkv = nn.Linear(dim, dim * 3)
    self.q_norm, self.k_norm, self.attn_drop = nn.Identity(), nn.Identity(), nn.Dropout(0.0)
    self.proj, self.proj_drop = nn.Linear(dim, dim), nn.Dropout(0.0)

  def forward(self, x):
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
    x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
    return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
  def __init__(self, dim: int, hidden: int):
    super().__init__()
    self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
  def __init__(self, dim: int, heads: int):
    super().__init__()
    self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
    self.ls1, self.drop_path1 = nn.Identity(), nn.Identity()
    self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, 4 * dim)
    self.ls2, self.drop_path2 = nn.Identity(), nn.Identity()

  def forward(self, x):
    x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
    return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class VisionTransformer(nn.Module):
  """timm VisionTransformer (class token, global_pool='token'), dynamic_img_size style.

  Inputs whose patch grid differs from img_size's resample pos_embed with
  F.interpolate(mode, align_corners=False, antialias=False).
  """

  def __init__(
    self,
    dim: int,
    depth: int,
    heads: int,
    img_size: int = 224,
    num_classes: int = 1000,
    interpolation: str = "bilinear",
  ):
    super().__init__()
    self.grid, self.interpolation = img_size // 16, interpolation
    self.patch_embed = PatchEmbed(dim)
    self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
    self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.grid**2, dim) * 0.02)
    self.pos_drop, self.patch_drop, self.norm_pre = nn.Dropout(0.0), nn.Identity(), nn.Identity()
    self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
    self.norm = nn.LayerNorm(dim, eps=1e-6)
    self.fc_norm, self.head_drop = nn.Identity(), nn.Dropout(0.0)
    self.head = nn.Linear(dim, num_classes)

  def pos(self, gh: int, gw: int) -> torch.Tensor:
    if (gh, gw) == (self.grid, self.grid):
      return self.pos_embed
    prefix, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
    grid = grid.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(
      grid, size=(gh, gw), mode=self.interpolation, align_corners=False, antialias=False
    )
    return torch.cat([prefix, grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)

  def forward_features(self, x):
    gh, gw = x.shape[2] // 16, x.shape[3] // 16
    x = self.patch_embed(x)
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos(gh, gw)
    return self.norm(self.blocks(self.norm_pre(self.patch_drop(self.pos_drop(x)))))

  def forward(self, x):
    return self.head(self.head_drop(self.fc_norm(self.forward_features(x)[:, 0])))


VITS = {"vit_s16": (384, 12, 6), "vit_b16": (768, 12, 12)}


def timm_vit(name: str, **kw) -> VisionTransformer:
  dim, depth, heads = VITS[name]
  return VisionTransformer(dim, depth, heads, **kw)


# ---------------------------------------------------------------- helpers
def build(name: str, source: str = "torchvision", **kw) -> nn.Module:
  if source == "timm" and name == "resnet50":
    return TimmResNet50()
  if name in RESNETS:
    return torchvision_resnet(name)
  if name.startswith("vgg"):
    return torchvision_vgg(name, **kw)
  return timm_vit(name)


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random weights and random BatchNorm/LayerNorm affine params and running stats.

  Scales keep activations O(1) through 150 layers so float32 rounding stays
  well under the 1e-4 tolerance.
  """
  g = torch.Generator().manual_seed(seed)
  for m in model.modules():
    if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
      m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.5)
      m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    if isinstance(m, nn.BatchNorm2d):
      m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
      m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
      m.num_batches_tracked.fill_(123)
    if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
      m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
  for name in ("cls_token", "pos_embed"):
    if hasattr(model, name):
      getattr(model, name).copy_(torch.randn(getattr(model, name).shape, generator=g) * 0.5)
  return model.eval()


def numpy_state_dict(model: nn.Module) -> dict:
  return {k: v.detach().numpy() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- the references are exact
# Published totals: torchvision weight docs ("num_params") and timm's model cards.
TOTALS = {
  "resnet18": 11_689_512,
  "resnet34": 21_797_672,
  "resnet50": 25_557_032,
  "resnet101": 44_549_160,
  "resnet152": 60_192_808,
  "wide_resnet50_2": 68_883_240,
  "resnext50_32x4d": 25_028_904,
  "vgg11": 132_863_336,
  "vgg11_bn": 132_868_840,
  "vgg13": 133_047_848,
  "vgg13_bn": 133_053_736,
  "vgg16": 138_357_544,
  "vgg16_bn": 138_365_992,
  "vgg19": 143_667_240,
  "vgg19_bn": 143_678_248,
  "vit_s16": 22_050_664,
  "vit_b16": 86_567_656,
}


def _meta_count(name: str, source: str = "torchvision") -> tuple[int, dict]:
  with torch.device("meta"):  # shapes only: no memory, no init cost
    model = build(name, source)
  return sum(p.numel() for p in model.parameters()), model.state_dict()


@pytest.mark.parametrize("name", sorted(TOTALS))
def test_reference_parameter_totals_match_the_libraries(name):
  count, _ = _meta_count(name)
  assert count == TOTALS[name]


def test_reference_key_names_follow_the_libraries():
  _, sd = _meta_count("resnext50_32x4d")
  assert tuple(sd["layer1.0.conv2.weight"].shape) == (128, 4, 3, 3)
  assert {
    "layer2.0.downsample.0.weight",
    "layer2.0.downsample.1.running_var",
    "layer2.0.bn3.num_batches_tracked",
    "fc.weight",
  } <= set(sd)
  count, timm_sd = _meta_count("resnet50", "timm")
  _, tv_sd = _meta_count("resnet50")
  assert count == TOTALS["resnet50"]
  assert {k: tuple(v.shape) for k, v in timm_sd.items()} == {
    k: tuple(v.shape) for k, v in tv_sd.items()
  }  # timm resnet50 == torchvision naming
  _, sd = _meta_count("vgg16_bn")
  assert {
    "features.0.weight",
    "features.1.running_mean",
    "features.41.weight",
    "classifier.0.weight",
    "classifier.3.bias",
    "classifier.6.weight",
  } <= set(sd)
  _, sd = _meta_count("vit_b16")
  assert tuple(sd["pos_embed"].shape) == (1, 197, 768)
  assert {
    "cls_token",
    "patch_embed.proj.weight",
    "blocks.11.attn.qkv.weight",
    "blocks.0.mlp.fc2.bias",
    "norm.weight",
    "head.bias",
  } <= set(sd)
  assert math.prod(sd["blocks.0.attn.qkv.weight"].shape) == 3 * 768 * 768
