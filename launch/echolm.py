r"""The EchoLM reproduction: real cache statistics and SmolLM2 examples, then routing at scale.

  python -m jaxsys.launch.simulate --config=launch/configs/serving/echolm_routing.py:quick \
      --workdir=/tmp/echolm

`run(config, workdir) -> summary` is importable (reproduce.py, tests); `report_markdown(summary,
config)` renders it. Writes config.json, metrics.jsonl, results.json, real_answers.jsonl (the
SmolLM2 answers, reused by a rerun), embeddings.npz and PNGs into the workdir.
Benchmark hooks: `cache_sweep_jitted` / `cache_sweep_reference` (the same cache-size sweep).
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxsys.lib import plots, sim
from jaxsys.lib.writer import MetricWriter
from jaxsys.scheduling import baselines
from jaxsys.scheduling import echolm as el
from jaxsys.systems import context_cache as cc
from jaxsys.systems import context_cache_reference as ccr
from jaxsys.systems import llm_serving as ls
from jaxsys.systems import timing, workloads

_FAR = 1e7  # arrival of padding requests: after every real one has finished

# ----------------------------------------------------------------------------- real part


def _load_real(config):
  from jaxsys.algorithms.uq import labels

  rng = np.random.default_rng(config.seed)
  nq = labels.load_nq_open(config.nq_path)
  gsm = labels.load_gsm8k(config.gsm8k_path)
  nq = [nq[i] for i in np.sort(rng.choice(len(nq), min(config.n_nq, len(nq)), replace=False))]
  gsm = [gsm[i] for i in np.sort(rng.choice(len(gsm), min(config.n_gsm8k, len(gsm)), False))]
  items = [("nq", q.question, q.aliases[0], q.aliases) for q in nq]
  items += [("gsm8k", g.question, g.solution, g.gold) for g in gsm]
  return items


def _embed(texts, workdir):
  path = os.path.join(workdir, "embeddings.npz")
  if os.path.exists(path):
    z = np.load(path, allow_pickle=False)
    if list(z["texts"]) == list(texts):
      return z["emb"]
  from jaxsys.lib.models import bert

  emb = bert.Encoder.load().encode(list(texts))
  tmp = path + ".tmp.npz"
  np.savez(tmp, emb=emb, texts=np.asarray(texts))
  os.replace(tmp, path)
  return emb


def _prompt(question, examples, dataset):
  suffix = (
    " Answer concisely and return only the name."
    if dataset == "nq"
    else " Solve step by step and end with '#### <number>'."
  )
  shots = "".join(f"Q: {q}\nA: {a}\n\n" for q, a in examples)
  return f"{shots}Q: {question}{suffix}\nA:" if shots else question + suffix


def _correct(dataset, answer, gold):
  from jaxsys.algorithms.uq import labels

  if dataset == "nq":
    return labels.nq_correct(labels.first_line(answer), gold, mode="contains")
  return labels.gsm8k_correct(answer.split("Q:")[0], gold)


def _answers(config, jobs, workdir):
  """SmolLM2 greedy answers for jobs [(key, prompt, max_new_tokens)], cached in JSONL."""
  path = os.path.join(workdir, "real_answers.jsonl")
  done = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        if line.strip():
          row = json.loads(line)
          done[row["key"]] = row["answer"]
  todo = [j for j in jobs if j[0] not in done]
  if todo:
    from jaxsys.lib.llm import local

    backend = local.LocalBackend.load("smollm2", batch_rows=config.batch_rows)
    by_len = {}
    for j in todo:
      by_len.setdefault(j[2], []).append(j)
    with open(path, "a") as f:
      for max_new, group in by_len.items():
        for start in range(0, len(group), config.batch_rows):
          part = group[start : start + config.batch_rows]
          out = backend.sample([p for _, p, _ in part], 1, 0.0, max_new, seed=0)
          for (key, _, _), texts in zip(part, out, strict=True):
            done[key] = texts[0]
            f.write(json.dumps({"key": key, "answer": texts[0]}) + "\n")
          f.flush()
          logging.info("smollm2: %d/%d answers", len(done), len(jobs))
  return done


def real_part(config, workdir):
  """Cache statistics and SmolLM2-with-examples accuracy on NQ-open and GSM8K."""
  items = _load_real(config)
  texts = [q for _, q, _, _ in items]
  emb = _embed(texts, workdir)
  from jaxsys.algorithms.uq import labels

  res, rows = {}, []
  hist_all, query_all = [], []
  for ds in ("nq", "gsm8k"):
    idx = [i for i, it in enumerate(items) if it[0] == ds]
    hist, query = idx[0::2], idx[1::2]
    hist_all += hist
    query_all += query
    sims = emb[query] @ emb[hist].T
    order = np.argsort(-sims, axis=1, kind="stable")
    best = sims[np.arange(len(query)), order[:, 0]]
    norm = {labels.normalise(items[h][1]) for h in hist}
    r = {
      "queries": len(query),
      "frac_neighbour_ge_0.8": float(np.mean(best >= 0.8)),
      "mean_best_sim": float(np.mean(best)),
      "exact_hit_rate": float(np.mean([labels.normalise(items[q][1]) in norm for q in query])),
    }
    for tau in config.taus:
      hit = best >= tau
      ok = []
      for qi, q in enumerate(query):
        if hit[qi]:
          h = hist[order[qi, 0]]
          if ds == "nq":
            ok.append(labels.nq_correct(items[h][2], items[q][3], mode="em"))
          else:
            ok.append(abs(items[h][3] - items[q][3]) < 1e-6)
      r[f"semantic_tau{tau:g}"] = {
        "hit_rate": float(hit.mean()),
        "acc_on_hits": float(np.mean(ok)) if ok else float("nan"),
      }
    # SmolLM2 with k retrieved (question, answer) examples from the history half
    max_new = config.nq_max_new_tokens if ds == "nq" else config.gsm8k_max_new_tokens
    jobs = []
    for qi, q in enumerate(query):
      for k in config.ks:
        ex = [(items[hist[j]][1], items[hist[j]][2]) for j in order[qi, :k]]
        jobs.append((f"{ds}/{q}/k{k}/{max_new}", _prompt(items[q][1], ex, ds), max_new, q, k, qi))
    answers = _answers(config, [j[:3] for j in jobs], workdir)
    acc = {k: [] for k in config.ks}
    for key, _, _, q, k, qi in jobs:
      good = _correct(ds, answers[key], items[q][3])
      acc[k].append(good)
      rows.append((k, float(best[qi]), float(good)))
    r["smollm2_acc"] = {str(k): float(np.mean(v)) for k, v in acc.items()}
    res[ds] = r
  k, s, y = (np.asarray(c) for c in zip(*rows, strict=True))
  qm = el.fit_quality_model(k, s, y)
  res["quality_w"] = [float(x) for x in np.asarray(qm.w)]
  # other-question semantic-cache accuracy (a hit on a different question), pooled
  other = [res[ds][f"semantic_tau{min(config.taus):g}"]["acc_on_hits"] for ds in ("nq", "gsm8k")]
  res["hit_quality_other"] = float(np.nanmean(other)) if np.isfinite(other).any() else 0.0
  lens = {
    "prompt": np.asarray([max(8, len(t) // 4 + 16) for t in texts], np.int32),
    "out": np.asarray([max(4, len(str(it[2])) // 4 + 2) for it in items], np.int32),
  }
  return res, emb, lens


def routellm_stats(path):
  """Weak/strong accuracy in lm-sys/RouteLLM's GSM8K correctness table (the strong model's
  accuracy is our default large-tier quality)."""
  import csv

  if not os.path.exists(path):
    return {}
  with open(path, newline="") as f:
    r = list(csv.DictReader(f))
  w = np.asarray([x["weak_correct"] == "True" for x in r])
  s = np.asarray([x["strong_correct"] == "True" for x in r])
  return {
    "n": len(r),
    "weak_acc": float(w.mean()),
    "strong_acc": float(s.mean()),
    "strong_only": float((s & ~w).mean()),
    "weak_only": float((w & ~s).mean()),
  }


# ----------------------------------------------------------------------------- simulated part


def make_stream(config, rng, base_emb, base_prompt, base_out, w_rl=None):
  """N requests: a new question (share p_novel), else a Zipf-popular base question, verbatim
  (share p_exact of those) or paraphrased.

  A new question is a random direction (no earlier request near it) with a base question's
  lengths and its own difficulty [R]; `p_novel` sets the share of requests without a similar
  earlier one, which the paper measures (30-40%).
  """
  n_base, d = base_emb.shape
  n = config.n_requests
  perm = rng.permutation(n_base)
  j = perm[(rng.zipf(config.zipf, n) - 1) % n_base]
  exact = rng.random(n) < config.p_exact
  novel = rng.random(n) < config.p_novel
  exact &= ~novel
  noise = rng.standard_normal((n, d)) * config.paraphrase / np.sqrt(d)
  emb = base_emb[j] + np.where(exact[:, None], 0.0, noise)
  emb = np.where(novel[:, None], rng.standard_normal((n, d)), emb)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  difficulty = rng.normal(0.0, config.difficulty_sigma, n_base)
  own_difficulty = rng.normal(0.0, config.difficulty_sigma, n)
  # a paraphrase is another question (its own id): only verbatim repeats share an answer
  src = np.where(exact, j, n_base + np.arange(n)).astype(np.int32)
  stream = el.Stream(
    emb=emb.astype(np.float32),
    prompt_len=base_prompt[j].astype(np.int32),
    out_len=base_out[j].astype(np.int32),
    arrival=np.cumsum(rng.exponential(1.0, n)),
    src=src,
    difficulty=np.where(novel, own_difficulty, difficulty[j]),
    rl_score=np.zeros(n),
    u_quality=rng.random(n),
    u_replay=rng.random((n, 1)),
  )
  return stream, difficulty


def _tier_coefs(config):
  small = timing.get_preset(config.small_model)
  large = timing.get_preset(config.large_model)
  tp = float(config.large_tp)
  large = large.replace(flops=large.flops * tp, bandwidth=large.bandwidth * tp)
  blocks = (timing.kv_blocks_capacity(large, 80e9 * tp), timing.kv_blocks_capacity(small, 80e9))
  return (large, small), blocks


def _variants(config):
  """(label, kind, RouterParams overrides) of every routing configuration."""
  v = [("large_only", "large_only", {}), ("small_only", "small_only", {})]
  v.append(("exact_cache", "exact_cache", {}))
  v += [(f"semantic tau={t:g}", "semantic_cache", {"tau": t}) for t in config.taus_sim]
  v += [(f"routellm strong={s:g}", "routellm", {"strong_share": s}) for s in config.strong_shares]
  v += [(f"echolm q={q:g}", "echolm_threshold", {"q_target": q}) for q in config.q_targets]
  v += [(f"echolm_ucb beta={b:g}", "echolm_linucb", {"beta": b}) for b in config.betas]
  return v


def _tier_workloads(stream, out, scale, n_pad):
  """(large, small) Workloads of one routed lane, padded to n_pad, and index maps."""
  arrival = np.asarray(stream.arrival) / scale
  arm = np.asarray(out.arm)
  res = []
  for tier, mask in ((0, arm == el.LARGE), (1, (arm == el.SMALL) | (arm == el.SMALL_EX))):
    idx = np.nonzero(mask)[0]
    a = arrival[idx]
    p = np.asarray(stream.prompt_len)[idx] + np.asarray(out.ex_tokens)[idx]
    o = np.asarray(stream.out_len)[idx]
    if tier == 0:  # re-answers of the offline replay run on the large tier too
      rp, ro = np.asarray(out.replay_prompt), np.asarray(out.replay_out)
      ri, rj = np.nonzero(rp > 0)  # a replayed row has a prompt; its output may be short
      a = np.concatenate([a, arrival[ri]])
      p, o = np.concatenate([p, rp[ri, rj]]), np.concatenate([o, ro[ri, rj]])
      idx = np.concatenate([idx, np.full(len(ri), -1)])
    order = np.argsort(a, kind="stable")
    a, p, o, idx = a[order], p[order], o[order], idx[order]
    pad = n_pad - len(a)
    a = np.concatenate([a, _FAR + np.arange(pad) * 1e-3])
    p = np.concatenate([p, np.ones(pad, np.int64)])
    o = np.concatenate([o, np.ones(pad, np.int64)])
    wl = workloads.make_requests(None, a, p, o, slo_ttft=1e9, slo_tbt=1e9)
    res.append((wl, np.concatenate([idx, np.full(pad, -2)])))
  return res


def simulate(config, stream, routed, coefs, blocks):
  """Runs every routed lane's two tiers through the unchanged engine (one vmapped sweep).

  routed: list of (scale, RouteOut of numpy). Returns per lane (e2e [N], ttft [N]).
  """
  n = len(stream.arrival)
  n_pad = n + int(max(np.sum(np.asarray(o.replay_prompt) > 0) for _, o in routed)) + 1
  wls, maps, params = [], [], []
  for scale, out in routed:
    for tier, (wl, m) in enumerate(_tier_workloads(stream, out, scale, n_pad)):
      wls.append(wl)
      maps.append(m)
      params.append(
        ls.EnvParams(
          token_budget=config.token_budget,
          max_seqs=config.max_seqs,
          num_blocks=blocks[tier],
          time_coef=coefs[tier],
        )
      )
  env = ls.make(ls.EnvConfig(n_slots=config.n_slots, admit_max=64, macro_steps=config.macro_steps))
  keys = jax.random.split(jax.random.key(config.seed), len(wls))
  state, _ = sim.sweep(
    env, baselines.sarathi(), sim.stack(params), (), keys, sim.stack(wls), workload_axis=0
  )
  finish = np.asarray(state.outputs.finish_t)
  ttft_all = np.asarray(state.outputs.ttft)
  res = []
  for lane, (scale, _) in enumerate(routed):
    arrival = np.asarray(stream.arrival) / scale
    e2e = np.full(n, config.hit_latency)
    ttft = np.full(n, config.hit_latency)
    for tier in (0, 1):
      m, i = maps[2 * lane + tier], 2 * lane + tier
      real = m >= 0
      e2e[m[real]] = finish[i][real] - arrival[m[real]]
      ttft[m[real]] = ttft_all[i][real]
    res.append((e2e, ttft))
  return res


def sim_part(config, real, writer):
  rng = np.random.default_rng(config.seed + 1)
  if real is not None:
    res, base_emb, lens = real
    base_prompt, base_out = lens["prompt"], lens["out"]
    qm = el.QualityModel(w=jnp.asarray(res["quality_w"]))
    hit_other = res["hit_quality_other"]
  else:
    centres = rng.standard_normal((max(4, config.n_base // 8), config.dim))
    base_emb = centres[rng.integers(0, len(centres), config.n_base)]
    base_emb = base_emb + 1.2 * rng.standard_normal(base_emb.shape)
    base_emb /= np.linalg.norm(base_emb, axis=1, keepdims=True)
    base_prompt = workloads.lognormal_lengths(rng, config.n_base, 120, 0.6, 1024)
    base_out = workloads.lognormal_lengths(rng, config.n_base, 120, 0.8, 1024)
    qm, hit_other = el.QualityModel(), 0.0
  stream, difficulty = make_stream(config, rng, base_emb, base_prompt, base_out)
  # RouteLLM: a logistic model on the embedding, trained on labelled small-model outcomes
  train = rng.integers(0, len(base_emb), 2000)
  p0 = jax.nn.sigmoid(el._logit(qm.small(0, 0.0)) - difficulty[train])
  w_rl = el.routellm_fit(base_emb[train], rng.random(len(train)) < np.asarray(p0))
  train_scores = el.routellm_score(w_rl, base_emb[train])
  stream = stream._replace(rl_score=el.routellm_score(w_rl, stream.emb))
  coefs, blocks = _tier_coefs(config)
  rates = [el.tier_rates(c, batch=32) for c in coefs]
  prefill_s = jnp.asarray([r[0] for r in rates])
  decode_s = jnp.asarray([r[1] for r in rates])
  work_large = float(np.mean(stream.prompt_len * rates[0][0] + stream.out_len * rates[0][1]))
  lam_large = 1.0 / work_large  # fluid capacity of the large tier (req/s)
  cfg_cache = cc.CacheConfig(capacity=config.capacity, dim=stream.emb.shape[1])
  cache0 = cc.init(cfg_cache)
  cparams = cc.CacheParams(active=config.capacity, q_replay=float(qm.q_large))
  base = el.RouterParams(
    queue_cap=config.queue_cap,
    hit_quality_other=hit_other,
    prefill_s=prefill_s,
    decode_s=decode_s,
    quality=qm,
    cache=cparams,
  )
  variants = _variants(config)
  by_kind = {}
  for label, kind, over in variants:
    for rho in config.loads:
      over = dict(over)
      share = over.pop("strong_share", None)
      if share is not None:
        over["strong_threshold"] = el.calibrate_threshold(train_scores, share)
      p = base.replace(arrival_scale=rho * lam_large, **over)
      by_kind.setdefault(kind, []).append((label, rho, p))
  routed, meta = [], []
  t0 = time.perf_counter()
  for kind, lanes in by_kind.items():
    _, outs = el.route_sweep(
      el.RouteConfig(kind, cfg_cache), sim.stack([p for _, _, p in lanes]), stream, cache0
    )
    outs = jax.tree.map(np.asarray, outs)
    for i, (label, rho, p) in enumerate(lanes):
      routed.append((float(p.arrival_scale), jax.tree.map(lambda x, i=i: x[i], outs)))
      meta.append((label, kind, rho))
  t_route = time.perf_counter() - t0
  logging.info("routing: %d lanes in %.1f s", len(routed), t_route)
  t0 = time.perf_counter()
  lat = simulate(config, stream, routed, coefs, blocks)
  t_env = time.perf_counter() - t0
  logging.info("engine: %d lanes x 2 tiers in %.1f s", len(routed), t_env)
  rows = []
  for (label, kind, rho), (scale, out), (e2e, ttft) in zip(meta, routed, lat, strict=True):
    arrival = np.asarray(stream.arrival) / scale
    span = float(np.max(arrival + e2e) - arrival.min())
    row = {
      "label": label,
      "kind": kind,
      "rho": rho,
      "quality": float(np.mean(out.good)),
      "expected_quality": float(np.mean(out.p_good)),
      "offload": float(np.mean(out.arm != el.LARGE)),
      "examples_share": float(np.mean(out.arm == el.SMALL_EX)),
      "hit_rate": float(np.mean(out.arm == el.HIT)),
      "replays": int(np.sum(np.asarray(out.replay_prompt) > 0)),
      "e2e_mean": float(np.mean(e2e)),
      "e2e_p99": float(np.percentile(e2e, 99)),
      "ttft_mean": float(np.mean(ttft)),
      "throughput_rps": len(e2e) / span,
      "slo_goodput_rps": float(np.sum(e2e <= config.slo_e2e)) / span,
      "offered_rps": float(scale),
    }
    rows.append(row)
    writer.write_scalars(len(rows), row)
  samples = {(r["label"], r["rho"]): lat[i][0] for i, r in enumerate(rows)}
  info = {
    "lambda_large": lam_large,
    "tier_rates": {"large": rates[0], "small": rates[1]},
    "kv_blocks": {"large": blocks[0], "small": blocks[1]},
    "quality_w": [float(x) for x in np.asarray(qm.w)],
    "q_large": float(qm.q_large),
    "hit_quality_other": hit_other,
    "frac_neighbour_ge_0.8": _neighbour_share(stream.emb),
    "route_s": t_route,
    "engine_s": t_env,
  }
  return rows, samples, info


def _neighbour_share(emb):
  """Share of requests with an earlier request of cosine >= 0.8 (first 2,000)."""
  e = np.asarray(emb[:2000], np.float64)
  s = np.tril(e @ e.T, -1)
  return float(np.mean(s.max(axis=1) >= 0.8))


# ----------------------------------------------------------------------------- driver


def run(config, workdir):
  """Real part (if config.real), simulated part, plots. Returns the summary dict."""
  os.makedirs(workdir, exist_ok=True)
  if not jax.config.jax_enable_x64:
    raise ValueError("launch/echolm.run needs jax_enable_x64 (the serving engine's time)")
  writer = MetricWriter(workdir)
  writer.write_config(config)
  start = time.perf_counter()
  summary = {"routellm_data": routellm_stats(config.routellm_path)}
  real = None
  if config.real:
    t0 = time.perf_counter()
    real = real_part(config, workdir)
    summary["real"] = real[0]
    summary["real_s"] = time.perf_counter() - t0
  rows, samples, info = sim_part(config, real, writer)
  summary.update(sim=info, rows=rows)
  summary["headline"] = headline(rows, config)
  summary["wall_s"] = time.perf_counter() - start
  summary["figures"] = _plots(workdir, config, rows, samples, summary["headline"])
  writer.write_json("results.json", summary)
  writer.close()
  return summary


def _best(rows, kind_prefix, rho, min_quality):
  """The lane of that kind at load rho with the highest SLO goodput and quality >= min."""
  c = [r for r in rows if r["kind"].startswith(kind_prefix) and r["rho"] == rho]
  ok = [r for r in c if r["quality"] >= min_quality] or c
  return max(ok, key=lambda r: r["slo_goodput_rps"]) if ok else None


def headline(rows, config):
  """EchoLM against large-only: SLO throughput (best over loads) and latency at rho = 1."""
  top = max(config.loads)
  mid = 1.0 if 1.0 in config.loads else config.loads[0]
  large = {r["rho"]: r for r in rows if r["kind"] == "large_only"}
  q_large = np.mean([r["quality"] for r in large.values()])
  tol = 0.02  # quality counts as "not hurt" within this of large-only [R]
  out = {"q_large_only": float(q_large), "tolerance": tol}
  for prefix in ("echolm", "routellm", "semantic_cache"):
    # throughput: the best config of the kind at the top load, against large-only there
    b = _best(rows, prefix, top, q_large - tol)
    ok = b is not None and b["quality"] >= q_large - tol
    lat = _best(rows, prefix, mid, q_large - tol)
    lat_ok = lat is not None and lat["quality"] >= q_large - tol
    out[prefix] = {
      "label": b["label"] if ok else None,
      "rho": top,
      "quality": b["quality"] if ok else float("nan"),
      "slo_throughput_ratio": (
        b["slo_goodput_rps"] / large[top]["slo_goodput_rps"] if ok else float("nan")
      ),
      "e2e_change_at_mid": lat["e2e_mean"] / large[mid]["e2e_mean"] - 1.0
      if lat_ok
      else float("nan"),
      "mid_label": lat["label"] if lat_ok else None,
    }
  out["top_rho"], out["mid_rho"] = top, mid
  return out


def _plots(workdir, config, rows, samples, head):
  figs = {}

  def quality_vs_tput(ax):
    kinds = []
    for r in rows:
      if r["kind"] not in kinds:
        kinds.append(r["kind"])
    for kind in kinds:
      pts = []
      for label in dict.fromkeys(r["label"] for r in rows if r["kind"] == kind):
        lane = [r for r in rows if r["label"] == label]
        pts.append((max(r["slo_goodput_rps"] for r in lane), np.mean([r["quality"] for r in lane])))
      pts.sort()
      ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=kind)
    ax.set_xlabel(f"throughput within the {config.slo_e2e:g} s E2E SLO (req/s, best load)")
    ax.set_ylabel("quality (fraction good)")
    ax.set_title("Quality vs throughput")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)

  figs["quality_vs_throughput"] = plots.custom_plot(
    os.path.join(workdir, "echolm_quality_vs_throughput.png"), quality_vs_tput
  )
  mid = head["mid_rho"]
  sel = {}
  for prefix in ("large_only", "echolm", "routellm", "semantic_cache"):
    b = _best(rows, prefix, mid, head["q_large_only"] - head["tolerance"])
    if b:
      sel[f"{b['label']} (q={b['quality']:.2f})"] = samples[(b["label"], b["rho"])]
  figs["latency_cdf"] = plots.cdf_plot(
    os.path.join(workdir, "echolm_latency_cdf.png"),
    sel,
    xlabel="E2E latency (s)",
    title=f"E2E CDF at rho = {mid:g}, best config per kind at equal quality",
    logx=True,
  )
  series = {}
  for label in dict.fromkeys(r["label"] for r in rows):
    if label.startswith(("echolm", "routellm")):
      series[label] = [r["offload"] for r in rows if r["label"] == label]
  figs["offload_vs_load"] = plots.line_plot(
    os.path.join(workdir, "echolm_offload_vs_load.png"),
    list(config.loads),
    series,
    xlabel="load (x large-only capacity)",
    ylabel="share of requests off the large tier",
    title="Offload share vs load",
  )
  return figs


# ----------------------------------------------------------------------------- report


def report_markdown(summary, config) -> str:
  lines = ["## EchoLM: in-context caching and routing", ""]
  if "real" in summary:
    r = summary["real"]
    lines += [
      f"Real part: {config.n_nq} NQ-open and {config.n_gsm8k} GSM8K questions, half history "
      f"(cache), half queries; MiniLM embeddings; SmolLM2-135M-Instruct greedy, max "
      f"{config.nq_max_new_tokens} / {config.gsm8k_max_new_tokens} new tokens (NQ / GSM8K: "
      "worked solutions need room before the final number).",
      "",
      "| set | share with neighbour >= 0.8 | mean best sim | exact hits | "
      + " | ".join(f"semantic tau={t:g} hits / acc" for t in config.taus)
      + " | "
      + " | ".join(f"SmolLM2 k={k}" for k in config.ks)
      + " |",
      "|---|---|---|---|" + "---|" * (len(config.taus) + len(config.ks)),
    ]
    for ds in ("nq", "gsm8k"):
      d = r[ds]
      sem = [d[f"semantic_tau{t:g}"] for t in config.taus]
      lines.append(
        f"| {ds} | {d['frac_neighbour_ge_0.8']:.3f} | {d['mean_best_sim']:.3f} | "
        f"{d['exact_hit_rate']:.3f} | "
        + " | ".join(f"{s['hit_rate']:.3f} / {s['acc_on_hits']:.2f}" for s in sem)
        + " | "
        + " | ".join(f"{d['smollm2_acc'][str(k)]:.3f}" for k in config.ks)
        + " |"
      )
    w = r["quality_w"]
    lines += [
      "",
      f"Fitted small-tier quality q(k, s) = sigmoid({w[0]:.2f} + {w[1]:.2f} k + {w[2]:.2f} s + "
      f"{w[3]:.2f} k s). The paper finds 60-70% of requests with a neighbour >= 0.8 in production "
      "traffic; these benchmark sets hold few near-duplicates, so the simulated part builds its "
      "repeats by paraphrase noise on these embeddings.",
      "",
    ]
  else:
    lines += [
      "Real part skipped (config.real = False): synthetic embeddings and the documented "
      f"default quality model w = {summary['sim']['quality_w']}.",
      "",
    ]
  info = summary["sim"]
  lines += [
    f"Simulated part: {config.n_requests} requests, Zipf({config.zipf}) popular questions, "
    f"{config.p_novel:.0%} new questions, {config.p_exact:.0%} of the rest verbatim repeats, "
    f"paraphrases at similarity ~"
    f"{1 / np.sqrt(1 + config.paraphrase**2):.2f} (measured share with a neighbour >= 0.8: "
    f"{info['frac_neighbour_ge_0.8']:.2f}); small tier {config.small_model}, large "
    f"{config.large_model} on {config.large_tp} GPUs (roofline); large-only fluid capacity "
    f"{info['lambda_large']:.2f} req/s; loads {list(config.loads)} x that; large quality "
    f"{info['q_large']:.3f} (RouteLLM table's strong model on GSM8K). Routing "
    f"{info['route_s']:.1f} s, engine {info['engine_s']:.1f} s.",
    "",
    "| config | rho | quality | offload | hit rate | E2E mean (s) | E2E p99 (s) | "
    "throughput (req/s) | SLO goodput (req/s) |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in summary["rows"]:
    lines.append(
      f"| {r['label']} | {r['rho']:g} | {r['quality']:.3f} | {r['offload']:.2f} | "
      f"{r['hit_rate']:.2f} | {r['e2e_mean']:.2f} | {r['e2e_p99']:.2f} | "
      f"{r['throughput_rps']:.2f} | {r['slo_goodput_rps']:.2f} |"
    )
  h = summary["headline"]
  lines += ["", _headline_text(h, config)]
  for key, fig in summary.get("figures", {}).items():
    lines.append(f"\n![{key}]({os.path.basename(fig)})")
  return "\n".join(lines) + "\n"


def _headline_text(h, config):
  def part(name):
    x = h[name]
    if not x["label"]:
      tol, top = h["tolerance"], h["top_rho"]
      return f"{name}: no configuration within {tol} of large-only quality at rho = {top:g}"
    lat = x["e2e_change_at_mid"]
    lat_s = "-" if not np.isfinite(lat) else f"{lat:+.0%}"
    return (
      f"{name}: best at equal quality `{x['label']}` (quality {x['quality']:.3f}) serves "
      f"{x['slo_throughput_ratio']:.2f}x large-only's SLO goodput at rho = {h['top_rho']:g}; "
      f"mean E2E at rho = {h['mid_rho']:g} {lat_s} vs large-only"
    )

  return (
    f"Paper: throughput 1.4-5.9x, latency -28-71%, quality not hurt. Here (quality counts as "
    f"not hurt within {h['tolerance']} of large-only's {h['q_large_only']:.3f}): "
    + "; ".join(part(n) for n in ("echolm", "routellm", "semantic_cache"))
    + ". Differences: our tiers differ by a fixed roofline ratio (70B on 4 GPUs vs 8B on 1), "
    "quality comes from a fitted logistic model and a per-question difficulty, not from a judge "
    "on real responses, and the paraphrase structure of the trace is synthetic; the semantic "
    "cache returns an answer to a different question on every paraphrase hit, so its quality "
    "falls as tau falls, as in the paper. With the real part on, q(k, s) is fitted to "
    "SmolLM2-135M (a few % accurate) at the low similarities these sets offer and extrapolated "
    "to the simulated paraphrases (s ~ 0.9): read the EchoLM rows as the pipeline working, not "
    "as a measured quality claim."
  )


# ----------------------------------------------------------------------------- benchmark hooks


def bench_setup(n_requests=400, capacity=256, dim=64, sizes=(16, 64, 128, 256), seed=0):
  """(config, stacked params, params list, stream, cache0) of a cache-size sweep."""
  config = cc.CacheConfig(capacity=capacity, dim=dim)
  stream = cc.random_stream(np.random.default_rng(seed), config, n_requests, n_topics=32)
  plist = [cc.CacheParams(active=s) for s in sizes]
  return config, sim.stack(plist), plist, stream, cc.init(config, jnp.float64)


def cache_sweep_jitted(config, stacked, stream, cache0):
  """The cache-size sweep as one jitted vmapped scan; blocks until done. Returns (caches, outs)."""
  return jax.block_until_ready(cc.sweep(config, stacked, cache0, stream))


def cache_sweep_reference(config, params_list, stream):
  """The same sweep through the plain-Python reference."""
  return ccr.sweep(config, params_list, stream)
