"""Test-wide JAX setup: 8 fake CPU devices (for sharding tests), CPU flags, 64-bit types.

XLA reads the device count once, when the backend starts, so the flag is set here, before any
test module imports jax. Each pytest-xdist worker is its own process and runs this file too.
"""

import pytest

from jaxsys.lib import xla_flags

xla_flags.add("--xla_force_host_platform_device_count=8", *xla_flags.CPU_FLAGS)

import jax  # noqa: E402  (must come after XLA_FLAGS)

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
  """Frees every compiled program after each test module.

  Two full runs (2026-11-25) died inside XLA's CPU compiler late in a worker's life, in
  different serving tests that pass when run alone; the cause is not pinned down. Dropping the
  programs a worker has kept is a mitigation: each module starts from an empty cache.
  """
  yield
  jax.clear_caches()
