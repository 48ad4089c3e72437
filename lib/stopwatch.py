"""Wall-clock timing of JAX work, for the benchmarks (launch/benchmark.py and its suites)."""

from __future__ import annotations

import time

import jax


def timed(fn, repeats: int = 1):
  """(output of the last call, best wall time in s over `repeats` calls), waiting for JAX's
  asynchronous results before the clock stops."""
  best, out = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - start)
  return out, best
