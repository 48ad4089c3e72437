r"""Runs every registered paper reproduction at its quick setting and writes report.md.

  python -m jaxsys.launch.reproduce --workdir=workdir/demo [--setting=quick|smoke|full]
  python -m jaxsys.launch.reproduce --only=rl --setting=full --workdir=workdir/rl_full

This is `make demo`. Each reproduction writes into its own subfolder of --workdir; report.md
collects their tables and figures.
"""

from __future__ import annotations

import os
import time

import jax
from absl import app, flags, logging

from jaxsys.launch import disco, echolm, hygen, rl, serving, uncertainty
from jaxsys.launch.configs.rl import greso
from jaxsys.launch.configs.serving import (
  disco_budget,
  echolm_routing,
  hygen_colocation,
  tempo_load_sweep,
)
from jaxsys.launch.configs.uq import inv_entropy
from jaxsys.lib import checkpoint, xla_flags
from jaxsys.lib.registry import REPRODUCTIONS

_WORKDIR = flags.DEFINE_string("workdir", "workdir/demo", "Where the report is written.")
_SETTING = flags.DEFINE_enum("setting", "quick", ["quick", "smoke", "full"], "Run size.")
_ONLY = flags.DEFINE_list("only", [], "Reproductions to run (default: all registered).")

# name -> (config factory, run(config, workdir) -> summary, summary -> markdown)
REPRODUCTIONS.register("tempo", (tempo_load_sweep.get_config, serving.run, serving.report_markdown))
REPRODUCTIONS.register("hygen", (hygen_colocation.get_config, hygen.run, hygen.report_markdown))
REPRODUCTIONS.register("disco", (disco_budget.get_config, disco.run, disco.report_markdown))
REPRODUCTIONS.register("echolm", (echolm_routing.get_config, echolm.run, echolm.report_markdown))
REPRODUCTIONS.register("uq", (inv_entropy.get_config, uncertainty.run, uncertainty.report_markdown))
REPRODUCTIONS.register("rl", (greso.get_config, rl.run, rl.report_markdown))


def reproduce(workdir: str, setting: str = "quick", only=()) -> str:
  """Runs the reproductions (all, or those named in `only`); returns the path of report.md."""
  os.makedirs(workdir, exist_ok=True)
  arg = "" if setting == "full" else setting
  unknown = set(only) - set(REPRODUCTIONS.names())
  if unknown:
    raise ValueError(f"--only: unknown {sorted(unknown)}; known: {REPRODUCTIONS.names()}")
  sections = []
  for name, (get_config, run, to_markdown) in REPRODUCTIONS.items():
    if only and name not in only:
      continue
    config = get_config(arg)
    sub = os.path.join(workdir, name)
    start = time.perf_counter()
    logging.info("reproducing %s (%s)", name, setting)
    summary = run(config, sub)
    section = to_markdown(summary, config)
    # figures live in the subfolder; the report sits one level up
    section = section.replace("](", f"]({name}/")
    sections.append(section + f"\n_{name}: {time.perf_counter() - start:.0f} s wall._\n")
  path = os.path.join(workdir, "report.md")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(f"# jaxsys reproductions ({setting})\n\n")
    f.write(f"Devices: {', '.join(str(d) for d in jax.devices())}\n\n")
    f.write("\n".join(sections))
  os.replace(tmp, path)
  return path


def main(argv):
  del argv
  xla_flags.add()  # before the first JAX computation starts the backend
  checkpoint.quiet_orbax_logs()
  jax.config.update("jax_enable_x64", True)
  path = reproduce(_WORKDIR.value, _SETTING.value, _ONLY.value)
  logging.info("report: %s", path)
  print(f"report written to {path}")


if __name__ == "__main__":
  app.run(main)
