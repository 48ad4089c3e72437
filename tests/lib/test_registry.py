"""lib/registry.py: register, get, names, errors."""

import pytest

from jaxsys.lib import registry


def test_register_decorator_and_call():
  reg = registry.Registry("thing")

  @reg.register("b")
  def b():
    return 2

  def a():
    return 1

  assert reg.register("a", a) is a
  assert reg.get("a") is a and reg.get("b") is b
  assert b() == 2  # the decorator returns the function itself
  assert reg.names() == ["a", "b"]
  assert list(reg) == ["a", "b"] and len(reg) == 2 and "a" in reg
  assert reg.items() == [("a", a), ("b", b)]


def test_unknown_name_lists_known_names():
  reg = registry.Registry("policy")
  reg.register("fcfs", object())
  reg.register("edf", object())
  with pytest.raises(KeyError, match=r"unknown policy 'sjf'; known: edf, fcfs"):
    reg.get("sjf")


def test_duplicate_name_rejected_unless_same_or_overwrite():
  reg = registry.Registry("loss")
  first, second = object(), object()
  reg.register("x", first)
  reg.register("x", first)  # same object again: fine (module reload)
  with pytest.raises(ValueError, match="already registered"):
    reg.register("x", second)
  reg.register("x", second, overwrite=True)
  assert reg.get("x") is second


def test_bad_name():
  with pytest.raises(ValueError, match="non-empty string"):
    registry.Registry("thing").register("", object())


def test_module_registries_exist():
  assert isinstance(registry.POLICIES, registry.Registry)
  assert isinstance(registry.REPRODUCTIONS, registry.Registry)
  assert registry.POLICIES.kind == "policy"
