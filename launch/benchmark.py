r"""Measured speed of the jitted serving engine against the plain-Python reference.

  python -m jaxsys.launch.benchmark --suite=serving --out=workdir/bench/serving.json [--quick]
  python -m jaxsys.launch.benchmark --suite=uq|rl     (launch/bench_uq.py, launch/bench_rl.py)

Everything is measured side by side in one process on this machine, FCFS, Llama-3.1-8B/A100
roofline, Sarathi chunk 512:
(1) one run of 100k requests, jitted (compile time apart; macro-steps, and one iteration per
    step) vs the reference, on two workloads: chat-like lengths (serving.md 1.4 default) with
    Poisson arrivals at 4 req/s, and Azure code-trace lengths (prefill-heavy, 28 output tokens
    on average) at 2 req/s;
(2) a K-config vmapped sweep (load x max_seqs) on one device vs K sequential reference runs and
    K sequential jitted runs; then the same sweep with its config axis split over all devices.
    The host is split into one XLA CPU device per core (`--host_devices`), so the sharded
    figure uses every core while the reference and the one-device figures use about one;
(3) jitted time per request as the trace grows;
(4) each newer serving policy's main-knob sweep as one jitted vmap against the plain-Python
    reference on the same configurations (`policy_sweeps`): HyGen over its latency budget L
    (Azure-like online requests co-located with a summarisation pool), DiSCo over the budget
    (migration on), EchoLM's in-context cache over its size.
The process's XLA flags are recorded (`--tune_cpu`, on by default, adds lib/xla_flags.CPU_FLAGS).
Results: a JSON file (and a short table on stdout).
"""

from __future__ import annotations

import json
import os
import platform

import jax
import numpy as np
from absl import app, flags, logging

from jaxsys.lib import sharding, sim, stopwatch, xla_flags
from jaxsys.lib.writer import atomic_write
from jaxsys.scheduling import baselines
from jaxsys.systems import llm_serving as ls
from jaxsys.systems import llm_serving_reference as reference
from jaxsys.systems import timing, workloads

_SUITE = flags.DEFINE_enum("suite", "serving", ["serving", "uq", "rl"], "Which benchmark suite.")
_OUT = flags.DEFINE_string("out", None, "Where the JSON goes (default workdir/bench/SUITE.json).")
_QUICK = flags.DEFINE_bool("quick", False, "Small sizes (seconds), for tests.")
_TUNE_CPU = flags.DEFINE_bool("tune_cpu", True, "Add lib/xla_flags.CPU_FLAGS before JAX starts.")
_HOST_DEVICES = flags.DEFINE_integer(
  "host_devices",
  0,
  "XLA CPU devices to split the host into (0: one per core) for the sharded sweep.",
)
_AZURE = flags.DEFINE_string(
  "azure", "../shared/data/azure_llm_2023_code.csv", "Azure code trace (lengths)."
)

N_SLOTS = 128  # above the peak concurrency of every benchmark run (checked: no blocked admission)
SWEEP_SLOTS = 96  # the sweep's peak concurrency is 82 (checked: no lane blocks an admission)
MACRO_STEPS = 128
CHAT_RATE = 4.0  # req/s: queues start to grow near 6 req/s for these lengths on this engine
AZURE_RATE = 2.0


def chat_like(n, rate, seed):
  """n chat-like requests (prompt median 256, output median 200, lognormal), Poisson arrivals."""
  rng = np.random.default_rng(seed)
  prompt = workloads.lognormal_lengths(rng, n, *workloads.CHAT_PROMPT)
  out = workloads.lognormal_lengths(rng, n, *workloads.CHAT_OUTPUT)
  arrival = workloads.poisson_arrivals(rng, n, rate)
  return workloads.make_requests(rng, arrival, prompt, out, n_clients=4)


def azure_like(n, rate, seed, azure_path):
  """n requests with (prompt, output) pairs resampled from the Azure trace, Poisson arrivals."""
  rng = np.random.default_rng(seed)
  if os.path.exists(azure_path):
    _, prompt, out = workloads.load_azure_trace(azure_path)
  else:  # documented fallback: lognormal lengths shaped like the trace
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


def _jit_run(env, policy, params, wl):
  """(state, run wall, compile wall) of one jitted run; the first call compiles."""
  key = jax.random.key(0)
  run = lambda: sim.rollout(env, policy, params, (), key, wl)[0]  # noqa: E731
  _, first = stopwatch.timed(run)
  state, wall = stopwatch.timed(run)
  if int(state.admit_blocked):
    raise RuntimeError(f"{env.config.n_slots} slots were too few: raise N_SLOTS")
  return state, wall, max(first - wall, 0.0)


def single_run(envs, policy, coef, wl, with_reference=True):
  """One run per env in `envs` (name -> env), jitted, and optionally the reference."""
  params = _params(coef)
  res = {"requests": wl.n_total}
  finish = {}
  for name, env in envs.items():
    state, wall, compile_s = _jit_run(env, policy, params, wl)
    res[name] = {
      "macro_steps": env.config.macro_steps,
      "iterations": int(state.busy_steps),
      "wall_s": wall,
      "compile_s": compile_s,
      "requests_per_s": wl.n_total / wall,
      "us_per_request": wall / wl.n_total * 1e6,
    }
    finish[name] = np.asarray(state.outputs.finish_t)
  if with_reference:
    np_wl = jax.tree.map(np.asarray, wl)
    config = next(iter(envs.values())).config
    ref, ref_wall = stopwatch.timed(lambda: reference.simulate(np_wl, config, params, "fcfs"))
    assert ref["n_finished"] == wl.n_total
    res["reference"] = {
      "iterations": ref["steps"],
      "wall_s": ref_wall,
      "requests_per_s": wl.n_total / ref_wall,
      "us_per_iteration": ref_wall / ref["steps"] * 1e6,
    }
    for name in envs:
      res[name]["speedup_vs_reference"] = ref_wall / res[name]["wall_s"]
      diff = np.abs(finish[name] - ref["finish_t"])
      res[name]["max_finish_diff_s"] = float(np.max(diff))
  return res


def sweep_vs_sequential(env, policy, coef, wl, k):
  """K configurations (load 0.25-1.25x, max_seqs 32/128) as one vmapped sweep vs K runs.

  With more than one device the sweep is also timed with its config axis split over all of
  them (lib/sharding), and must equal the one-device sweep bit for bit.
  """
  scales = np.linspace(0.25, 1.25, k)
  params = [
    _params(coef, arrival_scale=float(s), max_seqs=int(32 + 96 * (i % 2)))
    for i, s in enumerate(scales)
  ]
  stacked = sim.stack(params)
  keys = jax.random.split(jax.random.key(0), k)

  def timed_sweep(mesh):
    run = lambda: sim.sweep(env, policy, stacked, (), keys, wl, mesh=mesh)[0]  # noqa: E731
    _, first = stopwatch.timed(run)
    state, wall = stopwatch.timed(run)
    return state, wall, max(first - wall, 0.0)

  state, sweep_wall, sweep_compile = timed_sweep(None)
  if int(np.max(state.admit_blocked)):
    raise RuntimeError(f"{env.config.n_slots} slots were too few: raise SWEEP_SLOTS")
  np_wl = jax.tree.map(np.asarray, wl)
  refs, ref_wall = stopwatch.timed(
    lambda: [reference.simulate(np_wl, env.config, p, "fcfs") for p in params]
  )
  ref_finish = np.stack([r["finish_t"] for r in refs])
  seq = lambda: [sim.rollout(env, policy, p, (), keys[0], wl)[0] for p in params]  # noqa: E731
  stopwatch.timed(lambda: sim.rollout(env, policy, params[0], (), keys[0], wl)[0])  # compile
  _, seq_wall = stopwatch.timed(seq)
  out = {
    "configs": k,
    "requests_per_config": wl.n_total,
    "slots": env.config.n_slots,
    "sweep_wall_s": sweep_wall,
    "sweep_compile_s": sweep_compile,
    "max_finish_diff_vs_reference_s": float(np.max(np.abs(state.outputs.finish_t - ref_finish))),
    "reference_sequential_wall_s": ref_wall,
    "jit_sequential_wall_s": seq_wall,
    "speedup_vs_reference": ref_wall / sweep_wall,
    "speedup_vs_jit_sequential": seq_wall / sweep_wall,
    "sweep_s_per_config": sweep_wall / k,
  }
  if jax.device_count() > 1 and k % jax.device_count() == 0:
    sharded, wall, compile_s = timed_sweep(sharding.make_mesh())
    jax.tree.map(np.testing.assert_array_equal, sharded.outputs, state.outputs)
    out["sharded"] = {
      "devices": jax.device_count(),
      "sweep_wall_s": wall,
      "sweep_compile_s": compile_s,
      "speedup_vs_reference": ref_wall / wall,
      "speedup_vs_one_device": sweep_wall / wall,
    }
  return out


def _timed_pair(jitted, reference):
  """Outputs and wall seconds of a jitted call (timed after a compiling call) and its twin."""
  _, first = stopwatch.timed(jitted)
  out, jit_s = stopwatch.timed(jitted)
  ref, ref_s = stopwatch.timed(reference)
  return (
    out,
    ref,
    {
      "jit_s": jit_s,
      "compile_s": first - jit_s,
      "reference_s": ref_s,
      "speedup_vs_reference": ref_s / jit_s,
    },
  )


def hygen_budget_sweep(quick: bool):
  """HyGen over K latency budgets: one jitted vmapped run vs K reference runs."""
  from jaxsys.scheduling import hygen

  rng = np.random.default_rng(0)
  n_online, n_offline = (60, 40) if quick else (400, 300)
  arrival = workloads.poisson_arrivals(rng, n_online, 2.0)
  online = workloads.make_requests(
    rng,
    arrival,
    workloads.lognormal_lengths(rng, n_online, 1469, 0.8, 7437),  # Azure code-trace medians
    workloads.lognormal_lengths(rng, n_online, 13, 1.2, 1899),
  )
  wl = workloads.co_locate(online, workloads.offline_pool(rng, n_offline, "summarisation"))
  coef = timing.get_preset("llama2_7b_a100")
  params = _params(coef).replace(
    num_blocks=timing.kv_blocks_capacity(coef, 80e9),
    offline_slots=16,
    offline_stop=float(arrival[-1]),
  )
  predictor = hygen.fit_predictor(jax.random.key(0), params, 20_000)
  budgets = hygen.budget_grid(predictor, params, 4 if quick else 16)
  lanes = [hygen.params(params, predictor, float(b)) for b in budgets]
  env = ls.make(ls.EnvConfig(n_slots=N_SLOTS, macro_steps=MACRO_STEPS))
  keys = jax.random.split(jax.random.key(0), len(lanes))
  policy = hygen.hygen()
  out, ref, timing_ = _timed_pair(
    lambda: (
      sim.sweep(env, policy, sim.stack([params] * len(lanes)), sim.stack(lanes), keys, wl)[
        0
      ].outputs.finish_t
    ),
    lambda: [
      reference.simulate(
        wl,
        env.config,
        params,
        "hygen",
        dict(coef=np.asarray(lane.coef), latency_budget=float(b)),
      )["finish_t"]
      for lane, b in zip(lanes, budgets, strict=True)
    ],
  )
  diff = max(float(np.nanmax(np.abs(np.asarray(out)[i] - r))) for i, r in enumerate(ref))
  return {
    "configs": len(lanes),
    "requests": wl.n_total,
    **timing_,
    "max_finish_diff_vs_reference_s": diff,
  }


def policy_sweeps(quick: bool):
  """HyGen's, DiSCo's and EchoLM's main-knob sweeps: one jitted vmap vs the reference."""
  from jaxsys.launch import disco as disco_run
  from jaxsys.launch import echolm
  from jaxsys.launch.configs.serving import disco_budget
  from jaxsys.scheduling import disco

  config = disco_budget.get_config("smoke" if quick else "quick")
  rng = np.random.default_rng(0)
  # NQ/GSM8K-like chat prompts (median 60 tokens) without loading the tokenizer
  lengths = workloads.lognormal_lengths(rng, 4000, 60, 0.5, 512)
  p = disco_run.env_params(config).replace(migrate=True)
  wl, calib = disco_run.workloads(config, lengths)
  name, params = disco_run.calibrate(p, calib, config.budgets, "device")
  out, ref, timing_ = _timed_pair(
    lambda: disco.sweep(p, wl, disco.POLICIES[name], params),
    lambda: disco_run.reference_sweep(p, wl, name, params),
  )
  diff = max(float(np.max(np.abs(np.asarray(out.ttft)[i] - r["ttft"]))) for i, r in enumerate(ref))
  result = {
    "hygen_budget": hygen_budget_sweep(quick),
    "disco_budget": {
      "configs": len(config.budgets),
      "requests": wl.n,
      **timing_,
      "max_ttft_diff_vs_reference_s": diff,
    },
  }
  sizes = (16, 64, 256) if quick else (64, 256, 1024, 4096)
  n = 400 if quick else 4000
  cc_config, stacked, plist, stream, cache0 = echolm.bench_setup(
    n_requests=n, capacity=max(sizes), dim=64, sizes=sizes
  )
  (caches, outs), refs, timing_ = _timed_pair(
    lambda: echolm.cache_sweep_jitted(cc_config, stacked, stream, cache0),
    lambda: echolm.cache_sweep_reference(cc_config, plist, stream),
  )
  same = all(
    np.array_equal(np.asarray(outs.chosen)[i], [r["chosen"] for r in rows])
    for i, (_, rows) in enumerate(refs)
  )
  result["echolm_cache_size"] = {
    "configs": len(sizes),
    "requests": n,
    "cache_sizes": list(sizes),
    **timing_,
    "chosen_examples_equal_reference": bool(same),
  }
  return result


def _machine():
  return {
    "platform": platform.platform(),
    "cpus": os.cpu_count(),
    "devices": [str(d) for d in jax.devices()],
    "jax": jax.__version__,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def serving(quick: bool, azure_path: str):
  jax.config.update("jax_enable_x64", True)
  coef = timing.get_preset("llama31_8b_a100")
  macro = ls.make(ls.EnvConfig(n_slots=N_SLOTS, macro_steps=MACRO_STEPS))
  per_iteration = ls.make(ls.EnvConfig(n_slots=N_SLOTS, macro_steps=1))
  policy = baselines.fcfs()
  sizes = (1_000, 4_000, 16_000) if quick else (10_000, 100_000, 1_000_000)
  result = {
    "setup": f"FCFS, Llama-3.1-8B/A100 roofline, Sarathi chunk 512, max_seqs 128, {N_SLOTS} "
    f"slots, macro-steps of up to {MACRO_STEPS} iterations; chat-like lengths at {CHAT_RATE} "
    f"req/s, Azure code-trace lengths at {AZURE_RATE} req/s (Poisson)",
  }
  big = sizes[1]
  logging.info("single runs, %d requests", big)
  both = {"jit_macro": macro, "jit_per_iteration": per_iteration}
  result["single_run"] = {
    "chat": single_run(both, policy, coef, chat_like(big, CHAT_RATE, 0)),
    "azure": single_run(
      {"jit_macro": macro}, policy, coef, azure_like(big, AZURE_RATE, 0, azure_path)
    ),
  }
  scaling = []
  for n in sizes:
    r = single_run({"jit_macro": macro}, policy, coef, chat_like(n, CHAT_RATE, 1), False)
    scaling.append({"requests": n, **{k: r["jit_macro"][k] for k in ("wall_s", "us_per_request")}})
    logging.info("scaling %s", scaling[-1])
  per_req = [s["us_per_request"] for s in scaling]
  result["scaling"] = {"runs": scaling, "max_over_min_us_per_request": max(per_req) / min(per_req)}
  small = chat_like(500 if quick else 2_000, CHAT_RATE, 2)
  sweep_env = ls.make(ls.EnvConfig(n_slots=SWEEP_SLOTS, macro_steps=MACRO_STEPS))
  result["sweep"] = [sweep_vs_sequential(sweep_env, policy, coef, small, k) for k in (8, 64)]
  result["policy_sweeps"] = policy_sweeps(quick)
  return result


def serving_summary(result):
  lines = []
  for name, run in result["single_run"].items():
    ref = run["reference"]
    for mode in ("jit_macro", "jit_per_iteration"):
      if mode in run:
        j = run[mode]
        lines.append(
          f"{name} single run ({run['requests']} requests): {mode} {j['wall_s']:.1f} s "
          f"(+{j['compile_s']:.1f} s compile), reference {ref['wall_s']:.1f} s, "
          f"speedup {j['speedup_vs_reference']:.2f}x"
        )
  for sw in result["sweep"]:
    lines.append(
      f"sweep K={sw['configs']}: {sw['sweep_wall_s']:.1f} s on one device vs reference "
      f"{sw['reference_sequential_wall_s']:.1f} s ({sw['speedup_vs_reference']:.1f}x), "
      f"jit sequential {sw['jit_sequential_wall_s']:.1f} s"
    )
    if "sharded" in sw:
      sh = sw["sharded"]
      lines.append(
        f"  sharded over {sh['devices']} CPU devices: {sh['sweep_wall_s']:.1f} s "
        f"({sh['speedup_vs_reference']:.1f}x the one-core reference)"
      )
  ratio = result["scaling"]["max_over_min_us_per_request"]
  lines.append(f"time per request across sizes: max/min {ratio:.2f}")
  for name, sw in result.get("policy_sweeps", {}).items():
    lines.append(
      f"{name} sweep ({sw['configs']} configs x {sw['requests']} requests): jitted "
      f"{sw['jit_s']:.2f} s (+{sw['compile_s']:.1f} s compile), reference "
      f"{sw['reference_s']:.2f} s, {sw['speedup_vs_reference']:.1f}x"
    )
  return lines


def main(argv):
  del argv
  # Before the first JAX computation starts the backend.
  if _TUNE_CPU.value:
    xla_flags.add()
  host_devices = _HOST_DEVICES.value or os.cpu_count() or 1
  xla_flags.add(f"--xla_force_host_platform_device_count={host_devices}")
  if _SUITE.value == "serving":
    result = serving(_QUICK.value, _AZURE.value)
    lines = serving_summary(result)
  else:  # the other suites live in their own modules
    import importlib

    suite = importlib.import_module(f"jaxsys.launch.bench_{_SUITE.value}")
    result = suite.run(_QUICK.value)
    lines = suite.summary(result)
  result["machine"] = _machine()
  out = _OUT.value or f"workdir/bench/{_SUITE.value}.json"
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  atomic_write(out, json.dumps(result, indent=1))
  print("\n".join([*lines, f"wrote {out}"]))


if __name__ == "__main__":
  app.run(main)
