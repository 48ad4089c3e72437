"""Name-keyed registries, so configs select components by string and sweeps compare them by name.

Modules register their components at import time; configs and sweeps look them up:

  POLICIES = Registry("policy")

  @POLICIES.register("fcfs")
  def fcfs(...): ...

  POLICIES.register("edf", edf)          # or without the decorator
  policy = POLICIES.get(config.policy)   # KeyError listing the known names
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class Registry:
  """A mapping from names to objects of one kind (policies, scores, losses, reproductions)."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, Any] = {}

  def register(self, name: str, obj: Any = None, *, overwrite: bool = False) -> Any:
    """Registers `obj` under `name`; without `obj`, returns a decorator that does so.

    Registering a second object under a taken name raises ValueError unless `overwrite`
    (re-registering the same object, as a module reload does, is fine).
    """
    if not isinstance(name, str) or not name:
      raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
    if obj is None:
      return lambda o: self.register(name, o, overwrite=overwrite)
    old = self._entries.get(name)
    if old is not None and old is not obj and not overwrite:
      raise ValueError(f"{self.kind} {name!r} is already registered (to {old!r})")
    self._entries[name] = obj
    return obj

  def get(self, name: str) -> Any:
    """The object registered as `name`; KeyError naming the known names if there is none."""
    try:
      return self._entries[name]
    except KeyError:
      known = ", ".join(self.names()) or "(none)"
      raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

  def names(self) -> list[str]:
    """The registered names, sorted."""
    return sorted(self._entries)

  def items(self) -> list[tuple[str, Any]]:
    """(name, object) pairs sorted by name."""
    return [(n, self._entries[n]) for n in self.names()]

  def __contains__(self, name: object) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())

  def __len__(self) -> int:
    return len(self._entries)

  def __repr__(self) -> str:
    return f"Registry({self.kind!r}, names={self.names()})"


# Module-level registries. Modules fill them at import time.
POLICIES = Registry("policy")
REPRODUCTIONS = Registry("reproduction")
UQ_SCORES = Registry("uq score")
ADVANTAGES = Registry("advantage estimator")
LOSSES = Registry("loss")
