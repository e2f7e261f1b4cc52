"""The model registry and `get_model`, the one entry point the trainer uses.

A registry entry is a backbone builder `f(*, norm, dtype, **options) ->
nn.Module` whose module maps images [B,H,W,C] to features [B,D];
`get_model` wraps it in a `Classifier` (backbone / bottleneck / head).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdapt.errors import ConfigError
from jaxdapt.models.classifier import Classifier
from jaxdapt.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", "model.name")


def get_model(
  name: str,
  *,
  num_classes: int,
  bottleneck_dim: int | None = None,
  head_hidden: tuple[int, ...] = (),
  dropout: float = 0.0,
  norm: str = "default",
  dtype: Any = jnp.float32,
  remat: bool = False,
  **backbone_kwargs: Any,
) -> Classifier:
  """Builds registered backbone `name` plus optional bottleneck and MLP head.

  Options the backbone does not take raise ConfigError naming the ones it does,
  so config typos fail here instead of deep inside Flax. `remat` (model.remat) reaches
  backbones whose builder takes it (their blocks under nn.remat, layers.maybe_remat).
  """
  builder = MODELS.get(name)
  params = inspect.signature(builder).parameters
  accepted = [p for p in params if p not in ("norm", "dtype", "remat")]
  unknown = sorted(set(backbone_kwargs) - set(accepted))
  if unknown:
    raise ConfigError(
      f"model: {name} does not take option(s) {', '.join(unknown)}; "
      f"allowed: {', '.join(accepted) or '(none)'}"
    )
  if not isinstance(num_classes, int) or num_classes < 1:
    raise ConfigError(f"model.num_classes: must be a positive int, got {num_classes!r}")
  if bottleneck_dim is not None and (not isinstance(bottleneck_dim, int) or bottleneck_dim < 1):
    raise ConfigError(
      f"model.bottleneck_dim: must be None or a positive int, got {bottleneck_dim!r}"
    )
  head_hidden = tuple(head_hidden)
  if any(not isinstance(h, int) or h < 1 for h in head_hidden):
    raise ConfigError(f"model.head_hidden: must be positive ints, got {head_hidden!r}")
  if not 0.0 <= dropout < 1.0:
    raise ConfigError(f"model.dropout: must be in [0, 1), got {dropout!r}")
  try:
    dtype = jnp.dtype(dtype)  # accepts 'bfloat16' from configs as well as jnp.bfloat16
  except TypeError:
    raise ConfigError(f"model.dtype: not a dtype: {dtype!r}") from None
  if remat:
    if "remat" not in params:
      with_remat = [
        m for m in MODELS.names() if "remat" in inspect.signature(MODELS.get(m)).parameters
      ]
      raise ConfigError(
        f"model.remat: {name} has no blocks to rematerialise; models that "
        f"have: {', '.join(with_remat)}"
      )
    backbone_kwargs["remat"] = True
  backbone = builder(norm=norm, dtype=dtype, **backbone_kwargs)
  return Classifier(
    backbone=backbone,
    num_classes=num_classes,
    bottleneck_dim=bottleneck_dim,
    head_hidden=head_hidden,
    dropout=dropout,
    dtype=dtype,
  )
