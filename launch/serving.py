"""The Tempo reproduction: every serving policy across load, one vmapped sweep per policy.

`run(config, workdir)` is importable (Colab, tests); `launch/simulate.py` is its absl main and
`launch/reproduce.py` calls it for `make demo`'s report. Config: launch/configs/serving/.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import logging

from jaxsys import scheduling
from jaxsys.lib import plots, sim
from jaxsys.lib.writer import MetricWriter
from jaxsys.scheduling import common
from jaxsys.systems import llm_serving as ls
from jaxsys.systems import serving_metrics, timing, workloads

CLASSES = ("latency", "deadline", "collective")


def _workload(config, seed):
  rng = np.random.default_rng(seed)
  kw = {}
  if config.arrivals == "azure":
    kw = dict(arrivals="azure", azure_path=config.azure_path)
  return workloads.tempo_mix(
    rng, config.n_requests, rate=config.base_rate, n_clients=config.n_clients, **kw
  )


def _env_params(config, scale, coef, budget=None):
  return ls.EnvParams(
    token_budget=budget or config.token_budget,
    max_seqs=config.max_seqs,
    max_resident=config.max_resident or ls.NO_LIMIT,
    num_blocks=timing.kv_blocks_capacity(coef, 80e9),
    arrival_scale=scale,
    alpha=config.alpha,
    time_coef=coef,
  )


def _sweep(config, name, wls, scales, bound, coef):
  """One vmapped run of policy `name` over lanes (workload i, arrival scale i)."""
  first = wls[0]
  policy, pparams, chunked = scheduling.build(
    name,
    bound=bound,
    true_lengths=first.out_len,
    n_jobs=first.n_jobs,
    n_clients=config.n_clients,
    batch=config.max_seqs,
  )
  lanes = len(scales)
  if name.startswith("tempo_oracle") or name.startswith("tempo_noisy"):
    # given lengths differ per lane's workload: rebuild per lane
    pparams = sim.stack(
      [
        scheduling.build(name, true_lengths=w.out_len, batch=config.max_seqs, seed=i)[1]
        for i, w in enumerate(wls)
      ]
    )
  else:
    pparams = sim.stack([pparams] * lanes)
  budget = config.vllm_token_budget if not chunked else None
  env = ls.make(
    ls.EnvConfig(n_slots=config.n_slots, admit_max=config.admit_max, chunked_prefill=chunked)
  )
  params = sim.stack([_env_params(config, s, coef, budget) for s in scales])
  keys = jax.random.split(jax.random.key(0), lanes)
  state, _ = sim.sweep(
    env,
    policy,
    params,
    pparams,
    keys,
    sim.stack(wls),
    workload_axis=0,
    chunk_steps=config.chunk_steps,
  )
  return jax.device_get(state)


def _capacity(config, wl, bound, coef):
  """Sarathi's saturation rate: the most requests/s it completes at any offered load."""
  scales = list(config.capacity_scales)
  state = _sweep(config, "sarathi", [wl] * len(scales), scales, bound, coef)
  rates = []
  for i, s in enumerate(scales):
    m = serving_metrics.summarize(wl, serving_metrics.lane(state.outputs, i), s, config.alpha)
    rates.append(m["throughput_rps"])
  return max(rates), dict(zip([float(s) for s in scales], rates, strict=True))


def run(config, workdir):
  """Runs the load sweep; writes metrics.jsonl, results.json, PNGs; returns the results."""
  os.makedirs(workdir, exist_ok=True)
  writer = MetricWriter(workdir)
  writer.write_config(config)
  start = time.perf_counter()
  coef = timing.get_preset(config.model)
  calib = _workload(config, 10_000)
  edges, table = workloads.length_bound_table(calib.prompt_len, calib.out_len)
  bound = common.LengthBound.from_table(edges, table)
  wls = [_workload(config, seed) for seed in range(config.seeds)]
  base_rate = config.n_requests / float(np.ptp(wls[0].arrival))
  lam_star, cap_curve = _capacity(config, wls[0], bound, coef)
  logging.info("sarathi saturation rate %.2f req/s (curve %s)", lam_star, cap_curve)

  loads = list(config.loads)
  lanes = [(rho, seed) for rho in loads for seed in range(config.seeds)]
  scales = [rho * lam_star / base_rate for rho, _ in lanes]
  lane_wls = [wls[seed] for _, seed in lanes]
  results = {}
  outputs_at = {}
  for name in tuple(config.policies) + tuple(config.ablations):
    is_ablation = name in config.ablations
    sel = [i for i, (rho, _) in enumerate(lanes) if not is_ablation or rho == config.ablation_load]
    t0 = time.perf_counter()
    state = _sweep(config, name, [lane_wls[i] for i in sel], [scales[i] for i in sel], bound, coef)
    rows = []
    for j, i in enumerate(sel):
      rho, seed = lanes[i]
      out = serving_metrics.lane(state.outputs, j)
      m = serving_metrics.summarize(lane_wls[i], out, scales[i], config.alpha)
      m.update(
        policy=name,
        rho=rho,
        seed=seed,
        admit_blocked=int(np.asarray(state.admit_blocked)[j]),
        steps=int(np.asarray(state.step)[j]),
      )
      rows.append(m)
      writer.write_scalars(len(results), m)
      if rho == config.ablation_load and seed == 0:
        outputs_at[name] = (out, lane_wls[i])
    results[name] = rows
    logging.info("%s: %d lanes in %.1f s", name, len(sel), time.perf_counter() - t0)

  summary = _summarize(results, loads)
  summary["saturation_rps"] = lam_star
  summary["capacity_curve"] = cap_curve
  summary["wall_s"] = time.perf_counter() - start
  writer.write_json("results.json", {"summary": summary, "rows": results})
  summary["figures"] = _plots(workdir, config, summary, outputs_at)
  writer.close()
  return summary


def _mean_over_seeds(rows, rho, key):
  vals = [r[key] for r in rows if r["rho"] == rho and key in r]
  return float(np.mean(vals)) if vals else float("nan")


def _summarize(results, loads):
  keys = ("service_gain", "slo_token_goodput", "goodput_rps", "throughput_rps", "slo_attainment")
  keys += tuple(f"{c}_slo_attainment" for c in CLASSES) + ("latency_ttft_p99",)
  table = {
    name: {key: [_mean_over_seeds(rows, rho, key) for rho in loads] for key in keys}
    for name, rows in results.items()
  }
  return {"loads": loads, "table": table}


def _plots(workdir, config, summary, outputs_at):
  loads, table = summary["loads"], summary["table"]
  main = [p for p in config.policies if p in table]
  figs = {}
  figs["gain"] = plots.line_plot(
    os.path.join(workdir, "tempo_gain_vs_load.png"),
    loads,
    {p: table[p]["service_gain"] for p in main},
    xlabel="load rho (x Sarathi saturation)",
    ylabel="service gain",
    title="Service gain vs load",
    logy=True,
  )
  figs["token_goodput"] = plots.line_plot(
    os.path.join(workdir, "tempo_token_goodput_vs_load.png"),
    loads,
    {p: table[p]["slo_token_goodput"] for p in main},
    xlabel="load rho",
    ylabel="SLO token goodput (weighted tokens/s)",
    title="SLO token goodput vs load",
    logy=True,
  )
  for c in CLASSES:
    figs[f"attain_{c}"] = plots.line_plot(
      os.path.join(workdir, f"tempo_slo_{c}_vs_load.png"),
      loads,
      {p: table[p][f"{c}_slo_attainment"] for p in main},
      xlabel="load rho",
      ylabel="fraction meeting SLO",
      title=f"{c} requests meeting their SLO",
    )
  samples = {}
  for p, (out, wl) in outputs_at.items():
    if p in main:
      m = np.asarray(wl.cls) == 0
      samples[p] = np.asarray(out.ttft)[m]
  if samples:
    figs["ttft_cdf"] = plots.cdf_plot(
      os.path.join(workdir, "tempo_ttft_cdf.png"),
      samples,
      xlabel="TTFT of latency requests (s)",
      title=f"TTFT CDF at rho = {config.ablation_load}",
      logx=True,
    )
  abl = [p for p in ("tempo_oracle", "tempo") + tuple(config.ablations) if p in table]
  if abl:
    i = loads.index(config.ablation_load)
    figs["ablation"] = plots.bar_plot(
      os.path.join(workdir, "tempo_ablation.png"),
      abl,
      [table[p]["service_gain"][i] for p in abl],
      ylabel="service gain",
      title=f"Tempo ablations at rho = {config.ablation_load}",
    )
  return figs


def report_markdown(summary, config) -> str:
  """The report section for reproduce.py."""
  loads, table = summary["loads"], summary["table"]
  lines = [
    "## Tempo: SLO service gain across load",
    "",
    f"Workload: {config.n_requests} requests per run (chat : deadline : agentic DAG), "
    f"{config.seeds} seeds, {config.model} roofline, batch {config.max_seqs}, chunk "
    f"{config.token_budget}, alpha {config.alpha:g}. Sarathi saturates at "
    f"{summary['saturation_rps']:.2f} req/s; rho is the offered rate over that.",
    "",
    "Service gain (mean over seeds):",
    "",
    "| policy | " + " | ".join(f"rho={r:g}" for r in loads) + " |",
    "|---|" + "---|" * len(loads),
  ]
  for name, row in table.items():
    vals = row["service_gain"]
    lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in vals) + " |")
  lines += [
    "",
    "SLO token goodput (weighted tokens/s):",
    "",
    "| policy | " + " | ".join(f"rho={r:g}" for r in loads) + " |",
    "|---|" + "---|" * len(loads),
  ]
  for name, row in table.items():
    lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in row["slo_token_goodput"]) + " |")
  lines += ["", *_ordering_notes(table, loads)]
  for key, fig in summary.get("figures", {}).items():
    lines.append(f"\n![{key}]({os.path.basename(fig)})")
  return "\n".join(lines) + "\n"


def _fmt(v):
  return "-" if not np.isfinite(v) else f"{v:,.0f}"


def _ordering_notes(table, loads):
  """What the paper expects against what came out, computed from this run's table."""
  lines = [
    "Paper (serving.md 6): equal gain at rho = 0.5; from rho ~ 1 Tempo above every baseline, "
    "ratio over FCFS rising with load, Tempo within ~10% of its oracle.",
    "",
    "| rho | best policy by gain | tempo / sarathi | tempo / oracle | tempo rank |",
    "|---|---|---|---|---|",
  ]
  main = [p for p in table if not p.startswith("tempo_") or p == "tempo_oracle"]
  for i, rho in enumerate(loads):
    gains = {
      p: table[p]["service_gain"][i] for p in main if np.isfinite(table[p]["service_gain"][i])
    }
    if "tempo" not in gains or "sarathi" not in gains:
      continue
    order = sorted(gains, key=gains.get, reverse=True)
    oracle = gains.get("tempo_oracle", float("nan"))
    lines.append(
      f"| {rho:g} | {order[0]} | {gains['tempo'] / gains['sarathi']:.3f} | "
      f"{gains['tempo'] / oracle:.3f} | {order.index('tempo') + 1} of {len(order)} |"
    )
  att = {p: table[p]["latency_slo_attainment"][0] for p in ("tempo", "sarathi") if p in table}
  lines += [
    "",
    "Where this differs from the paper, what we know so far (issue #2 stays open on it): the "
    "soft gain and the SLO token goodput credit a stream by its cumulative pace, so Tempo lets "
    "prefills overtake on-pace decodes; request-level attainment, which needs every gap under "
    "the TBT SLO, then drops for Tempo even at light load (chat requests meeting their SLOs at "
    f"rho = {loads[0]:g}: tempo {att.get('tempo', float('nan')):.3f}, sarathi "
    f"{att.get('sarathi', float('nan')):.3f}). At overload EDF/SRTF can lead on gain: the "
    "conservative P95 bound with alpha = 100 scores a request as lost as soon as its predicted "
    "finish passes its deadline, so Tempo gives up on requests EDF still saves.",
  ]
  return lines
