"""The HyGen reproduction: online/offline co-location under an SLO-profiled latency budget.

`run(config, workdir) -> summary` is importable (tests, reproduce.py); `report_markdown(summary,
config)` renders its section. Config: launch/configs/serving/hygen_colocation.py. Every
comparison is one vmapped sweep (lib/sim.sweep): the arrival-scale search, the budget profile
(32 values of L + the online-only lane), the HyGen* cap profile and the final four-policy run
on fresh slices of the trace. The profiles run on several trace slices at once (stacked
workloads, one lane set per slice) and call a value feasible only when it holds on every one.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxsys.lib import plots, sim
from jaxsys.lib.writer import MetricWriter
from jaxsys.scheduling import hygen
from jaxsys.systems import llm_serving as ls
from jaxsys.systems import serving_metrics, timing, workloads

POLICIES = ("sarathi", "sarathi++", "hygen*", "hygen")


def _online(config, seed):
  """Rows of the Azure code trace: slice `seed` of n_online requests, from t = 0.

  `config.online = "synthetic"` draws Azure-like requests instead (for runs without
  ../shared/data): Gamma arrivals at the trace's 2.57 req/s with cv 4, lognormal lengths at
  the trace's medians (prompt 1,469, output 13 tokens) [R].
  """
  if config.online == "synthetic":
    rng = np.random.default_rng(500 + seed)
    n = config.n_online
    times = workloads.gamma_arrivals(rng, n, 2.57, 4.0)
    prompt = workloads.lognormal_lengths(rng, n, 1469, 0.8, 7437)
    out = workloads.lognormal_lengths(rng, n, 13, 1.2, 1899)
    return workloads.make_requests(
      None, times, prompt, out, slo_ttft=config.slo_ttft, slo_tbt=config.slo_tbt
    )
  if config.online != "azure":
    raise ValueError(f"config.online={config.online!r}: use 'azure' or 'synthetic'")
  start = config.azure_start + seed * config.n_online
  arrival, prompt, out = workloads.load_azure_trace(config.azure_path, start + config.n_online)
  if arrival.shape[0] < start + config.n_online:
    raise ValueError(
      f"hygen: the trace has {arrival.shape[0]} rows, need {start + config.n_online}"
    )
  sl = slice(start, start + config.n_online)
  times = arrival[sl] - arrival[start]
  times = np.maximum(times, 1e-6)  # the first row arrives just after t0
  return workloads.make_requests(
    None, times, prompt[sl], out[sl], slo_ttft=config.slo_ttft, slo_tbt=config.slo_tbt
  )


def _workload(config, seed, online):
  """The online rows followed by a fresh summarisation-like offline pool."""
  rng = np.random.default_rng(1000 + seed)
  return workloads.co_locate(online, workloads.offline_pool(rng, config.n_summary))


def _base_params(config, coef, num_blocks):
  return ls.EnvParams(
    token_budget=config.token_budget,
    max_seqs=config.max_seqs,
    num_blocks=num_blocks,
    noise_sigma=config.noise_sigma,
    offline_slots=config.offline_slots,
    time_coef=coef,
  )


def _sweep(env, lanes_env, lanes_pp, wl, config, workload_axis=None):
  """HyGen over lanes of env params and policy params (one workload, or stacked ones with
  workload_axis=0); the final states on the host."""
  keys = jnp.stack([jax.random.key(0)] * len(lanes_env))
  state, _ = sim.sweep(
    env,
    hygen.hygen(),
    sim.stack(lanes_env),
    sim.stack(lanes_pp),
    keys,
    wl,
    workload_axis=workload_axis,
    chunk_steps=config.chunk_steps,
  )
  return jax.device_get(state)


def _arrival_scale(env, config, online, params, coef_fit):
  """The arrival scale giving `target_util` busy time per second of arrival window to the
  online-only engine (one sweep over a geometric grid, interpolated in log scale)."""
  scales = np.geomspace(0.05, 8.0, 12)
  lanes = [params.replace(arrival_scale=float(s), offline_slots=0) for s in scales]
  pp = [hygen.params(params, coef_fit)] * len(lanes)
  state = _sweep(env, lanes, pp, online, config)
  # busy time over the arrival window: the engine's load (above 1 when it cannot keep up)
  util = np.asarray(state.busy_time) / (float(online.arrival[-1]) / scales)
  target = config.target_util
  if target <= util[0]:
    scale = scales[0]
  elif target >= util[-1]:
    scale = scales[-1]
  else:
    scale = float(np.exp(np.interp(target, util, np.log(scales))))
  return float(scale), dict(zip(scales.tolist(), util.tolist(), strict=True))


def run(config, workdir):
  """Runs the HyGen reproduction; writes metrics.jsonl, results.json, PNGs; returns the summary."""
  os.makedirs(workdir, exist_ok=True)
  writer = MetricWriter(workdir)
  writer.write_config(config)
  start = time.perf_counter()
  true_coef = timing.get_preset(config.model)
  num_blocks = timing.kv_blocks_capacity(true_coef, 80e9)
  env = ls.make(ls.EnvConfig(n_slots=config.n_slots, admit_max=config.admit_max, macro_steps=16))
  base = _base_params(config, true_coef, num_blocks)

  # 1. predictor: fitted on the env's own time model with 2% noise; held-out MAPE
  key = jax.random.key(0)
  coef = hygen.fit_predictor(key, base, config.predictor_batches, noise_sigma=config.noise_sigma)
  batches = hygen.draw_batches(key, base, config.predictor_batches, noise_sigma=config.noise_sigma)
  _, held = hygen.split_holdout(batches)
  summary = {"mape_heldout": hygen.mape(coef, held), "num_blocks": num_blocks}
  writer.write_scalars(0, {"mape_heldout": summary["mape_heldout"]})

  # 2. load: scale each slice's online arrivals to the target busy fraction (the trace is
  # bursty, cv ~ 13: each slice gets its own scale)
  prof_params, prof_wls, scales = [], [], []
  for seed in config.profile_seeds:
    online = _online(config, seed)
    scale, util = _arrival_scale(env, config, online, base, coef)
    scales.append(scale)
    window = float(online.arrival[-1]) / scale
    prof_params.append(base.replace(arrival_scale=scale, offline_stop=window))
    prof_wls.append(_workload(config, seed, online))
  summary.update(arrival_scale=scales[0], profile_arrival_scales=scales, util_curve=util)

  # 3. profiles on every profiling slice at once: L for HyGen, the start-rate cap for HyGen*
  grid = hygen.budget_grid(coef, base, config.grid)
  prof = hygen.profile(
    env, prof_params, prof_wls, coef, grid, tau=config.tau, chunk_steps=config.chunk_steps
  )
  # The cap grid spans fractions of the offline start rate at the top budget (about Sarathi++'s:
  # nothing holds offline back there), so that its lower part actually constrains [R].
  free_rate = float(np.max(prof["offline_starts_s"][:, -1]))
  caps = free_rate * np.geomspace(*config.cap_range, config.grid)
  cap_prof = hygen.profile(
    env,
    prof_params,
    prof_wls,
    coef,
    caps,
    kind="cap",
    tau=config.tau,
    chunk_steps=config.chunk_steps,
  )
  feasible_l = {float(t): hygen.largest_feasible(prof, t) for t in config.taus}
  summary.update(
    grid=grid.tolist(),
    caps=caps.tolist(),
    free_start_rate=free_rate,
    profile_ttft_ratio=prof["ttft_ratio"].tolist(),
    profile_tbt_ratio=prof["tbt_ratio"].tolist(),
    profile_offline_tokens_s=prof["offline_tokens_s"].tolist(),
    cap_profile_offline_tokens_s=cap_prof["offline_tokens_s"].tolist(),
    cap_profile_ttft_ratio=cap_prof["ttft_ratio"].tolist(),
    cap_profile_tbt_ratio=cap_prof["tbt_ratio"].tolist(),
    profile_base=prof["base"],
    budget=prof["best"],
    budget_feasible=prof["feasible_any"],
    feasible_budget_by_tau=feasible_l,
    cap=cap_prof["best"],
    cap_feasible=cap_prof["feasible_any"],
  )
  logging.info("profiled L = %.4f s, HyGen* cap = %.3f /s", prof["best"], cap_prof["best"])

  # 4. evaluation on fresh slices of the trace (none of the profiling ones), each with a fresh
  # pool and its own arrival scale: the four policies on every slice in one stacked sweep
  lanes_env, lanes_pp, lanes_wl, evals = [], [], [], []
  for seed in config.fresh_seeds:
    fresh_online = _online(config, seed)
    fresh = _workload(config, seed, fresh_online)
    scale, _ = _arrival_scale(env, config, fresh_online, base, coef)
    window = float(fresh_online.arrival[-1]) / scale
    params = base.replace(offline_stop=window, arrival_scale=scale)
    lanes_env += [params.replace(offline_slots=0), params, params, params]
    lanes_pp += [
      hygen.params(params, coef),
      hygen.params(params, coef),
      hygen.params(params, coef, rate_cap=cap_prof["best"]),
      hygen.params(params, coef, prof["best"]),
    ]
    lanes_wl += [fresh] * len(POLICIES)
    evals.append((seed, fresh_online, fresh, scale, window))
  state = _sweep(env, lanes_env, lanes_pp, sim.stack(lanes_wl), config, workload_axis=0)
  slices = []
  for s_i, (seed, _, fresh, scale, window) in enumerate(evals):
    rows = {}
    for p_i, name in enumerate(POLICIES):
      i = s_i * len(POLICIES) + p_i
      out = serving_metrics.lane(state.outputs, i)
      m = serving_metrics.hybrid_summary(fresh, out, window, np.asarray(state.offline_tokens)[i])
      m["steps"] = int(np.asarray(state.step)[i])
      rows[name] = m
    for m in rows.values():
      m["ttft_p99_ratio"] = m["ttft_p99"] / rows["sarathi"]["ttft_p99"]
      m["tbt_mean_ratio"] = m["tbt_mean"] / rows["sarathi"]["tbt_mean"]
      m["within_tau"] = bool(
        m["ttft_p99_ratio"] <= 1 + config.tau and m["tbt_mean_ratio"] <= 1 + config.tau
      )
    for name, m in rows.items():
      writer.write_scalars(1 + s_i, {"slice": seed, "policy": name, **m})
    slices.append({"seed": seed, "arrival_scale": scale, "window_s": window, "rows": rows})
  summary.update(slices=slices, rows=_across_slices(slices))
  # the first fresh slice carries the single-slice views (timeline, figures)
  seed, fresh_online, fresh, scale, window = evals[0]
  summary.update(fresh_arrival_scale=scale, window_s=window)

  # 5. offline tokens/s over time against the online rate (HyGen lane)
  hy = serving_metrics.lane(state.outputs, POLICIES.index("hygen"))  # first slice's lanes
  bins, off_rate = serving_metrics.tokens_over_time(fresh, hy, config.bin_s, window, True)
  arr = fresh_online.arrival / scale
  online_rps = np.histogram(arr, bins=np.append(bins, bins[-1] + config.bin_s))[0] / config.bin_s
  summary["timeline"] = {
    "bins": bins.tolist(),
    "offline_tokens_s": off_rate.tolist(),
    "online_rps": online_rps.tolist(),
    "corr": float(np.corrcoef(off_rate, online_rps)[0, 1]) if len(bins) > 2 else float("nan"),
  }
  # 6. PSM vs FCFS offline order on the MMLU-like prefix pool (HyGen at the profiled L)
  if config.n_mmlu > 0:
    summary["psm"] = _psm_experiment(config, base, coef, prof["best"], evals[0])
  summary["wall_s"] = time.perf_counter() - start
  writer.write_json("results.json", summary)
  summary["figures"] = _plots(workdir, config, summary)
  writer.close()
  return summary


PSM_LANES = ("psm", "fcfs", "no_sharing")


def _psm_experiment(config, base, coef, budget, fresh):
  """HyGen at L on a fresh slice with the MMLU-like pool as the offline stream, in PSM order and
  in the pool's own (random) order with shared-prefix caching, and without sharing; each at
  each `config.psm_hbm_gb` of GPU memory (less room for cached prefixes). One stacked sweep."""
  seed, online, _, scale, window = fresh
  pool = workloads.offline_pool(np.random.default_rng(2000 + seed), config.n_mmlu, "mmlu")
  none = {**pool, "prefix_id": np.full(config.n_mmlu, -1), "prefix_len": np.zeros(config.n_mmlu)}
  wls = {
    "psm": workloads.co_locate(online, pool, order=hygen.psm_order(pool["prefix_id"])),
    "fcfs": workloads.co_locate(online, pool),
    "no_sharing": workloads.co_locate(online, none),
  }
  env = ls.make(
    ls.EnvConfig(
      n_slots=config.n_slots,
      admit_max=config.admit_max,
      macro_steps=16,
      n_prefixes=workloads.MMLU_GROUPS,
    )
  )
  lanes = []
  for hbm in config.psm_hbm_gb:
    blocks = timing.kv_blocks_capacity(base.time_coef, hbm * 1e9)
    p = base.replace(num_blocks=blocks, arrival_scale=scale, offline_stop=window)
    lanes += [(hbm, name, p) for name in PSM_LANES]
  state = _sweep(
    env,
    [p for _, _, p in lanes],
    [hygen.params(p, coef, budget) for _, _, p in lanes],
    sim.stack([wls[name] for _, name, _ in lanes]),
    config,
    workload_axis=0,
  )
  rows = []
  for i, (hbm, name, p) in enumerate(lanes):
    out = serving_metrics.lane(state.outputs, i)
    m = serving_metrics.hybrid_summary(wls[name], out, window)  # useful tokens of finished rows
    finished = int(np.sum((np.asarray(wls[name].cls) == ls.OFFLINE) & np.isfinite(out.finish_t)))
    rows.append(
      {
        "hbm_gb": hbm,
        "order": name,
        "num_blocks": int(p.num_blocks),
        "offline_rps": m["offline_rps"],
        "offline_tokens_s": m["offline_tokens_s"],
        "ttft_p99": m["ttft_p99"],
        "tbt_mean": m["tbt_mean"],
        "prefix_hits": int(np.asarray(state.prefix_hits)[i]),
        "prefix_tokens_saved": float(np.asarray(state.prefix_tokens_saved)[i]),
        "prefix_evictions": int(np.asarray(state.prefix_evictions)[i]),
        "pool_exhausted": finished >= config.n_mmlu,
      }
    )
  return {"slice": seed, "window_s": window, "budget": budget, "rows": rows}


def _across_slices(slices):
  """Per policy over the fresh slices: mean throughputs, worst latency ratios, slices in tau."""
  agg = {}
  for name in POLICIES:
    ms = [sl["rows"][name] for sl in slices]
    mean = lambda k: float(np.mean([m[k] for m in ms]))  # noqa: E731, B023
    worst = lambda k: float(np.max([m[k] for m in ms]))  # noqa: E731, B023
    agg[name] = {
      "offline_tokens_s": mean("offline_tokens_s"),
      "overall_tokens_s": mean("overall_tokens_s"),
      "ttft_p99": worst("ttft_p99"),
      "tbt_mean": worst("tbt_mean"),
      "ttft_p99_ratio": worst("ttft_p99_ratio"),
      "tbt_mean_ratio": worst("tbt_mean_ratio"),
      "n_within_tau": int(sum(m["within_tau"] for m in ms)),
      "within_tau": all(m["within_tau"] for m in ms),
    }
  return agg


def _plots(workdir, config, summary):
  figs = {}
  taus = sorted(summary["feasible_budget_by_tau"])
  figs["budget_vs_tau"] = plots.line_plot(
    os.path.join(workdir, "hygen_budget_vs_tau.png"),
    [100 * t for t in taus],
    {"largest feasible L (ms)": [1e3 * summary["feasible_budget_by_tau"][t] for t in taus]},
    xlabel="tolerance tau (%)",
    ylabel="L (ms)",
    title="Feasible latency budget vs tolerance",
  )
  ttft = np.max(np.asarray(summary["profile_ttft_ratio"]), axis=0)
  tbt = np.max(np.asarray(summary["profile_tbt_ratio"]), axis=0)
  figs["profile"] = plots.line_plot(
    os.path.join(workdir, "hygen_profile.png"),
    [1e3 * g for g in summary["grid"]],
    {
      "online P99 TTFT / online-only (worst slice)": ttft,
      "online mean TBT / online-only (worst slice)": tbt,
    },
    xlabel="latency budget L (ms)",
    ylabel="ratio to online-only",
    title="SLO-aware profile (one vmapped sweep over the slices)",
    logx=True,
  )
  figs["frontier"] = plots.custom_plot(
    os.path.join(workdir, "hygen_frontier.png"), lambda ax: _frontier(ax, summary, config)
  )
  rows = summary["rows"]
  figs["throughput"] = plots.bar_plot(
    os.path.join(workdir, "hygen_offline_throughput.png"),
    list(POLICIES),
    [rows[p]["offline_tokens_s"] for p in POLICIES],
    ylabel="offline tokens/s",
    title="Offline throughput, mean over the fresh slices",
  )
  tl = summary["timeline"]
  figs["timeline"] = plots.custom_plot(
    os.path.join(workdir, "hygen_offline_over_time.png"),
    lambda ax: _timeline(ax, tl, config),
  )
  return figs


def _frontier(ax, summary, config):
  """Offline throughput against the worst online latency ratio over the profiling slices, for
  HyGen's L grid and HyGen*'s cap grid (the profile lanes), and the fresh-slice policies."""
  for name, tok, ttft, tbt, marker in (
    ("HyGen (L grid)", "profile_offline_tokens_s", "profile_ttft_ratio", "profile_tbt_ratio", "o-"),
    (
      "HyGen* (cap grid)",
      "cap_profile_offline_tokens_s",
      "cap_profile_ttft_ratio",
      "cap_profile_tbt_ratio",
      "s-",
    ),
  ):
    worst = np.maximum(np.max(summary[ttft], axis=0), np.max(summary[tbt], axis=0))
    ax.plot(worst, np.mean(summary[tok], axis=0), marker, label=f"{name}, profiling slices")
  for p in POLICIES:
    m = summary["rows"][p]
    ratio = max(m["ttft_p99_ratio"], m["tbt_mean_ratio"])
    ax.plot([ratio], [m["offline_tokens_s"]], "*", markersize=11, label=f"{p}, fresh slices")
  ax.axvline(1 + config.tau, color="grey", linestyle=":", label=f"tolerance {config.tau:.0%}")
  ax.set_xlabel("worst of P99 TTFT and mean TBT ratio to online-only (worst slice)")
  ax.set_ylabel("offline tokens/s (mean over slices)")
  ax.set_title("Offline throughput vs online latency")
  ax.legend(fontsize=7)


def _timeline(ax, tl, config):
  ax.plot(tl["bins"], tl["offline_tokens_s"], "o-", label="HyGen offline tokens/s")
  ax.set_xlabel(f"time (s, {config.bin_s:g} s bins)")
  ax.set_ylabel("offline tokens/s")
  twin = ax.twinx()
  twin.plot(tl["bins"], tl["online_rps"], "s--", color="tab:red", label="online req/s")
  twin.set_ylabel("online requests/s")
  ax.set_title("Offline work fills the online troughs")
  ax.legend(loc="upper left")
  twin.legend(loc="upper right")


def report_markdown(summary, config) -> str:
  """The report section for reproduce.py."""
  rows = summary["rows"]
  tau = config.tau
  lines = [
    "## HyGen: online/offline co-location",
    "",
    f"Online: {config.n_online} requests of "
    + ("the Azure LLM 2023 code trace" if config.online == "azure" else "Azure-like draws")
    + f", arrivals scaled by "
    f"{summary['arrival_scale']:.2f} (target {config.target_util:.0%} busy time online-only); "
    f"offline: summarisation-like pool from t0, quota {config.offline_slots} slots; "
    f"{config.model} roofline with {config.noise_sigma:.0%} noise, chunk {config.token_budget}, "
    f"batch {config.max_seqs}. Profiled on slices {tuple(config.profile_seeds)} at once "
    "(feasible: within tolerance on every slice), evaluated on the fresh slices "
    f"{tuple(config.fresh_seeds)} (fresh workloads, each its own arrival scale and online "
    "window; the table gives the mean throughput and the worst latency ratio over them).",
    "",
    f"Predictor MAPE on held-out batches: {100 * summary['mape_heldout']:.2f}% (paper 1.78% on "
    "measured Llama2-7B batches; ours piecewise: decode-only / with prefill, each the max of two "
    "affine rows on [1, S_p, S_p^2, N_p, N_d, S_d]; the labels carry 2% noise).",
    "",
    "Largest feasible L by tolerance (P99 TTFT and mean TBT within (1 + tau) of online-only): "
    + ", ".join(
      f"tau {100 * float(t):g}%: {1e3 * v:.1f} ms"
      for t, v in sorted(summary["feasible_budget_by_tau"].items())
    )
    + f". HyGen* cap at tau {100 * tau:g}%: {summary['cap']:.3f} offline starts/s (grid "
    f"{summary['caps'][0]:.3f}-{summary['caps'][-1]:.3f}/s; unconstrained rate "
    f"{summary['free_start_rate']:.3f}/s).",
    "",
    "| policy | offline tok/s | overall tok/s | online P99 TTFT (s) | x online-only | online mean "
    "TBT (ms) | x online-only | slices within tau |",
    "|---|---|---|---|---|---|---|---|",
  ]
  n_slices = len(summary["slices"])
  for p in POLICIES:
    m = rows[p]
    lines.append(
      f"| {p} | {m['offline_tokens_s']:,.0f} | {m['overall_tokens_s']:,.0f} | "
      f"{m['ttft_p99']:.3f} | {m['ttft_p99_ratio']:.2f} | {1e3 * m['tbt_mean']:.1f} | "
      f"{m['tbt_mean_ratio']:.2f} | {m['n_within_tau']}/{n_slices} |"
    )
  lines += [
    "",
    "Per fresh slice (P99 TTFT ratio / mean TBT ratio to online-only; offline tokens/s):",
    "",
    "| slice | arrival scale | " + " | ".join(POLICIES[1:]) + " |",
    "|---|---|" + "---|" * (len(POLICIES) - 1),
  ]
  for sl in summary["slices"]:
    cells = [
      f"{sl['rows'][p]['ttft_p99_ratio']:.2f} / {sl['rows'][p]['tbt_mean_ratio']:.2f}; "
      f"{sl['rows'][p]['offline_tokens_s']:,.0f}"
      for p in POLICIES[1:]
    ]
    lines.append(f"| {sl['seed']} | {sl['arrival_scale']:.2f} | " + " | ".join(cells) + " |")
  lines += ["", *_notes(summary, config)]
  for key, fig in summary.get("figures", {}).items():
    lines.append(f"\n![{key}]({os.path.basename(fig)})")
  return "\n".join(lines) + "\n"


def _notes(summary, config):
  rows = summary["rows"]
  hy, star, pp, on = rows["hygen"], rows["hygen*"], rows["sarathi++"], rows["sarathi"]
  ratio = hy["offline_tokens_s"] / max(star["offline_tokens_s"], 1e-9)
  overall = hy["overall_tokens_s"] / max(on["overall_tokens_s"], 1e-9)
  notes = [
    "Paper (serving.md 3.5, 6): Sarathi++ fastest but over the SLO; HyGen within tolerance at "
    "several x HyGen*'s offline throughput; overall throughput above online-only (3.87x).",
    "",
    f"Measured: HyGen / HyGen* offline throughput {ratio:.2f}x; HyGen overall / online-only "
    f"{overall:.2f}x; Sarathi++ P99 TTFT {pp['ttft_p99_ratio']:.2f}x and mean TBT "
    f"{pp['tbt_mean_ratio']:.2f}x online-only (worst slice); within tau = {config.tau:.0%} on "
    f"{hy['n_within_tau']}/{len(summary['slices'])} fresh slices for HyGen, "
    f"{pp['n_within_tau']}/{len(summary['slices'])} for Sarathi++.",
    f"- [R] L bounds every batch, also while no online request is in the table, so offline "
    f"prefill runs in chunks of about {1e3 * summary['budget']:.0f} ms even in the troughs; "
    "this, and the prefill-heavy online trace, keeps the overall gain below the paper's.",
  ]
  top_l = summary["budget"] >= max(summary["grid"])
  top_cap = summary["cap"] >= max(summary["caps"])
  if top_l or top_cap:
    worst_tbt = float(np.max(summary["profile_tbt_ratio"]))
    notes.append(
      f"- On every profiling slice even the largest grid value stays within tau (mean TBT at "
      f"most {worst_tbt:.2f}x online-only), so the profile picks the top of the grid"
      + (" for L" if top_l else "")
      + (" and for the cap" if top_cap else "")
      + "."
    )
  if not hy["within_tau"]:
    prof_worst = max(
      float(np.max(np.asarray(summary["profile_ttft_ratio"])[:, summary["grid"].index(g)]))
      for g in summary["grid"]
      if g <= summary["budget"]
    )
    notes.append(
      f"- HyGen breaks tau on a fresh slice (worst P99 TTFT {hy['ttft_p99_ratio']:.2f}x, mean TBT "
      f"{hy['tbt_mean_ratio']:.2f}x) although the profiled L held on every profiling slice "
      f"(worst P99 TTFT ratio up to L {prof_worst:.2f}x): see the report text."
    )
  elif ratio < 2.0:
    notes.append(
      "- HyGen's lead over HyGen* is smaller than the paper's: the cap and L are profiled on "
      "the same grid and slice, and our summarisation pool has no prefix reuse."
    )
  if overall < 2.0:
    notes.append(
      "- The overall gain over online-only is bounded by the online share: the Azure code trace "
      "is prefill-heavy (mean prompt 2k, output 28 tokens), so online tokens are already a large "
      "part of the engine's capacity at the target utilisation."
    )
  notes.append(
    f"- Offline tokens/s vs online req/s per {config.bin_s:g} s bin: correlation "
    f"{summary['timeline']['corr']:.2f} (negative: offline fills the troughs)."
  )
  return notes + _psm_notes(summary.get("psm"), config)


def _psm_notes(psm, config):
  if not psm:
    return []
  lines = [
    "",
    f"PSM vs FCFS offline order (HyGen at L = {1e3 * psm['budget']:.1f} ms, fresh slice "
    f"{psm['slice']}, MMLU-like pool of {config.n_mmlu:,} rows: 57 subjects, ~600-token shared "
    "prefixes, 1-4 output tokens). FCFS is the pool's own random order; sharing caches whole "
    "16-token blocks of a resident prefix, evicted LRU when KV memory is short [R]. Paper: PSM "
    "up to 4x offline throughput on MMLU (simulated).",
    "",
    "| HBM | order | KV blocks | offline req/s | offline tok/s | prefix hits | prefill tokens "
    "saved | evictions | online P99 TTFT (s) | online mean TBT (ms) |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in psm["rows"]:
    lines.append(
      f"| {r['hbm_gb']:g} GB | {r['order']} | {r['num_blocks']:,} | {r['offline_rps']:.2f} | "
      f"{r['offline_tokens_s']:,.0f} | {r['prefix_hits']:,} | {r['prefix_tokens_saved']:,.0f} | "
      f"{r['prefix_evictions']:,} | {r['ttft_p99']:.3f} | {1e3 * r['tbt_mean']:.1f} |"
    )
  by = {(r["hbm_gb"], r["order"]): r for r in psm["rows"]}
  for hbm in config.psm_hbm_gb:
    psm_r, fcfs, none = by[(hbm, "psm")], by[(hbm, "fcfs")], by[(hbm, "no_sharing")]
    ratio = lambda a, b: a["offline_rps"] / max(b["offline_rps"], 1e-9)  # noqa: E731
    lines.append(
      f"- {hbm:g} GB: PSM / FCFS offline req/s {ratio(psm_r, fcfs):.2f}x; sharing (FCFS) / "
      f"none {ratio(fcfs, none):.2f}x."
    )
  if any(r["pool_exhausted"] for r in psm["rows"]):
    lines.append(
      "- The pool ran out within the window in some lanes: their rates are lower bounds."
    )
  return lines
