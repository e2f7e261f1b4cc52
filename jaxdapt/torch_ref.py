"""The digits DANN training step in plain PyTorch: the baseline of `jaxdapt.bench --torch`.

Same network as `dann_digits` + MLP head (conv5x5-32, BN, pool, ReLU, conv5x5-48,
BN, pool, ReLU, features flattened in NHWC order, FC hidden..., FC classes), same
domain classifier behind gradient reversal, same loss (CE on source + BCE on
domains), same SGD-momentum update and schedules as the JAX step built from the
same config, so the images/s ratio compares frameworks rather than models.
`load_jax_params` copies Flax parameters in; tests/test_bench.py checks that both
steps then give the same losses. Needs torch (imported with this module).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any

import ml_collections
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def unsupported(config: ml_collections.ConfigDict) -> str | None:
  """Why this config's step has no PyTorch twin here (None: it has one)."""
  checks = [
      (config.model.name == "dann_digits", f"model.name {config.model.name!r}"),
      (config.method.name == "dann", f"method.name {config.method.name!r}"),
      (config.model.norm in ("batch", "none", "default"), f"model.norm {config.model.norm!r}"),
      (config.method.bn == "joint", f"method.bn {config.method.bn!r}"),
      (config.optim.name == "sgd", f"optim.name {config.optim.name!r}"),
      (config.optim.schedule in ("dann", "constant"), f"optim.schedule {config.optim.schedule!r}"),
      (tuple(map(tuple, config.optim.rules)) == ((".*", 1.0),), "optim.rules"),
      (not config.optim.weight_decay, "optim.weight_decay"),
      (not config.model.bottleneck_dim, "model.bottleneck_dim"),
      (not config.model.dropout, "model.dropout"),
      (not config.method.bsp_weight, "method.bsp_weight"),
      (not config.method.get("label_smoothing", 0.0), "method.label_smoothing"),
      (config.model.get("bn_mode", "train") == "train", "model.bn_mode"),
  ]
  bad = [what for ok, what in checks if not ok]
  return f"no PyTorch reference for {', '.join(bad)}" if bad else None


class _GradientReversal(torch.autograd.Function):

  @staticmethod
  def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
    ctx.coeff = coeff
    return x.view_as(x)

  @staticmethod
  def backward(ctx, grad: torch.Tensor):
    return -ctx.coeff * grad, None


class DANNDigits(nn.Module):
  """Classifier and domain discriminator; forward returns (features, class logits)."""

  def __init__(self, image_shape: tuple[int, int, int], num_classes: int, *, use_bn: bool,
               head_hidden: tuple[int, ...], disc_hidden: tuple[int, ...]):
    super().__init__()
    h, w, c = image_shape
    norm = (lambda ch: nn.BatchNorm2d(ch, eps=1e-5, momentum=0.1)) if use_bn else (
        lambda ch: nn.Identity())
    self.conv1, self.bn1 = nn.Conv2d(c, 32, 5), norm(32)
    self.conv2, self.bn2 = nn.Conv2d(32, 48, 5), norm(48)
    for _ in range(2):
      h, w = (h - 4) // 2, (w - 4) // 2
    widths = (48 * h * w, *head_hidden)
    self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
    self.out = nn.Linear(widths[-1], num_classes)
    widths = (48 * h * w, *disc_hidden, 1)
    self.disc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = F.relu(F.max_pool2d(self.bn1(self.conv1(x)), 2))
    x = F.relu(F.max_pool2d(self.bn2(self.conv2(x)), 2))
    features = x.permute(0, 2, 3, 1).flatten(1)  # NHWC order, as Flax flattens
    h = features
    for layer in self.hidden:
      h = F.relu(layer(h))
    return features, self.out(h)

  def discriminate(self, features: torch.Tensor, coeff: float) -> torch.Tensor:
    h = _GradientReversal.apply(features.float(), coeff)
    for i, layer in enumerate(self.disc):
      h = layer(h) if i == len(self.disc) - 1 else F.relu(layer(h))
    return h[:, 0]


def build_network(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int],
                  num_classes: int) -> DANNDigits:
  return DANNDigits(image_shape, num_classes, use_bn=config.model.norm == "batch",
                    head_hidden=tuple(config.model.head_hidden),
                    disc_hidden=tuple(config.method.disc_hidden))


def load_jax_params(net: DANNDigits, params: dict) -> None:
  """Copies `{'model': ..., 'method': ...}` Flax parameters (numpy) into `net`, in place."""
  t = lambda a: torch.from_numpy(np.asarray(a, np.float32).copy())
  backbone, head = params["model"]["backbone"], params["model"]["head"]
  pairs = []
  for i in (1, 2):
    conv = backbone[f"conv{i}"]
    pairs += [(getattr(net, f"conv{i}").weight, t(conv["kernel"]).permute(3, 2, 0, 1)),
              (getattr(net, f"conv{i}").bias, t(conv["bias"]))]
    if f"bn{i}" in backbone:
      bn = backbone[f"bn{i}"]
      pairs += [(getattr(net, f"bn{i}").weight, t(bn["scale"])),
                (getattr(net, f"bn{i}").bias, t(bn["bias"]))]
  dense = [head[f"hidden_{i}"] for i in range(len(net.hidden))] + [head["out"]]
  dense += [params["method"]["discriminator"][f"Dense_{i}"] for i in range(len(net.disc))]
  for layer, p in zip([*net.hidden, net.out, *net.disc], dense):
    pairs += [(layer.weight, t(p["kernel"]).T), (layer.bias, t(p["bias"]))]
  with torch.no_grad():
    for dst, src in pairs:
      if dst.shape != src.shape:
        raise ValueError(f"shape {tuple(src.shape)} does not fit {tuple(dst.shape)}")
      dst.copy_(src)


class TorchStep:
  """`step(batch) -> loss`: one DANN update on a {'source','target'} batch of NHWC uint8 images.

  Channels-last convolutions; on CUDA, bfloat16 autocast when the JAX step computes in
  bfloat16 (model.dtype), so both frameworks run at the same precision.
  """

  def __init__(self, config: ml_collections.ConfigDict, image_shape: tuple[int, int, int],
               num_classes: int, device: str = "cpu"):
    self.config, self.device = config, torch.device(device)
    self.net = build_network(config, image_shape, num_classes).to(
        self.device, memory_format=torch.channels_last)
    self.opt = torch.optim.SGD(self.net.parameters(), lr=config.optim.lr,
                               momentum=config.optim.momentum, nesterov=config.optim.nesterov)
    from jaxdapt.train import compute_dtype  # model.dtype with 'auto' resolved
    self.amp = self.device.type == "cuda" and compute_dtype(config).name == "bfloat16"
    self.step_count = 0

  def _progress_scaled(self) -> tuple[float, float]:
    """(learning rate, gradient-reversal coefficient) at the current step, as in JAX."""
    c, p = self.config, self.step_count / self.config.train.steps
    lr = c.optim.lr * ((1.0 + 10.0 * p) ** -0.75 if c.optim.schedule == "dann" else 1.0)
    coeff = c.method.weight * (
        2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0 if c.method.weight_schedule == "dann" else 1.0)
    return lr, coeff

  def to_device(self, batch: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {d: {k: torch.from_numpy(np.asarray(v)).to(self.device) for k, v in b.items()}
            for d, b in batch.items()}

  def __call__(self, batch: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
    src, tgt = batch["source"], batch["target"]
    n = src["image"].shape[0]
    x = torch.cat([src["image"], tgt["image"]]).permute(0, 3, 1, 2).float()
    x = (x / 127.5 - 1.0).contiguous(memory_format=torch.channels_last)
    lr, coeff = self._progress_scaled()
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if self.amp
           else contextlib.nullcontext())
    with amp:
      features, logits = self.net(x)
    cls_loss = F.cross_entropy(logits[:n].float(), src["label"].long())
    domain_logits = self.net.discriminate(features, coeff)  # float32, as in JAX
    domain = torch.cat([torch.ones(n), torch.zeros(x.shape[0] - n)]).to(self.device)
    loss = cls_loss + F.binary_cross_entropy_with_logits(domain_logits.float(), domain)
    for group in self.opt.param_groups:
      group["lr"] = lr
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    self.step_count += 1
    return loss.detach()

  def synchronize(self) -> None:
    if self.device.type == "cuda":
      torch.cuda.synchronize()
