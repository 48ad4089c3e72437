"""ml_collections config helpers: load `file.py:arg`, validate fields, dump to JSON.

Config files live in `launch/configs/<family>/<name>.py` and define `get_config(arg: str = "")`;
`arg` selects a variant (`:smoke` runs in seconds, `:quick` in minutes), as in big_vision.

  config = config_lib.load("launch/configs/serving/tempo_load_sweep.py:smoke")
  config_lib.require(config, "seeds", lambda v: v >= 1, "need at least one seed")
  config_lib.require(config, "arrivals", ("poisson", "azure"))
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
from collections.abc import Callable, Collection, Mapping
from typing import Any

import ml_collections
import numpy as np


def split_spec(spec: str) -> tuple[str, str]:
  """'path/to/name.py:arg' or 'pkg.module:arg' -> (path or module, arg); arg may be ''."""
  if ".py:" in spec:
    target, _, arg = spec.partition(".py:")
    return target + ".py", arg
  if spec.endswith(".py") or ":" not in spec:
    return spec, ""
  target, _, arg = spec.partition(":")
  return target, arg


def load(spec: str) -> ml_collections.ConfigDict:
  """Loads `launch/configs/<family>/<name>.py[:arg]` (or `pkg.module[:arg]`) via get_config(arg).

  A file path is loaded from disk (it need not be importable); anything not ending in `.py` is
  imported as a module, e.g. `jaxsys.launch.configs.serving.tempo_load_sweep:smoke`.
  """
  target, arg = split_spec(spec)
  if target.endswith(".py"):
    if not os.path.isfile(target):
      raise ValueError(f"config file {target!r} (from spec {spec!r}) does not exist")
    name = "_jaxsys_config_" + os.path.splitext(os.path.basename(target))[0]
    module_spec = importlib.util.spec_from_file_location(name, target)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
  else:
    module = importlib.import_module(target)
  get_config = getattr(module, "get_config", None)
  if get_config is None:
    raise ValueError(f"config {target!r} defines no get_config(arg)")
  if inspect.signature(get_config).parameters:
    return get_config(arg)
  if arg:
    raise ValueError(f"config {target!r}: get_config() takes no argument, got {arg!r}")
  return get_config()


_MISSING = object()


def get_field(config: Any, field: str, default: Any = _MISSING) -> Any:
  """`config.a.b` for field 'a.b'; ValueError naming the field (or `default`) if missing."""
  value = config
  for part in field.split("."):
    try:
      value = value[part] if isinstance(value, Mapping) else getattr(value, part)
    except (KeyError, AttributeError):
      if default is not _MISSING:
        return default
      known = sorted(value.keys()) if hasattr(value, "keys") else []
      raise ValueError(f"config has no field {field!r}; known here: {known}") from None
  return value


def require(
  config: Any,
  field: str,
  check: Callable[[Any], bool] | Collection[Any],
  message: str = "",
) -> Any:
  """Returns `config.<field>` if `check(value)` holds, else raises ValueError naming both.

  `check` is a predicate or a collection of allowed values. A predicate that raises counts as
  failing (so `lambda v: v > 0` rejects None with the same clear error).
  """
  value = get_field(config, field)
  if callable(check):
    try:
      ok = bool(check(value))
    except Exception:  # a predicate that cannot even be evaluated rejects the value
      ok = False
    why = message or "failed the check"
  else:
    allowed = list(check)
    ok = value in allowed
    why = message or f"must be one of {allowed}"
  if not ok:
    raise ValueError(f"config.{field}={value!r}: {why}")
  return value


def _jsonable(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple, set, frozenset)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (str, bool, int, float)) or x is None:
    return x
  if isinstance(x, np.generic):
    return x.item()
  if hasattr(x, "__array__"):
    return np.asarray(x).tolist()
  return repr(x)


def to_dict(config: Any) -> dict[str, Any]:
  """A JSON-serialisable plain dict of a (Frozen)ConfigDict or mapping; tuples become lists."""
  if isinstance(config, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
    config = config.to_dict()
  return _jsonable(config)
