r"""Runs one simulation experiment from a config file.

  python -m jaxsys.launch.simulate \
      --config=launch/configs/serving/tempo_load_sweep.py:smoke --workdir=/tmp/tempo

Writes config.json, metrics.jsonl, results.json, PNG figures and report.md into --workdir.
Experiments (launch/configs/serving/): tempo_load_sweep, hygen_colocation, disco_budget,
echolm_routing.
"""

from __future__ import annotations

import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxsys.launch import disco, echolm, hygen, serving
from jaxsys.lib import xla_flags
from jaxsys.lib.writer import atomic_write

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results are written.")
flags.mark_flags_as_required(["config", "workdir"])

# config.experiment -> (run(config, workdir) -> summary, report_markdown(summary, config))
EXPERIMENTS = {
  "tempo_load_sweep": (serving.run, serving.report_markdown),
  "hygen_colocation": (hygen.run, hygen.report_markdown),
  "disco_budget": (disco.run, disco.report_markdown),
  "echolm_routing": (echolm.run, echolm.report_markdown),
}


def main(argv):
  del argv
  xla_flags.add()  # before the first JAX computation starts the backend
  jax.config.update("jax_enable_x64", True)
  config = _CONFIG.value
  logging.info("devices: %s", jax.devices())
  if config.experiment not in EXPERIMENTS:
    raise ValueError(f"config.experiment={config.experiment!r}; known: {sorted(EXPERIMENTS)}")
  run, to_markdown = EXPERIMENTS[config.experiment]
  summary = run(config, _WORKDIR.value)
  atomic_write(os.path.join(_WORKDIR.value, "report.md"), to_markdown(summary, config))
  logging.info("done in %.1f s; results in %s", summary.get("wall_s", 0.0), _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
