"""Reference points that do no adaptation: the lower and the upper bound."""

from __future__ import annotations

import dataclasses

from jaxdapt.methods.base import METHODS, Method


@METHODS.register("source_only")
@dataclasses.dataclass(frozen=True)
class SourceOnly(Method):
  """Train on labeled source only; the target is never seen (lower bound)."""

  domains: tuple[str, ...] = ("source",)


@METHODS.register("target_oracle")
@dataclasses.dataclass(frozen=True)
class TargetOracle(Method):
  """Train on the target's labels (upper bound; not an adaptation method)."""

  domains: tuple[str, ...] = ("target",)
  supervised_domain: str = "target"
