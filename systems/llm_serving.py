"""Jittable LLM-serving engine: continuous batching over a fixed-capacity request table.

Semantics (exact, shared with the plain-Python reference): docs/llm_serving_semantics.md.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.struct
import jax.numpy as jnp

from jaxsys.systems import timing

BLOCK_SIZE = 16
EMPTY, BLOCKED, WAITING, RUNNING, PREEMPTED = 0, 1, 2, 3, 4


class EnvConfig(NamedTuple):
  """Static choices: shapes and code paths (hashable, never vmapped)."""

  n_slots: int = 256  # request-table capacity; must exceed peak concurrency
  admit_max: int = 64  # arrivals moved into the table per step
  chunked_prefill: bool = True  # Sarathi-style chunks; False grants whole prompts only
  time_model: str = "roofline"  # "roofline" or "linear"


@flax.struct.dataclass
class EnvParams:
  """Numbers of one run; a sweep vmaps over a stack of these."""

  token_budget: int = 512  # tokens per iteration (Sarathi chunk)
  max_seqs: int = 128  # requests per iteration
  num_blocks: int = 26_700  # KV-cache capacity in blocks of 16 tokens
  watermark: float = 0.01  # fraction of blocks kept free when a batch holds a prefill
  arrival_scale: float = 1.0  # arrival times are divided by it: the load knob
  noise_sigma: float = 0.0  # lognormal multiplicative noise on batch time
  step_delay: float = 0.0  # non-LLM time between DAG stages (s)
  alpha: float = 100.0  # service-gain penalty exponent
  decode_weight: float = 8.0  # gain weight of a decode token vs a prompt token
  time_coef: timing.TimeCoef = timing.TimeCoef()  # batch time model coefficients
