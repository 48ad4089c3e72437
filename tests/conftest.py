"""Test-wide JAX setup: 8 fake CPU devices (for sharding tests) and 64-bit types.

XLA reads the device count once, when the backend starts, so the flag is set here, before any
test module imports jax. Each pytest-xdist worker is its own process and runs this file too.
"""

import os

_DEVICES_FLAG = "--xla_force_host_platform_device_count=8"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _DEVICES_FLAG).strip()

import jax  # noqa: E402  (must come after XLA_FLAGS)

jax.config.update("jax_enable_x64", True)
