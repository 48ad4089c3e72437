r"""Runs one simulation experiment from a config file.

  python -m jaxsys.launch.simulate \
      --config=launch/configs/serving/tempo_load_sweep.py:smoke --workdir=/tmp/tempo

Writes config.json, metrics.jsonl, results.json and PNG figures into --workdir.
"""

from __future__ import annotations

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxsys.launch import serving
from jaxsys.lib import xla_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results are written.")
flags.mark_flags_as_required(["config", "workdir"])

EXPERIMENTS = {"tempo_load_sweep": serving.run}


def main(argv):
  del argv
  xla_flags.add()  # before the first JAX computation starts the backend
  jax.config.update("jax_enable_x64", True)
  config = _CONFIG.value
  logging.info("devices: %s", jax.devices())
  if config.experiment not in EXPERIMENTS:
    raise ValueError(f"config.experiment={config.experiment!r}; known: {sorted(EXPERIMENTS)}")
  summary = EXPERIMENTS[config.experiment](config, _WORKDIR.value)
  logging.info("done in %.1f s; results in %s", summary.get("wall_s", 0.0), _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
