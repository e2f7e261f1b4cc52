"""Plain torch.nn networks with torchvision's state_dict names, and Flax -> torch copying.

Two users: the PyTorch baseline of `jaxdapt.bench` (jaxdapt/torch_ref.py) and the
weight-conversion parity tests (tests/test_weights_torch_refs.py pins these to
torchvision's parameter totals and key names). torchvision itself is not needed:
it pulls a CUDA build of torch, and CI installs the CPU one.

`ResNet` is torchvision.models.ResNet (v1.5) plus the two options jaxdapt's Flax
ResNet has (models/resnet.py): `width` (base width; 64 is torchvision's, smaller
ones keep every name and only thin the tensors) and `small_input` (3x3/1 stem,
no max-pool). `load_flax` copies Flax variables into any module whose attribute
names follow the Flax module names (`jaxdapt.weights.convert.torch_key`), the
inverse of the converter, so a Flax model and its torch twin start from the same
weights. Needs torch (imported with this module).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flax import traverse_util
from torch import nn

from jaxdapt.weights.convert import torch_key


def conv(i: int, o: int, k: int, s: int = 1, groups: int = 1) -> nn.Conv2d:
  """Bias-free k×k conv with torchvision's padding k // 2."""
  return nn.Conv2d(i, o, k, s, k // 2, groups=groups, bias=False)


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
    super().__init__()
    self.conv1, self.bn1 = conv(inplanes, planes, 3, stride), nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2, self.bn2 = conv(planes, planes, 3), nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    idt = x if self.downsample is None else self.downsample(x)
    y = self.relu(self.bn1(self.conv1(x)))
    return self.relu(self.bn2(self.conv2(y)) + idt)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
    super().__init__()
    width = int(planes * (base_width / 64.0)) * groups
    self.conv1, self.bn1 = conv(inplanes, width, 1), nn.BatchNorm2d(width)
    self.conv2, self.bn2 = conv(width, width, 3, stride, groups), nn.BatchNorm2d(width)
    self.conv3, self.bn3 = conv(width, planes * 4, 1), nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    idt = x if self.downsample is None else self.downsample(x)
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.relu(self.bn2(self.conv2(y)))
    return self.relu(self.bn3(self.conv3(y)) + idt)


class ResNet(nn.Module):
  """torchvision.models.ResNet; `num_classes=None` drops `fc` (forward: pooled features)."""

  def __init__(
    self,
    block,
    layers,
    num_classes: int | None = 1000,
    groups: int = 1,
    width_per_group: int = 64,
    width: int = 64,
    small_input: bool = False,
  ):
    super().__init__()
    self.inplanes = width
    self.conv1 = (
      nn.Conv2d(3, width, 3, 1, 1, bias=False)
      if small_input
      else nn.Conv2d(3, width, 7, 2, 3, bias=False)
    )
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1)
    widths = (width, 2 * width, 4 * width, 8 * width)
    for i, (planes, n) in enumerate(zip(widths, layers), start=1):
      stride = 1 if i == 1 else 2
      blocks = []
      for j in range(n):
        down = None
        if j == 0 and (stride != 1 or self.inplanes != planes * block.expansion):
          down = nn.Sequential(
            conv(self.inplanes, planes * block.expansion, 1, stride),
            nn.BatchNorm2d(planes * block.expansion),
          )
        blocks.append(
          block(self.inplanes, planes, stride if j == 0 else 1, down, groups, width_per_group)
        )
        self.inplanes = planes * block.expansion
      setattr(self, f"layer{i}", nn.Sequential(*blocks))
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.feature_dim = 8 * width * block.expansion
    if num_classes is not None:
      self.fc = nn.Linear(self.feature_dim, num_classes)

  def features(self, x: torch.Tensor) -> torch.Tensor:
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return torch.flatten(self.avgpool(x), 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    f = self.features(x)
    return self.fc(f) if hasattr(self, "fc") else f


RESNETS = {  # name -> (block, layers, groups, width_per_group): torchvision's definitions
  "resnet18": (BasicBlock, (2, 2, 2, 2), 1, 64),
  "resnet34": (BasicBlock, (3, 4, 6, 3), 1, 64),
  "resnet50": (Bottleneck, (3, 4, 6, 3), 1, 64),
  "resnet101": (Bottleneck, (3, 4, 23, 3), 1, 64),
  "resnet152": (Bottleneck, (3, 8, 36, 3), 1, 64),
  "wide_resnet50_2": (Bottleneck, (3, 4, 6, 3), 1, 128),
  "resnext50_32x4d": (Bottleneck, (3, 4, 6, 3), 32, 4),
}


def torchvision_resnet(name: str, num_classes: int | None = 1000, **options) -> ResNet:
  """torchvision's `name` (RESNETS); `options`: width, small_input (jaxdapt's extras)."""
  block, layers, groups, wpg = RESNETS[name]
  return ResNet(block, layers, num_classes, groups=groups, width_per_group=wpg, **options)


def _to_torch(value: np.ndarray, ndim: int, leaf: str) -> torch.Tensor:
  """Flax layout -> torch layout: HWIO -> OIHW conv kernels, [in, out] -> [out, in]."""
  t = torch.from_numpy(np.asarray(value, np.float32).copy())
  if leaf == "kernel" and ndim == 4:
    return t.permute(3, 2, 0, 1)
  if leaf == "kernel" and ndim == 2:
    return t.T
  return t


def load_flax(module: nn.Module, params: Mapping, batch_stats: Mapping | None = None) -> None:
  """Copies Flax `params` (and BatchNorm `batch_stats`) into `module`, in place.

  Every Flax leaf goes to `torch_key(path)`; every torch parameter and buffer
  (but BatchNorm's num_batches_tracked) must receive one, with the same shape,
  so a naming mismatch fails here instead of silently comparing different weights.
  """
  flat = {
    **traverse_util.flatten_dict(dict(params)),
    **traverse_util.flatten_dict(dict(batch_stats or {})),
  }
  targets = {**dict(module.named_parameters()), **dict(module.named_buffers())}
  problems, done = [], set()
  with torch.no_grad():
    for path, value in flat.items():
      key = torch_key(path)
      value = np.asarray(value)
      if key not in targets:
        problems.append(f"{'/'.join(path)} -> {key}: no such torch tensor")
        continue
      src = _to_torch(value, value.ndim, path[-1])
      if tuple(src.shape) != tuple(targets[key].shape):
        problems.append(f"{key}: Flax {tuple(src.shape)}, torch {tuple(targets[key].shape)}")
        continue
      targets[key].copy_(src)
      done.add(key)
  missing = [k for k in targets if k not in done and not k.endswith("num_batches_tracked")]
  problems += [f"{k}: no Flax value" for k in missing]
  if problems:
    raise ValueError("Flax variables do not fit the torch module:\n  " + "\n  ".join(problems))
