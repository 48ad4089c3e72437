"""XLA flags for many small ops on a CPU, set before JAX starts its backend.

The engine's step is hundreds of tiny kernels. XLA:CPU's concurrency-optimised scheduler
orders them for parallel execution, and on a 2-core machine that roughly doubled the time of a
serving step (measured: 33 -> 17 us per macro-step; launch/benchmark.py records the flags it ran
with, and `--notune_cpu` measures without them).
Launch scripts and the test suite call `add` before any JAX computation; a library import never
changes the process's flags.
"""

from __future__ import annotations

import os

CPU_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)


def add(*flags: str) -> str:
  """Appends `flags` (default CPU_FLAGS) to XLA_FLAGS unless already named there; returns it."""
  current = os.environ.get("XLA_FLAGS", "")
  for flag in flags or CPU_FLAGS:
    if flag.split("=")[0] not in current:
      current = f"{current} {flag}".strip()
  os.environ["XLA_FLAGS"] = current
  return current
