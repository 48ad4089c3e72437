"""Aggregate serving metrics from per-request outputs (host-side numpy, one run at a time).

Service gain and SLO token goodput follow Tempo (serving.md 2.2): the engine accrues the
latency class token by token; deadline requests and collective DAG jobs are scored here from
their end-to-end times, which is the same number the engine would have credited at completion.
"""

from __future__ import annotations

import numpy as np

from jaxsys.systems.workloads import COLLECTIVE, DEADLINE, LATENCY, OFFLINE


def _clamp_pow(x, alpha):
  return np.clip(x, 1e-6, 1.0) ** alpha


def lane(tree, i):
  """The i-th configuration of a swept (stacked) pytree, as numpy."""
  import jax

  return jax.tree.map(lambda x: np.asarray(x)[i], tree)


def request_scores(workload, outputs, arrival_scale=1.0, alpha=100.0, decode_weight=8.0):
  """Per-request soft gain, hard token goodput, SLO attainment and the gain if all on time."""
  cls = np.asarray(workload.cls)
  prompt = np.asarray(workload.prompt_len, np.float64)
  out = np.asarray(workload.out_len, np.float64)
  finish = np.asarray(outputs.finish_t)
  release = np.asarray(outputs.release)
  e2e = finish - release
  done = np.isfinite(finish)
  tokens = prompt + decode_weight * out
  soft = np.where(cls == LATENCY, np.asarray(outputs.gain), 0.0)
  hard = np.where(cls == LATENCY, np.asarray(outputs.good_tokens), 0.0)
  slo_ttft = np.asarray(workload.slo_ttft)
  slo_tbt = np.asarray(workload.slo_tbt)
  met = (
    (cls == LATENCY)
    & done
    & (np.asarray(outputs.ttft) <= slo_ttft)
    & (np.asarray(outputs.tbt_max) <= slo_tbt)
  )

  deadline = np.asarray(workload.deadline)
  dl = (cls == DEADLINE) & done
  soft = np.where(dl, tokens * _clamp_pow(deadline / np.where(dl, e2e, 1.0), alpha), soft)
  dl_met = dl & (e2e <= deadline)
  hard = np.where(dl_met, tokens, hard)
  met |= dl_met

  job = np.asarray(workload.job_id)
  node = (cls == COLLECTIVE) & (job >= 0)
  if node.any():
    n_jobs = np.asarray(workload.job_arrival).shape[0]
    job_end = np.full(n_jobs, -np.inf)
    np.maximum.at(job_end, job[node], np.where(done[node], finish[node], np.inf))
    job_e2e = job_end - np.asarray(workload.job_arrival) / arrival_scale
    job_deadline = np.asarray(workload.job_deadline)
    jn = job[node]
    ok = np.isfinite(job_e2e[jn])
    penalty = np.where(ok, _clamp_pow(job_deadline[jn] / np.where(ok, job_e2e[jn], 1.0), alpha), 0)
    soft[node] = tokens[node] * penalty
    job_met = ok & (job_e2e[jn] <= job_deadline[jn])
    hard[node] = np.where(job_met, tokens[node], 0.0)
    met[node] = job_met
  best = np.where(cls == LATENCY, prompt + decode_weight * (out - 1), tokens)
  return {"soft_gain": soft, "hard_tokens": hard, "slo_met": met, "best_gain": best, "e2e": e2e}


def summarize(workload, outputs, arrival_scale=1.0, alpha=100.0, decode_weight=8.0):
  """Scalars of one run: throughput, goodput, gain, latency percentiles per class."""
  sc = request_scores(workload, outputs, arrival_scale, alpha, decode_weight)
  finish = np.asarray(outputs.finish_t)
  done = np.isfinite(finish)
  arrival = np.asarray(workload.arrival) / arrival_scale
  span = (np.nanmax(finish) - arrival.min()) if done.any() else np.nan
  out_tokens = np.asarray(workload.out_len, np.float64)
  res = {
    "requests": int(finish.shape[0]),
    "finished": int(done.sum()),
    "makespan_s": float(span),
    "throughput_rps": float(done.sum() / span),
    "token_throughput": float(
      (out_tokens[done].sum() + np.asarray(workload.prompt_len)[done].sum()) / span
    ),
    "service_gain": float(sc["soft_gain"].sum()),
    "service_gain_frac": float(sc["soft_gain"].sum() / sc["best_gain"].sum()),
    "slo_token_goodput": float(sc["hard_tokens"].sum() / span),
    "slo_token_frac": float(sc["hard_tokens"].sum() / sc["best_gain"].sum()),
    "goodput_rps": float(sc["slo_met"].sum() / span),
    "slo_attainment": float(sc["slo_met"].mean()),
    "preemptions": int(np.asarray(outputs.n_preempt).sum()),
  }
  cls = np.asarray(workload.cls)
  ttft = np.asarray(outputs.ttft)
  for c, name in enumerate(("latency", "deadline", "collective")):
    m = (cls == c) & done
    if not m.any():
      continue
    res[f"{name}_slo_attainment"] = float(sc["slo_met"][cls == c].mean())
    res[f"{name}_ttft_mean"] = float(ttft[m].mean())
    res[f"{name}_ttft_p99"] = float(np.percentile(ttft[m], 99))
    res[f"{name}_e2e_mean"] = float(sc["e2e"][m].mean())
  return res


def online_latency(workload, outputs) -> dict:
  """Online TTFT (mean, P99) and TBT (mean over requests with >= 2 tokens of their mean gap, and
  P99 of the per-request max gap) of the finished online requests (class != OFFLINE)."""
  cls = np.asarray(workload.cls)
  finish = np.asarray(outputs.finish_t)
  online = (cls != OFFLINE) & np.isfinite(finish)
  ttft = np.asarray(outputs.ttft)[online]
  multi = online & (np.asarray(workload.out_len) >= 2)
  tbt = np.asarray(outputs.tbt_mean)[multi]
  nan = float("nan")
  return {
    "online_finished": int(online.sum()),
    "ttft_mean": float(ttft.mean()) if ttft.size else nan,
    "ttft_p99": float(np.percentile(ttft, 99)) if ttft.size else nan,
    "tbt_mean": float(tbt.mean()) if tbt.size else nan,
    "tbt_max_p99": float(np.percentile(np.asarray(outputs.tbt_max)[multi], 99))
    if tbt.size
    else nan,
  }


def token_times(workload, outputs, offline: bool):
  """(time, tokens) pairs of the useful tokens of finished requests of one stream [R]: a
  request's prompt counts at its first token, each output token after the first is spread
  evenly between the first token and the finish (the engine keeps no per-token log)."""
  cls = np.asarray(workload.cls)
  finish = np.asarray(outputs.finish_t)
  sel = ((cls == OFFLINE) == offline) & np.isfinite(finish)
  first = (np.asarray(outputs.release) + np.asarray(outputs.ttft))[sel]
  prompt = np.asarray(workload.prompt_len, np.float64)[sel]
  out = np.asarray(workload.out_len, np.float64)[sel]
  return first, finish[sel], prompt, out


def tokens_in_window(workload, outputs, t0: float, t1: float, offline: bool) -> float:
  """Useful tokens (prompt + output) of one stream processed within [t0, t1] (`token_times`)."""
  first, finish, prompt, out = token_times(workload, outputs, offline)
  total = np.where((first >= t0) & (first <= t1), prompt + 1.0, 0.0)
  span = np.maximum(finish - first, 1e-12)
  covered = np.clip(np.minimum(finish, t1) - np.maximum(first, t0), 0.0, None) / span
  rest = np.where(finish > first, (out - 1.0) * covered, 0.0)
  return float(np.sum(total) + np.sum(rest))


def tokens_over_time(workload, outputs, bin_s: float, t_end: float, offline: bool):
  """Tokens per second of one stream in bins of `bin_s` over [0, t_end]: (bin starts, rate)."""
  edges = np.arange(0.0, t_end + bin_s, bin_s)
  rates = [
    tokens_in_window(workload, outputs, a, b, offline) / bin_s
    for a, b in zip(edges[:-1], edges[1:], strict=True)
  ]
  return edges[:-1], np.asarray(rates)


def hybrid_summary(workload, outputs, t_end: float, offline_tokens=None) -> dict:
  """Co-location metrics over the window [0, t_end] (HyGen, serving.md 3.5): online latency,
  offline and overall tokens/s, offline requests finished per second in the window.

  `offline_tokens`: the env's `State.offline_tokens` (tokens granted to offline requests; with
  `offline_stop = t_end` all of them ran in the window, unfinished requests included); without
  it, the useful tokens of finished offline requests (`tokens_in_window`)."""
  res = online_latency(workload, outputs)
  if offline_tokens is None:
    off = tokens_in_window(workload, outputs, 0.0, t_end, True)
  else:
    off = float(offline_tokens)
  on = tokens_in_window(workload, outputs, 0.0, t_end, False)
  cls = np.asarray(workload.cls)
  finish = np.asarray(outputs.finish_t)
  res.update(
    offline_tokens_s=off / t_end,
    online_tokens_s=on / t_end,
    overall_tokens_s=(off + on) / t_end,
    offline_rps=float(np.sum((cls == OFFLINE) & (finish <= t_end)) / t_end),
  )
  return res
