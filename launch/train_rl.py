r"""GRPO training with plain, dynamic-sampling (DAPO) or selective (GRESO) batches.

  python -m jaxsys.launch.train_rl --config=launch/configs/rl/greso.py:smoke --workdir=/tmp/rl
  python -m jaxsys.launch.train_rl --config=launch/configs/rl/greso.py \
      --config.method=ds --config.seed=1 --workdir=/tmp/rl_ds_1

One method and seed per run. Writes config.json, metrics.jsonl (spec section 6 metrics every
step, held-out accuracy every eval_every steps) and orbax checkpoints into --workdir; run the
same command again to resume a stopped run exactly. The warm start is trained once into
--sft_dir (default: WORKDIR/sft) and read from there after. The loop: launch/rl.py.
"""

from __future__ import annotations

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxsys.launch import rl
from jaxsys.lib import checkpoint, xla_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "RL config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Metrics and checkpoints go here.")
_SFT_DIR = flags.DEFINE_string("sft_dir", None, "Warm-start checkpoint (default WORKDIR/sft).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  xla_flags.add()  # before the first JAX computation starts the backend
  checkpoint.quiet_orbax_logs()
  logging.info("devices: %s", jax.devices())
  out = rl.train(_CONFIG.value, _WORKDIR.value, sft_dir=_SFT_DIR.value)
  print({k: v for k, v in out["final"].items() if k.startswith(("eval/", "rollout/"))})


if __name__ == "__main__":
  app.run(main)
