"""The training step and the feature extractor in plain PyTorch: the baseline of
`jaxdapt.bench --torch`.

Networks: `dann_digits` (conv5x5-32, BN, pool, ReLU, conv5x5-48, BN, pool, ReLU,
features flattened in NHWC order) and the torchvision ResNets (jaxdapt/torch_models.py,
with model.width / model.small_input), each with the same MLP head (FC hidden...,
FC classes) and, for DANN, the same domain classifier behind gradient reversal.
Steps: `source_only` (CE on source; `target_only`: the same on the labeled target batch)
and `dann` (CE on source + BCE on domains), with
the same SGD-momentum update and schedules as the JAX step built from the same
config, so the images/s ratio compares frameworks rather than models. Attribute
names follow the Flax module names, so `load_jax_params` copies a Flax state in
(torch_models.load_flax); tests/test_bench.py checks that both steps then give the
same losses. Needs torch (imported with this module).

The text encoder (`bench text`): transformers' BertModel (no pooler, dropout 0) from the
same Hugging Face folder as the JAX model or given its params, mean pooling over real
tokens, a Linear head and AdamW (decay on Linear weights, as optax's kernel mask), the
twin of the source_only step of experiments/text/debian.py; needs transformers too.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any

import ml_collections
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jaxdapt.tools import torch_models

METHODS = ("dann", "source_only", "target_only")
# The batch keys each twin step reads, the supervised one first (target_only is
# source_only's step on the k labeled target examples: jaxdapt/methods/fewshot.py).
DOMAINS = {"dann": ("source", "target"), "target_only": ("target_labeled",)}


def unsupported(config: ml_collections.ConfigDict) -> str | None:
  """Why this config's step has no PyTorch twin here (None: it has one)."""
  resnet = config.model.name in torch_models.RESNETS
  checks = [
    (config.model.name == "dann_digits" or resnet, f"model.name {config.model.name!r}"),
    (config.method.name in METHODS, f"method.name {config.method.name!r}"),
    (
      config.model.norm in ("batch", "default") or (config.model.norm == "none" and not resnet),
      f"model.norm {config.model.norm!r}",
    ),
    (
      config.method.bn == "joint" or config.method.name == "source_only",
      f"method.bn {config.method.bn!r}",
    ),
    (config.optim.name == "sgd", f"optim.name {config.optim.name!r}"),
    (config.optim.schedule in ("dann", "constant"), f"optim.schedule {config.optim.schedule!r}"),
    (tuple(map(tuple, config.optim.rules)) == ((".*", 1.0),), "optim.rules"),
    (not config.optim.weight_decay, "optim.weight_decay"),
    (not config.model.bottleneck_dim, "model.bottleneck_dim"),
    (not config.model.dropout, "model.dropout"),
    (not config.model.remat, "model.remat"),
    (not config.model.cosine_temperature, "model.cosine_temperature"),
    (not config.method.bsp_weight, "method.bsp_weight"),
    (not config.method.get("label_smoothing", 0.0), "method.label_smoothing"),
    (config.model.get("bn_mode", "train") == "train", "model.bn_mode"),
    (config.train.get("grad_accum_steps", 1) == 1, "train.grad_accum_steps"),
    (not config.get("peft", {}).get("method", ""), "peft.method"),
    (not config.optim.get("warmup_steps", 0), "optim.warmup_steps"),
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


class DigitsBackbone(nn.Module):
  """dann_digits' two conv blocks; forward returns features flattened in NHWC order."""

  def __init__(self, image_shape: tuple[int, int, int], use_bn: bool):
    super().__init__()
    h, w, c = image_shape
    self.conv1, self.conv2 = nn.Conv2d(c, 32, 5), nn.Conv2d(32, 48, 5)
    if use_bn:
      self.bn1, self.bn2 = nn.BatchNorm2d(32), nn.BatchNorm2d(48)
    for _ in range(2):
      h, w = (h - 4) // 2, (w - 4) // 2
    self.feature_dim = 48 * h * w

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for i in (1, 2):
      x = getattr(self, f"conv{i}")(x)
      if hasattr(self, f"bn{i}"):
        x = getattr(self, f"bn{i}")(x)
      x = F.relu(F.max_pool2d(x, 2))
    return x.permute(0, 2, 3, 1).flatten(1)  # NHWC order, as Flax flattens


class Head(nn.Module):
  """models.classifier.MLPHead: Linear+ReLU per hidden width, then `out` (float32)."""

  def __init__(self, in_dim: int, hidden: tuple[int, ...], num_classes: int):
    super().__init__()
    widths = (in_dim, *hidden)
    self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
    self.out = nn.Linear(widths[-1], num_classes)

  def forward(self, h: torch.Tensor) -> torch.Tensor:
    for layer in self.hidden:
      h = F.relu(layer(h))
    with _autocast_off(h):
      return self.out(h.float())  # the Flax output layer computes in float32 too


class Discriminator(nn.Module):
  """methods.dann.DomainDiscriminator in float32; `Dense` is the Flax Dense_{i} naming."""

  def __init__(self, in_dim: int, hidden: tuple[int, ...]):
    super().__init__()
    widths = (in_dim, *hidden, 1)
    self.Dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))

  def forward(self, features: torch.Tensor, coeff: float) -> torch.Tensor:
    with _autocast_off(features):
      h = _GradientReversal.apply(features.float(), coeff)
      for i, layer in enumerate(self.Dense):
        h = layer(h) if i == len(self.Dense) - 1 else F.relu(layer(h))
    return h[:, 0]


def _autocast_off(x: torch.Tensor):
  return torch.autocast(x.device.type, enabled=False)


class Network(nn.Module):
  """backbone -> head (+ the domain discriminator for DANN); forward: (features, logits)."""

  def __init__(
    self,
    backbone: nn.Module,
    feature_dim: int,
    num_classes: int,
    head_hidden: tuple[int, ...],
    disc_hidden: tuple[int, ...] | None,
  ):
    super().__init__()
    self.backbone = backbone
    self.head = Head(feature_dim, head_hidden, num_classes)
    if disc_hidden is not None:
      self.discriminator = Discriminator(feature_dim, disc_hidden)

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    features = self.backbone(x)
    return features, self.head(features)

  def discriminate(self, features: torch.Tensor, coeff: float) -> torch.Tensor:
    return self.discriminator(features, coeff)


def build_backbone(
  config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]
) -> nn.Module:
  """The torch twin of config.model's backbone; `.feature_dim` is its output width."""
  name = config.model.name
  if name in torch_models.RESNETS:
    return torch_models.torchvision_resnet(
      name, None, width=config.model.width or 64, small_input=config.model.small_input
    )
  return DigitsBackbone(image_shape, use_bn=config.model.norm in ("batch", "default"))


def build_network(
  config: ml_collections.ConfigDict, image_shape: tuple[int, int, int], num_classes: int
) -> Network:
  backbone = build_backbone(config, image_shape)
  disc = tuple(config.method.disc_hidden) if config.method.name == "dann" else None
  return Network(backbone, backbone.feature_dim, num_classes, tuple(config.model.head_hidden), disc)


def load_jax_params(net: Network, params: dict, batch_stats: dict) -> None:
  """Copies a Flax train state's `params` ({'model': ..., 'method': ...}) and
  `batch_stats` (numpy) into `net`, in place."""
  tree = {"backbone": params["model"]["backbone"], "head": params["model"]["head"]}
  if "discriminator" in params.get("method", {}):
    tree["discriminator"] = params["method"]["discriminator"]
  torch_models.load_flax(net, tree, batch_stats)


def _input(images: torch.Tensor, mean_std) -> torch.Tensor:
  """NHWC uint8 -> normalised NCHW float32 in channels-last memory, as step.normalize:
  x · 1/(255·std) − mean/std per channel."""
  mean, std = (np.asarray(v, np.float64) for v in mean_std)
  scale = torch.tensor(1.0 / (255.0 * std), dtype=torch.float32, device=images.device)
  shift = torch.tensor(mean / std, dtype=torch.float32, device=images.device)
  x = images.permute(0, 3, 1, 2).float() * scale[:, None, None] - shift[:, None, None]
  return x.contiguous(memory_format=torch.channels_last)


def _amp(config: ml_collections.ConfigDict, device: torch.device) -> bool:
  """bfloat16 autocast on CUDA when the JAX step computes in bfloat16 (model.dtype)."""
  from jaxdapt.step import compute_dtype  # model.dtype with 'auto' resolved

  return device.type == "cuda" and compute_dtype(config).name == "bfloat16"


def _autocast(amp: bool):
  return torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()


def to_device(batch: Any, device: torch.device) -> Any:
  """Nested dicts of numpy arrays -> the same of torch tensors on `device`."""
  if isinstance(batch, dict):
    return {k: to_device(v, device) for k, v in batch.items()}
  return torch.from_numpy(np.array(batch)).to(device)  # a writable copy


class TorchStep:
  """`step(batch) -> loss`: one update of config.method (METHODS) on a {'source'[,
  'target']} batch of NHWC uint8 images (torch tensors: `to_device`).

  Channels-last convolutions; on CUDA, bfloat16 autocast when the JAX step computes in
  bfloat16 (model.dtype), so both frameworks run at the same precision. DANN forwards
  source and target as one batch (method.bn 'joint', BatchNorm statistics over both).
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    image_shape: tuple[int, int, int],
    num_classes: int,
    device: str = "cpu",
  ):
    from jaxdapt.step import input_mean_std

    self.config, self.device = config, torch.device(device)
    self.net = build_network(config, image_shape, num_classes).to(
      self.device, memory_format=torch.channels_last
    )
    self.opt = torch.optim.SGD(
      self.net.parameters(),
      lr=config.optim.lr,
      momentum=config.optim.momentum,
      nesterov=config.optim.nesterov,
    )
    self.amp, self.mean_std = _amp(config, self.device), input_mean_std(config)
    self.domains = DOMAINS.get(config.method.name, ("source",))
    self.step_count = 0

  def _progress_scaled(self) -> tuple[float, float]:
    """(learning rate, gradient-reversal coefficient) at the current step, as in JAX."""
    c, p = self.config, self.step_count / self.config.train.steps
    lr = c.optim.lr * ((1.0 + 10.0 * p) ** -0.75 if c.optim.schedule == "dann" else 1.0)
    coeff = c.method.weight * (
      2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0 if c.method.weight_schedule == "dann" else 1.0
    )
    return lr, coeff

  def to_device(self, batch: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return to_device({d: batch[d] for d in self.domains}, self.device)

  def __call__(self, batch: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
    src = batch[self.domains[0]]
    n = src["image"].shape[0]
    x = _input(torch.cat([batch[d]["image"] for d in self.domains]), self.mean_std)
    lr, coeff = self._progress_scaled()
    with _autocast(self.amp):
      features, logits = self.net(x)
    loss = F.cross_entropy(logits[:n].float(), src["label"].long())
    if "target" in self.domains:
      domain_logits = self.net.discriminate(features, coeff)  # float32, as in JAX
      domain = torch.cat(
        [torch.ones(n, device=self.device), torch.zeros(x.shape[0] - n, device=self.device)]
      )
      loss = loss + F.binary_cross_entropy_with_logits(domain_logits, domain)
    return _update(self, loss, lr)

  def synchronize(self) -> None:
    _synchronize(self.device)


def _update(step, loss: torch.Tensor, lr: float) -> torch.Tensor:
  """One optimizer update of a twin step (`step.opt`, `step.step_count`) at `lr`, as
  optax applies one: set the lr, backward, step; the loss, detached."""
  for group in step.opt.param_groups:
    group["lr"] = lr
  step.opt.zero_grad(set_to_none=True)
  loss.backward()
  step.opt.step()
  step.step_count += 1
  return loss.detach()


class TorchFeatures:
  """`extract(images) -> features`: the backbone in eval mode under inference_mode, the
  twin of features.forward_fn's features (bfloat16 autocast on CUDA as TorchStep)."""

  def __init__(
    self, config: ml_collections.ConfigDict, image_shape: tuple[int, int, int], device: str = "cpu"
  ):
    from jaxdapt.step import input_mean_std

    self.device = torch.device(device)
    self.backbone = (
      build_backbone(config, image_shape).to(self.device, memory_format=torch.channels_last).eval()
    )
    self.amp, self.mean_std = _amp(config, self.device), input_mean_std(config)

  @torch.inference_mode()
  def __call__(self, images: torch.Tensor) -> torch.Tensor:
    with _autocast(self.amp):
      return self.backbone(_input(images, self.mean_std)).float()

  def synchronize(self) -> None:
    _synchronize(self.device)


def _synchronize(device: torch.device) -> None:
  if device.type == "cuda":
    torch.cuda.synchronize()


# --- The text encoder (`jaxdapt bench text`) --------------------------------------------------

TEXT_SCHEDULES = ("constant", "cosine")


def text_unsupported(config: ml_collections.ConfigDict) -> str | None:
  """Why this text config's step has no PyTorch twin here (None: it has one). The twin is
  the fine-tuning step of experiments/text/debian.py: a linear head on mean-pooled
  features, source_only cross-entropy, AdamW (decay on Linear weights) at a constant or
  cosine learning rate, no dropout."""
  checks = [
    (config.method.name == "source_only", f"method.name {config.method.name!r}"),
    (config.optim.name == "adamw", f"optim.name {config.optim.name!r}"),
    (config.optim.schedule in TEXT_SCHEDULES, f"optim.schedule {config.optim.schedule!r}"),
    (tuple(map(tuple, config.optim.rules)) == ((".*", 1.0),), "optim.rules"),
    (not config.optim.preset and not config.optim.llrd, "optim.preset/llrd"),
    (not config.peft.method, f"peft.method {config.peft.method!r}"),
    (not tuple(config.model.head_hidden), "model.head_hidden"),
    (not config.model.bottleneck_dim, "model.bottleneck_dim"),
    (not config.model.dropout, "model.dropout"),
    (not config.model.cosine_temperature, "model.cosine_temperature"),
    (not config.method.get("label_smoothing", 0.0), "method.label_smoothing"),
    (config.train.get("grad_accum_steps", 1) == 1, "train.grad_accum_steps"),
    (not config.optim.get("warmup_steps", 0), "optim.warmup_steps"),
  ]
  bad = [what for ok, what in checks if not ok]
  return f"no PyTorch reference for {', '.join(bad)}" if bad else None


@contextlib.contextmanager
def _quiet_transformers():
  """Loading without transformers' load report (it lists the pooler weights that
  BertModel(add_pooling_layer=False) leaves unread; BertEncoder has no pooler either) and
  progress bar (its errors still print)."""
  from transformers.utils import logging as hf_logging

  level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
  hf_logging.set_verbosity_error()
  hf_logging.disable_progress_bar()
  try:
    yield
  finally:
    hf_logging.set_verbosity(level)
    if bars:
      hf_logging.enable_progress_bar()


def bert_model(encoder: Any, folder: str | None = None, params: dict | None = None) -> nn.Module:
  """transformers' BertModel (no pooler, dropout 0) with `encoder`'s sizes (a BertEncoder):
  from the Hugging Face folder `folder` (local files only: the same safetensors the JAX
  side reads), or built from its config and given the BertEncoder `params` (numpy tree)."""
  from transformers import BertConfig, BertModel

  no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
  if folder is not None:
    with _quiet_transformers():
      model = BertModel.from_pretrained(
        folder, local_files_only=True, add_pooling_layer=False, dtype=torch.float32, **no_dropout
      )
    return model
  hf = BertConfig(
    vocab_size=encoder.vocab_size,
    hidden_size=encoder.hidden,
    num_hidden_layers=encoder.layers,
    num_attention_heads=encoder.heads,
    intermediate_size=encoder.intermediate,
    max_position_embeddings=encoder.max_positions,
    type_vocab_size=encoder.type_vocab_size,
    layer_norm_eps=encoder.layer_norm_eps,
    pad_token_id=encoder.pad_id,
    hidden_act="gelu",
    **no_dropout,
  )
  model = BertModel(hf, add_pooling_layer=False)
  if params is not None:
    load_bert_params(model, params)
  return model


def load_bert_params(model: nn.Module, params: dict) -> None:
  """Copies BertEncoder params (numpy tree) into a BertModel, in place, by the names of
  jaxdapt.weights.hf_text (kernels [in, out] -> Linear weights [out, in]); every weight of
  the model must be given (buffers such as position_ids are not weights)."""
  from flax import traverse_util

  from jaxdapt.weights.hf_text import hf_name

  state = {}
  for path, value in traverse_util.flatten_dict(params).items():
    value = np.asarray(value, np.float32)
    # A writable copy: jax.device_get's arrays are read-only.
    state[hf_name(path)] = torch.from_numpy(np.array(value.T if path[-1] == "kernel" else value))
  missing, unexpected = model.load_state_dict(state, strict=False)
  weights = {name for name, _ in model.named_parameters()}
  missing = [m for m in missing if m in weights]
  if missing or unexpected:
    raise ValueError(
      f"BertEncoder params do not fit BertModel: missing {missing}, unknown {unexpected}"
    )


class TextNetwork(nn.Module):
  """BertModel -> mean of the last hidden states over real tokens (tokens != pad id, the
  sentence-transformers pooling BertEncoder computes) -> Linear head in float32;
  forward: (features, logits)."""

  def __init__(self, bert: nn.Module, num_classes: int, pad_id: int):
    super().__init__()
    self.bert, self.pad_id = bert, pad_id
    self.head = nn.Linear(bert.config.hidden_size, num_classes)

  def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mask = tokens != self.pad_id
    hidden = self.bert(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
    with _autocast_off(hidden):
      weights = mask.unsqueeze(-1).float()
      pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
      # BertEncoder returns the pooled features in its compute dtype.
      features = pooled.to(hidden.dtype).float()
      return features, self.head(features)


def build_text_network(
  encoder: Any,
  num_classes: int,
  head: dict,
  folder: str | None = None,
  params: dict | None = None,
) -> TextNetwork:
  """The twin of a Classifier(BertEncoder, linear head): the encoder from `folder` or
  `params` (bert_model), the head from the Flax head params {'out': {'kernel', 'bias'}}."""
  net = TextNetwork(bert_model(encoder, folder, params), num_classes, encoder.pad_id)
  with torch.no_grad():
    net.head.weight.copy_(torch.from_numpy(np.array(head["out"]["kernel"], np.float32).T))
    net.head.bias.copy_(torch.from_numpy(np.array(head["out"]["bias"], np.float32)))
  return net


def _text_threads(device: torch.device) -> None:
  """On CPU, one intra-op thread per core this process may use (what XLA:CPU uses)."""
  if device.type == "cpu":
    torch.set_num_threads(
      len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    )


class TorchTextStep:
  """`step(tokens, labels) -> loss`: one update of the text fine-tuning step (int32 token
  ids [B, L], pad id = padding; labels [B]): cross-entropy on the head's logits, then
  AdamW with config.optim's lr, β1 and weight decay on the Linear weights only (the
  kernels optax decays: not embeddings, LayerNorms or biases), the learning rate at the
  step's count as optax's schedule gives it."""

  def __init__(self, config: ml_collections.ConfigDict, net: TextNetwork, device: str = "cpu"):
    self.config, self.device = config, torch.device(device)
    _text_threads(self.device)
    self.net = net.to(self.device).train()
    linear = {id(m.weight) for m in self.net.modules() if isinstance(m, nn.Linear)}
    decay = [p for p in self.net.parameters() if id(p) in linear]
    rest = [p for p in self.net.parameters() if id(p) not in linear]
    self.opt = torch.optim.AdamW(
      [
        {"params": decay, "weight_decay": config.optim.weight_decay},
        {"params": rest, "weight_decay": 0.0},
      ],
      lr=config.optim.lr,
      betas=(config.optim.b1, 0.999),
      eps=1e-8,
    )
    self.amp = _amp(config, self.device)
    self.step_count = 0

  def lr(self) -> float:
    """optax's constant_schedule / cosine_decay_schedule(lr, train.steps) at this step."""
    c = self.config
    if c.optim.schedule == "constant":
      return c.optim.lr
    t = min(self.step_count, c.train.steps) / c.train.steps
    return c.optim.lr * 0.5 * (1.0 + math.cos(math.pi * t))

  def __call__(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    with _autocast(self.amp):
      _, logits = self.net(tokens)
    loss = F.cross_entropy(logits.float(), labels.long())
    return _update(self, loss, self.lr())

  def synchronize(self) -> None:
    _synchronize(self.device)


class TorchTextFeatures:
  """`extract(tokens) -> (features, logits)`: the TextNetwork in eval mode under
  inference_mode, the twin of features.forward_fn on a text encoder."""

  def __init__(self, config: ml_collections.ConfigDict, net: TextNetwork, device: str = "cpu"):
    self.device = torch.device(device)
    _text_threads(self.device)
    self.net = net.to(self.device).eval()
    self.amp = _amp(config, self.device)

  @torch.inference_mode()
  def __call__(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with _autocast(self.amp):
      return self.net(tokens)

  def synchronize(self) -> None:
    _synchronize(self.device)
