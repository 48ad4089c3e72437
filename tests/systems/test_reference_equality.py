"""The jitted engine and the plain-Python reference give the same per-request results."""

from __future__ import annotations

import jax
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxsys.lib import sim
from jaxsys.scheduling import baselines, common, tempo
from jaxsys.systems import llm_serving as ls
from jaxsys.systems import llm_serving_reference as reference
from tests.systems import serving_fixtures
from tests.systems.serving_fixtures import small_params, small_workload

EDGES = np.array([64.0, 256.0], np.float32)
TABLE = np.array([[20, 30, 60, 60], [25, 40, 60, 60], [30, 45, 60, 60]], np.float32)
PLAN_EVERY = 10
ENV = {
  (chunked, macro): ls.make(
    ls.EnvConfig(n_slots=24, admit_max=3, chunked_prefill=chunked, macro_steps=macro)
  )
  for chunked in (True, False)
  for macro in (1, 16)
}
POLICIES = {
  "fcfs": (baselines.fcfs(), lambda wl: (), {}),
  "ltr": (
    baselines.ltr(),
    lambda wl: common.LengthBound.from_table(EDGES, TABLE, 20),
    {"edges": EDGES, "table": TABLE, "mark_every": 20},
  ),
  "tempo": (
    tempo.tempo(plan_every=PLAN_EVERY),
    lambda wl: tempo.default_params(common.LengthBound.from_table(EDGES, TABLE, 20), batch=4),
    {"edges": EDGES, "table": TABLE, "mark_every": 20, "batch": 4, "plan_every": PLAN_EVERY},
  ),
}


_noise = serving_fixtures.reference_noise


def _compare(name, seed, blocks, budget, chunked, sigma, macro, resident=1 << 30, dag_jobs=1):
  policy, make_pparams, ref_pp = POLICIES[name]
  wl = small_workload(seed, n=18, rate=30.0, dag_jobs=dag_jobs)
  budget = budget if chunked else max(budget, 700)
  params = small_params(
    num_blocks=blocks, token_budget=budget, max_seqs=4, noise_sigma=sigma, max_resident=resident
  )
  env = ENV[chunked, macro]
  state, _ = sim.rollout(
    env, policy, params, make_pparams(wl), jax.random.key(seed), wl, chunk_steps=200
  )
  ref = reference.simulate(
    wl, env.config, params, name, ref_pp, eps=_noise(20_000, seed), max_steps=20_000
  )
  out = jax.tree.map(np.asarray, state.outputs)
  assert int(state.n_finished) == wl.n_total == ref["n_finished"]
  for field in ("finish_t", "ttft", "tbt_max", "release"):
    np.testing.assert_allclose(
      out.__getattribute__(field), ref[field], rtol=1e-9, atol=1e-9, err_msg=f"{name} {field}"
    )
  np.testing.assert_allclose(out.gain, ref["gain"], rtol=1e-7, atol=1e-9)
  np.testing.assert_array_equal(out.n_preempt, ref["n_preempt"])


SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CASES = dict(
  seed=st.integers(0, 100_000),
  blocks=st.integers(50, 400),
  budget=st.integers(16, 400),
  chunked=st.booleans(),
  sigma=st.sampled_from([0.0, 0.3]),
  macro=st.sampled_from([1, 16]),  # one iteration per step, or macro-steps of up to 16
  resident=st.sampled_from([1 << 30, 3]),  # KV holders unbounded, or at most 3 (vLLM-like)
)


@SETTINGS
@given(**CASES)
def test_fcfs_matches_reference(seed, blocks, budget, chunked, sigma, macro, resident):
  _compare("fcfs", seed, blocks, budget, chunked, sigma, macro, resident)


@SETTINGS
@given(**CASES)
def test_ltr_matches_reference(seed, blocks, budget, chunked, sigma, macro, resident):
  _compare("ltr", seed, blocks, budget, chunked, sigma, macro, resident)


@SETTINGS
@given(**CASES)
def test_tempo_matches_reference(seed, blocks, budget, chunked, sigma, macro, resident):
  _compare("tempo", seed, blocks, budget, chunked, sigma, macro, resident)
