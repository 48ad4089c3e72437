"""What the algorithms ask of a text generator: `Backend` (texts) and `LogprobBackend` (+ scores).

A served model (`openai_client.OpenAIClient`) and a local JAX model implement the same two
methods, so UQ and RL code takes either:

  samples = backend.sample(prompts, n=8, temperature=0.7, max_new_tokens=64, key=key)
  samples[i][j]                       # the j-th of n completions of prompts[i], a str

  if isinstance(backend, LogprobBackend):
    scored = backend.sample_with_logprobs(prompts, n=8, temperature=0.7, max_new_tokens=64, seed=0)
    scored[i][j].token_logprobs       # log p of each generated token, in order

Randomness comes from exactly one of `key` (a typed `jax.random.key`, for local models) or
`seed` (an int, which a server may honour only on a best-effort basis); both None means the
backend's own randomness. A backend returns all `len(prompts) x n` samples or raises: never a
partial list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@dataclasses.dataclass(frozen=True)
class Sample:
  """One generated completion with its per-token log-probabilities."""

  text: str  # the completion, prompt excluded
  tokens: tuple[str, ...]  # [T] generated tokens as text pieces
  token_logprobs: tuple[float, ...]  # [T] log p(token_t | prompt, tokens_<t), natural log
  finish_reason: str | None = None  # "stop", "length", ... where the backend reports it

  @property
  def logprob(self) -> float:
    """Log-probability of the whole completion (sum over its tokens)."""
    return float(sum(self.token_logprobs))


@runtime_checkable
class Backend(Protocol):
  """Samples `n` completions per prompt."""

  def sample(
    self,
    prompts: Sequence[str],
    n: int,
    temperature: float,
    max_new_tokens: int,
    *,
    key: Any | None = None,
    seed: int | None = None,
  ) -> list[list[str]]:
    """Returns `[len(prompts)][n]` completion texts (prompt excluded)."""
    ...


@runtime_checkable
class LogprobBackend(Backend, Protocol):
  """A `Backend` that can also report the log-probability of each generated token."""

  def sample_with_logprobs(
    self,
    prompts: Sequence[str],
    n: int,
    temperature: float,
    max_new_tokens: int,
    *,
    key: Any | None = None,
    seed: int | None = None,
  ) -> list[list[Sample]]:
    """Returns `[len(prompts)][n]` samples with their token log-probabilities."""
    ...


def check_sample_args(
  prompts: Sequence[str],
  n: int,
  temperature: float,
  max_new_tokens: int,
  key: Any = None,
  seed: Any = None,
  *,
  length_field: str = "max_new_tokens",
) -> None:
  """Raises ValueError, naming the field and value, for arguments no backend can take.

  `length_field` is the name the caller's API gives `max_new_tokens` (for the message).
  """
  if isinstance(prompts, str) or not isinstance(prompts, Sequence):
    raise ValueError(f"prompts must be a sequence of str, got {type(prompts).__name__}")
  for i, prompt in enumerate(prompts):
    if not isinstance(prompt, str):
      raise ValueError(f"prompts[{i}] must be a str, got {type(prompt).__name__}")
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"n={n!r} must be a positive int")
  if not isinstance(temperature, int | float) or not temperature >= 0:
    raise ValueError(f"temperature={temperature!r} must be a number >= 0")
  if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
    raise ValueError(f"{length_field}={max_new_tokens!r} must be a positive int")
  if key is not None and seed is not None:
    raise ValueError("give key or seed, not both")
  if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
    raise ValueError(f"seed={seed!r} must be an int")
