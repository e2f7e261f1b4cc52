"""What the trainer builds from a config: model, method, optimizer, data and jitted steps."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import optax

from jaxdapt.methods import Method


@dataclasses.dataclass
class Experiment:
  """Everything built from a config that the loop needs (no mutable training state)."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  model: Any
  method: Method
  tx: optax.GradientTransformation
  num_classes: int
  sources: dict[str, Any]
  update: Callable
  evaluate_batch: Callable
  init: Callable
