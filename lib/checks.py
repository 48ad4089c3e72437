"""Argument checks shared by the pure-function modules, with messages that name the argument.

Python-level settings (counts that fix shapes, thresholds, choices) are always checked; array
values only when they are concrete, since a tracer under jit or vmap has none to look at.

  count(num_bootstrap, "num_bootstrap", 1)   # a Python int >= 1, returned as int
  number(tol, "tol", minimum=0.0)            # a finite Python number, returned as float
  choice(transform, "transform", ("shift", "abs"))
  typed_key(key)                             # a single typed key from jax.random.key
  finite(rewards, "rewards")                 # no NaN/inf, when concrete
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def count(value, name: str, minimum: int) -> int:
  """A Python (or numpy) int >= minimum; bools are refused."""
  if isinstance(value, bool) or not isinstance(value, int | np.integer):
    raise ValueError(f"{name} must be a Python int (it fixes a shape), got {value!r}")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")
  return int(value)


def number(value, name: str, minimum: float | None = None) -> float:
  """A finite Python (or numpy) number, optionally >= minimum; bools are refused."""
  if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
    raise ValueError(f"{name} must be a Python number, got {value!r}")
  value = float(value)
  if not math.isfinite(value):
    raise ValueError(f"{name} must be finite, got {value}")
  if minimum is not None and value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")
  return value


def choice(value, name: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def typed_key(key, name: str = "key") -> None:
  """A single typed PRNG key (jax.random.key), not a legacy uint32 key or a batch of keys."""
  if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
    raise ValueError(f"{name} must be a typed key from jax.random.key, got {key!r}")
  if key.shape != ():
    raise ValueError(f"{name} must be a single key, got shape {key.shape}")


def finite(x, name: str) -> None:
  """Rejects NaN/inf entries of a concrete array, naming the first; tracers pass."""
  if isinstance(x, jax.core.Tracer):
    return
  values = np.asarray(x)
  if not np.issubdtype(values.dtype, np.floating):
    return
  bad = ~np.isfinite(values)
  if bad.any():
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(
      f"{name} must be finite; {int(bad.sum())} values are not (first at index {first}: "
      f"{values[first]})"
    )
