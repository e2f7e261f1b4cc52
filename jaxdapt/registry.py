"""A name -> object registry whose lookup errors list the allowed names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from jaxdapt.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
  """Maps names to objects (model constructors, methods, datasets).

  `field` is the config field that selects from this registry; it is named in
  the error so a typo in a config points straight at the line to fix.
  """

  def __init__(self, kind: str, field: str):
    self.kind = kind
    self.field = field
    self._items: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def decorator(obj: T) -> T:
      if name in self._items:
        raise KeyError(f"{self.kind} {name!r} registered twice")
      self._items[name] = obj
      return obj

    return decorator

  def get(self, name: str) -> T:
    try:
      return self._items[name]
    except KeyError:
      raise ConfigError(
        f"{self.field}: unknown {self.kind} {name!r}; allowed: {', '.join(sorted(self._items))}"
      ) from None

  def names(self) -> list[str]:
    return sorted(self._items)

  def __contains__(self, name: str) -> bool:
    return name in self._items
