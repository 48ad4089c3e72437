r"""Measured speed of the jitted serving engine against the plain-Python reference.

  python -m jaxsys.launch.benchmark --suite=serving --out=workdir/bench/serving.json [--quick]

Everything is measured side by side in one process on this machine: (1) simulated requests per
second of one run, jitted (compile time reported apart) vs the reference, on a workload of
Azure-code-trace lengths with Poisson arrivals; (2) a K-config vmapped sweep vs K sequential
reference runs and K sequential jitted runs; (3) jitted time per request as the trace grows.
Results: a JSON file (and a short table on stdout).
"""

from __future__ import annotations

import json
import os
import platform
import time

import jax
import numpy as np
from absl import app, flags, logging

from jaxsys.lib import sim
from jaxsys.lib.writer import atomic_write
from jaxsys.scheduling import baselines
from jaxsys.systems import llm_serving as ls
from jaxsys.systems import llm_serving_reference as reference
from jaxsys.systems import timing, workloads

_SUITE = flags.DEFINE_enum("suite", "serving", ["serving"], "Which benchmark suite.")
_OUT = flags.DEFINE_string("out", "workdir/bench/serving.json", "Where the JSON goes.")
_QUICK = flags.DEFINE_bool("quick", False, "Small sizes (seconds), for tests.")
_AZURE = flags.DEFINE_string(
  "azure", "../shared/data/azure_llm_2023_code.csv", "Azure code trace (lengths)."
)


def azure_like(n, rate, seed, azure_path):
  """n requests with (prompt, output) pairs resampled from the Azure trace, Poisson arrivals."""
  rng = np.random.default_rng(seed)
  if os.path.exists(azure_path):
    _, prompt, out = workloads.load_azure_trace(azure_path)
  else:  # documented fallback: chat-like lognormal lengths
    logging.warning("%s not found: using lognormal lengths", azure_path)
    prompt = workloads.lognormal_lengths(rng, 10_000, 1469, 0.8, 7437)
    out = workloads.lognormal_lengths(rng, 10_000, 13, 1.2, 1899)
  pick = rng.integers(0, len(prompt), n)
  arrival = workloads.poisson_arrivals(rng, n, rate)
  return workloads.make_requests(rng, arrival, prompt[pick], out[pick], n_clients=4)


def _params(coef, **kw):
  base = dict(token_budget=512, max_seqs=128, num_blocks=timing.kv_blocks_capacity(coef, 80e9))
  base.update(kw)
  return ls.EnvParams(time_coef=coef, **base)


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  jax.block_until_ready(out)
  return out, time.perf_counter() - start


def single_run(env, policy, coef, wl, with_reference=True):
  """Wall time of one run: jitted (first call = compile + run, second = run) and reference."""
  params = _params(coef)
  key = jax.random.key(0)
  run = lambda: sim.rollout(env, policy, params, (), key, wl)[0]  # noqa: E731
  _, first = _timed(run)
  state, wall = _timed(run)
  steps = int(state.busy_steps)
  res = {
    "requests": wl.n_total,
    "iterations": steps,
    "scan_steps": int(state.step),
    "jit_wall_s": wall,
    "jit_compile_s": max(first - wall, 0.0),
    "jit_requests_per_s": wl.n_total / wall,
    "jit_us_per_request": wall / wl.n_total * 1e6,
    "jit_us_per_scan_step": wall / int(state.step) * 1e6,
  }
  if with_reference:
    np_wl = jax.tree.map(np.asarray, wl)
    ref, ref_wall = _timed(lambda: reference.simulate(np_wl, env.config, params, "fcfs"))
    assert ref["n_finished"] == wl.n_total
    finish = np.asarray(state.outputs.finish_t)
    res.update(
      ref_wall_s=ref_wall,
      ref_requests_per_s=wl.n_total / ref_wall,
      ref_us_per_iteration=ref_wall / ref["steps"] * 1e6,
      speedup=ref_wall / wall,
      max_finish_diff_s=float(np.max(np.abs(finish - ref["finish_t"]))),
    )
  return res


def sweep_vs_sequential(env, policy, coef, wl, k):
  """K configurations (load x token budget) as one vmapped sweep vs K sequential runs."""
  scales = np.linspace(0.5, 2.0, k)
  params = [
    _params(coef, arrival_scale=float(s), max_seqs=int(32 + 96 * (i % 2)))
    for i, s in enumerate(scales)
  ]
  stacked = sim.stack(params)
  keys = jax.random.split(jax.random.key(0), k)
  run = lambda: sim.sweep(env, policy, stacked, (), keys, wl)[0]  # noqa: E731
  _, first = _timed(run)
  _, sweep_wall = _timed(run)
  np_wl = jax.tree.map(np.asarray, wl)
  _, ref_wall = _timed(lambda: [reference.simulate(np_wl, env.config, p, "fcfs") for p in params])
  seq = lambda: [sim.rollout(env, policy, p, (), keys[0], wl)[0] for p in params]  # noqa: E731
  _timed(lambda: sim.rollout(env, policy, params[0], (), keys[0], wl)[0])  # compile
  _, seq_wall = _timed(seq)
  return {
    "configs": k,
    "requests_per_config": wl.n_total,
    "sweep_wall_s": sweep_wall,
    "sweep_compile_s": max(first - sweep_wall, 0.0),
    "reference_sequential_wall_s": ref_wall,
    "jit_sequential_wall_s": seq_wall,
    "speedup_vs_reference": ref_wall / sweep_wall,
    "speedup_vs_jit_sequential": seq_wall / sweep_wall,
    "sweep_s_per_config": sweep_wall / k,
  }


def serving(quick: bool, azure_path: str):
  jax.config.update("jax_enable_x64", True)
  coef = timing.get_preset("llama31_8b_a100")
  env = ls.make(ls.EnvConfig(n_slots=256))
  policy = baselines.fcfs()
  rate = 2.0  # requests/s: about 60% of this engine's prefill capacity for these lengths
  sizes = (1_000, 4_000, 16_000) if quick else (10_000, 100_000, 1_000_000)
  result = {
    "machine": {
      "platform": platform.platform(),
      "cpus": os.cpu_count(),
      "devices": [str(d) for d in jax.devices()],
      "jax": jax.__version__,
    },
    "setup": "Azure code-trace lengths, Poisson 2 req/s, Llama-3.1-8B/A100 roofline, "
    "Sarathi chunk 512, max_seqs 128, 256 slots, FCFS",
  }
  big = azure_like(sizes[1], rate, 0, azure_path)
  logging.info("single run, %d requests", big.n_total)
  result["single_run"] = single_run(env, policy, coef, big)
  scaling = []
  for n in sizes:
    wl = azure_like(n, rate, 1, azure_path)
    r = single_run(env, policy, coef, wl, with_reference=False)
    scaling.append({k: r[k] for k in ("requests", "jit_wall_s", "jit_us_per_request")})
    logging.info("scaling %s", scaling[-1])
  per_req = [s["jit_us_per_request"] for s in scaling]
  result["scaling"] = {"runs": scaling, "max_over_min_us_per_request": max(per_req) / min(per_req)}
  small = azure_like(500 if quick else 2_000, rate, 2, azure_path)
  result["sweep"] = [sweep_vs_sequential(env, policy, coef, small, k) for k in (8, 64)]
  return result


def main(argv):
  del argv
  result = serving(_QUICK.value, _AZURE.value)
  os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
  atomic_write(_OUT.value, json.dumps(result, indent=1))
  s = result["single_run"]
  print(
    f"single run ({s['requests']} requests): jit {s['jit_wall_s']:.1f} s "
    f"(+{s['jit_compile_s']:.1f} s compile), reference {s['ref_wall_s']:.1f} s, "
    f"speedup {s['speedup']:.2f}x"
  )
  for sw in result["sweep"]:
    print(
      f"sweep K={sw['configs']}: {sw['sweep_wall_s']:.1f} s vs reference "
      f"{sw['reference_sequential_wall_s']:.1f} s ({sw['speedup_vs_reference']:.1f}x), "
      f"jit sequential {sw['jit_sequential_wall_s']:.1f} s"
    )
  print(
    f"time per request across sizes: max/min {result['scaling']['max_over_min_us_per_request']:.2f}"
  )
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
