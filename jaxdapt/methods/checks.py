"""Checks of method-specific config fields, run when a method is constructed.

`config.validate` looks the method name up in the registry first, so an
unknown name still fails with the registry's ConfigError; these checks only
run for the method that reads the field.
"""

from __future__ import annotations

from typing import Any

from jaxdapt.errors import ConfigError


def positive_number(field: str, value: Any, *, allow_zero: bool = False) -> None:
  ok = (
    isinstance(value, (int, float))
    and not isinstance(value, bool)
    and (value >= 0 if allow_zero else value > 0)
  )
  if not ok:
    raise ConfigError(
      f"method.{field}: must be a number {'>= 0' if allow_zero else '> 0'}, got {value!r}"
    )


def positive_int(field: str, value: Any) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ConfigError(f"method.{field}: must be a positive integer, got {value!r}")


def widths(field: str, value: Any) -> None:
  if not isinstance(value, (tuple, list)) or not all(
    isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in value
  ):
    raise ConfigError(f"method.{field}: must be a tuple of positive integers, got {value!r}")
