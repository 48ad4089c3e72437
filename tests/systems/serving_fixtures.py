"""Small serving workloads and parameters shared by the serving tests."""

from __future__ import annotations

import numpy as np

from jaxsys.systems import llm_serving as ls
from jaxsys.systems import timing
from jaxsys.systems.workloads import Workload

LLAMA8B_A100 = timing.TimeCoef(
  n_params=8.03e9, n_layers=32, d_model=4096, d_kv=1024, flops=312e12, bandwidth=2.039e12
)


def small_workload(seed, n=40, rate=20.0, max_prompt=600, max_out=60, dag_jobs=0, n_clients=3):
  """Plain requests of all three classes plus optional fan-out DAG jobs [1, 2, 1]."""
  rng = np.random.default_rng(seed)
  arrival = np.sort(rng.exponential(1.0 / rate, n).cumsum())
  prompt = rng.integers(1, max_prompt, n).astype(np.int32)
  out = rng.integers(1, max_out, n).astype(np.int32)
  cls = rng.integers(0, 2, n).astype(np.int32)
  fields = dict(
    arrival=arrival,
    prompt_len=prompt,
    out_len=out,
    cls=cls,
    slo_ttft=rng.uniform(0.05, 1.0, n),
    slo_tbt=rng.uniform(0.01, 0.1, n),
    deadline=rng.uniform(0.5, 5.0, n),
    job_id=np.full(n, -1, np.int32),
    stage=np.zeros(n, np.int32),
    client_id=rng.integers(0, n_clients, n).astype(np.int32),
  )
  jobs = dict(
    job_arrival=np.zeros(max(dag_jobs, 1)),
    job_deadline=np.full(max(dag_jobs, 1), 1e9),
    n_stages=np.ones(max(dag_jobs, 1), np.int32),
    width=np.zeros((max(dag_jobs, 1), 3), np.int32),
  )
  if dag_jobs:
    jobs["width"][:] = [1, 2, 1]
    jobs["n_stages"][:] = 3
    jobs["job_arrival"] = np.sort(rng.uniform(0, arrival[-1], dag_jobs))
    jobs["job_deadline"] = rng.uniform(1.0, 8.0, dag_jobs)
    rows = []
    for j in range(dag_jobs):
      for s, w in enumerate((1, 2, 1)):
        for _ in range(w):
          rows.append((jobs["job_arrival"][j], j, s))
    m = len(rows)
    extra = dict(
      arrival=np.array([r[0] for r in rows]),
      prompt_len=rng.integers(1, max_prompt, m).astype(np.int32),
      out_len=rng.integers(1, max_out, m).astype(np.int32),
      cls=np.full(m, 2, np.int32),
      slo_ttft=np.ones(m),
      slo_tbt=np.ones(m),
      deadline=np.array([jobs["job_deadline"][r[1]] for r in rows]),
      job_id=np.array([r[1] for r in rows], np.int32),
      stage=np.array([r[2] for r in rows], np.int32),
      client_id=rng.integers(0, n_clients, m).astype(np.int32),
    )
    merged = {k: np.concatenate([fields[k], extra[k]]) for k in fields}
    order = np.argsort(merged["arrival"], kind="stable")
    fields = {k: v[order] for k, v in merged.items()}
  return Workload(**fields, **jobs)


def small_params(**kw):
  base = dict(token_budget=256, max_seqs=8, num_blocks=400, time_coef=LLAMA8B_A100)
  base.update(kw)
  return ls.EnvParams(**base)


def mixed_workload(seed, n_online=14, n_offline=10, rate=30.0, dag_jobs=1, max_prompt=600):
  """`small_workload` followed by an offline stream (class 3) in a random host order.

  Offline rows: half available at t0, the others at random times within the online span;
  about half share one of three prefixes (prefix_id, prefix_len), the rest have none.
  """
  from jaxsys.systems import workloads

  wl = small_workload(seed, n=n_online, rate=rate, dag_jobs=dag_jobs, max_prompt=max_prompt)
  rng = np.random.default_rng(seed + 7919)
  span = float(wl.arrival[-1])
  avail = np.where(rng.random(n_offline) < 0.5, 0.0, rng.uniform(0.0, span, n_offline))
  pid = np.where(rng.random(n_offline) < 0.5, rng.integers(0, 3, n_offline), -1)
  group_len = rng.integers(16, 200, 3)
  plen = np.where(pid >= 0, group_len[np.maximum(pid, 0)], 0)
  prompt = plen + rng.integers(1, max_prompt // 2, n_offline)
  pool = dict(
    arrival=avail,
    prompt_len=prompt,
    out_len=rng.integers(1, 40, n_offline),
    prefix_id=pid,
    prefix_len=plen,
  )
  return workloads.co_locate(wl, pool)
