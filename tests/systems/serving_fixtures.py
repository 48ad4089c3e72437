"""Small serving workloads and parameters shared by the serving tests."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
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


# --------------------------------------------- jitted engine vs reference on one workload
# A HyGen predictor in seconds, roughly Llama-3.1-8B on an A100 (the decisions only need it
# fixed).
HYGEN_COEF = np.array([0.012, 8.0e-5, 2.0e-9, 1.0e-3, 1.5e-4, 9.0e-8])


@functools.lru_cache(maxsize=4)
def reference_noise(n_steps, seed):
  """The batch-time noise draws the jitted engine makes at steps 0..n_steps-1 (fold_in of the
  step into the run's key), for the reference's `eps`."""
  key = jax.random.key(seed)
  draw = lambda s: jax.random.normal(jax.random.fold_in(key, s), dtype=jnp.float64)  # noqa: E731
  return np.asarray(jax.jit(jax.vmap(draw))(jnp.arange(n_steps)))


def queue_policies():
  """The policies of the offline-stream and prefix-sharing equality tests, by reference name."""
  from jaxsys.scheduling import baselines, hygen

  return {"fcfs": baselines.fcfs(), "sarathi": baselines.sarathi(), "hygen": hygen.hygen(window=8)}


def run_both(env, policy, name, wl, params, seed, pp=None):
  """One workload through the jitted engine and the reference (policy `name`; HyGen gets
  HYGEN_COEF, window 8 and the extra params `pp`). Returns (jitted state, reference dict)."""
  from jaxsys.lib import sim
  from jaxsys.scheduling import hygen
  from jaxsys.systems import llm_serving_reference as reference

  pparams = () if name != "hygen" else hygen.params(params, HYGEN_COEF, **(pp or {}))
  state, _ = sim.rollout(
    env, policy, params, pparams, jax.random.key(seed), wl, chunk_steps=200, max_steps=40_000
  )
  ref_pp = dict(coef=HYGEN_COEF, window=8, **(pp or {})) if name == "hygen" else {}
  ref = reference.simulate(
    wl, env.config, params, name, ref_pp, eps=reference_noise(20_000, seed), max_steps=20_000
  )
  return state, ref


def assert_same(state, ref, wl, label, counters=()):
  """Every request finished (or dropped) alike; times to 1e-9 s; preemptions, offline tokens
  and the named State counters exactly."""
  out = jax.tree.map(np.asarray, state.outputs)
  assert int(state.n_finished) == wl.n_total == ref["n_finished"], label
  assert int(state.n_dropped) == ref["n_dropped"], label
  assert float(state.offline_tokens) == ref["offline_tokens"], label
  assert float(state.tokens) == ref["tokens"], label
  for field in ("finish_t", "ttft", "tbt_max", "release"):
    np.testing.assert_allclose(
      getattr(out, field), ref[field], rtol=1e-9, atol=1e-9, err_msg=f"{label} {field}"
    )
  np.testing.assert_array_equal(out.n_preempt, ref["n_preempt"], err_msg=label)
  for name in counters:
    assert float(getattr(state, name)) == ref[name], f"{label} {name}"


def run_checking_every_step(env, policy, params, pp, wl, check, max_steps=3000):
  """Steps one jitted iteration at a time until every request finished, asserting
  `check(before, after) -> (bool[k], names)` after each (and on the initial state). Returns
  the final state."""
  wl = jax.device_put(wl)  # closed over by the jitted step: device arrays, not numpy

  @jax.jit
  def one(state, pstate):
    key = jax.random.fold_in(state.key, state.step)
    action, pstate = policy.act(key, pstate, env.observe(state), pp)
    after = env.step(key, state, action, params, wl)
    return after, pstate, check(state, after)[0]

  state = env.init(jax.random.key(0), params, wl)
  pstate = policy.init(pp, env.observe(state))
  ok, names = check(state, state)
  assert np.asarray(ok).all(), [n for n, v in zip(names, np.asarray(ok), strict=True) if not v]
  for _ in range(max_steps):
    state, pstate, ok = one(state, pstate)
    ok = np.asarray(ok)
    assert ok.all(), [n for n, v in zip(names, ok, strict=True) if not v]
    if int(state.n_finished) == wl.n_total:
      break
  assert int(state.n_finished) == wl.n_total
  return state
