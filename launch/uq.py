r"""Uncertainty quantification: Inv-Entropy and the baselines on real questions.

  python -m jaxsys.launch.uq --config=launch/configs/uq/inv_entropy.py[:smoke|:quick] \
      --workdir=/tmp/uq
  python -m jaxsys.launch.uq --config=launch/configs/uq/inv_entropy.py \
      --config.backend=openai --config.base_url=http://localhost:8000 --config.model=NAME ...

Writes config.json, metrics.jsonl, scores_<dataset>.csv, results.json and PNGs into --workdir,
and caches every generation stage there, so a rerun (or a new estimator) resumes without
regenerating. The experiment itself: launch/uncertainty.py.
"""

from __future__ import annotations

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxsys.launch import uncertainty
from jaxsys.lib import xla_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "UQ config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results and the generation cache go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  xla_flags.add()  # before the first JAX computation starts the backend
  logging.info("devices: %s", jax.devices())
  summary = uncertainty.run(_CONFIG.value, _WORKDIR.value)
  print(uncertainty.report_markdown(summary, _CONFIG.value))


if __name__ == "__main__":
  app.run(main)
