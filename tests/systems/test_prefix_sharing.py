"""Shared-prefix KV caching (EnvConfig.n_prefixes > 0, docs "Shared prefixes"): the jitted
engine equals the reference, block and refcount invariants hold after every step, sharing saves
prefill work, n_prefixes = 0 leaves every result unchanged, and a hand-worked case.

The equality property test (60 random workloads, ~70 s on a 2-core CPU) is marked slow; the
rest takes ~45 s.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxsys.lib import sim
from jaxsys.scheduling import baselines, hygen
from jaxsys.systems import llm_serving as ls
from jaxsys.systems import llm_serving_reference as reference
from jaxsys.systems import workloads
from tests.systems import serving_fixtures
from tests.systems.serving_fixtures import mixed_workload, small_params, small_workload

N_PREFIXES = 6
ENV = {
  m: ls.make(ls.EnvConfig(n_slots=24, admit_max=3, macro_steps=m, n_prefixes=N_PREFIXES))
  for m in (1, 16)
}
POLICIES = serving_fixtures.queue_policies()
COEF = serving_fixtures.HYGEN_COEF
COUNTERS = ("prefix_hits", "prefix_tokens_saved", "prefix_evictions")


def _mmlu_workload(seed, n_online=8, n_offline=20, n_groups=4, rate=30.0):
  """A few online requests plus an MMLU-like pool (~600-token prefixes) of `n_groups` groups,
  half available at t0 and half within the online span."""
  rng = np.random.default_rng(seed + 17)
  online = small_workload(seed, n=n_online, rate=rate, dag_jobs=0)
  avail = np.where(rng.random(n_offline) < 0.5, 0.0, rng.uniform(0, online.arrival[-1], n_offline))
  pool = workloads.offline_pool(rng, n_offline, "mmlu", available=avail, n_groups=n_groups)
  return workloads.co_locate(online, pool)


def _run_both(name, wl, params, macro, seed, pp=None):
  return serving_fixtures.run_both(ENV[macro], POLICIES[name], name, wl, params, seed, pp)


def _assert_same(state, ref, wl, label):
  serving_fixtures.assert_same(state, ref, wl, label, COUNTERS)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
  seed=st.integers(0, 100_000),
  kind=st.sampled_from(["mixed", "mmlu"]),
  policy=st.sampled_from(list(POLICIES)),
  blocks=st.integers(0, 260),
  budget=st.integers(16, 400),
  sigma=st.sampled_from([0.0, 0.3]),
  macro=st.sampled_from([1, 16]),
  quota=st.integers(1, 6),
  stop=st.sampled_from([np.inf, 1.0]),
  budget_s=st.sampled_from([np.inf, 0.05]),
)
def test_matches_reference(seed, kind, policy, blocks, budget, sigma, macro, quota, stop, budget_s):
  """Tight memory (down to a few blocks above the longest prompt) forces evictions and
  preemptions; 60 workloads over fcfs, sarathi and hygen, 1 or 16 iterations per step."""
  wl = mixed_workload(seed, n_offline=16) if kind == "mixed" else _mmlu_workload(seed)
  longest = -(-int(np.max(wl.prompt_len + wl.out_len)) // ls.BLOCK_SIZE)
  params = small_params(
    num_blocks=longest + 4 + blocks,
    token_budget=budget,
    max_seqs=4,
    noise_sigma=sigma,
    offline_slots=quota,
    offline_stop=stop,
  )
  pp = dict(latency_budget=budget_s) if policy == "hygen" else None
  state, ref = _run_both(policy, wl, params, macro, seed, pp)
  _assert_same(state, ref, wl, f"{policy} {kind} macro={macro}")


def test_matches_reference_with_evictions():
  """Fixed cases (not slow) that evict, preempt and attach in both engines."""
  seen = {"hits": 0, "evictions": 0, "preempt": 0}
  for seed, macro, name in [(5, 16, "hygen"), (8, 1, "fcfs")]:
    wl = _mmlu_workload(seed)
    longest = -(-int(np.max(wl.prompt_len + wl.out_len)) // ls.BLOCK_SIZE)
    params = small_params(num_blocks=longest + 30, token_budget=200, max_seqs=4, offline_slots=4)
    state, ref = _run_both(name, wl, params, macro, seed, dict(latency_budget=0.05))
    _assert_same(state, ref, wl, f"{name} seed={seed}")
    seen["hits"] += ref["prefix_hits"]
    seen["evictions"] += ref["prefix_evictions"]
    seen["preempt"] += ref["n_mem_preempt"] + ref["n_policy_preempt"]
  assert all(v > 0 for v in seen.values()), seen


def _invariants(state, params):
  sl, table = state.slots, state.prefixes
  live = sl.wid >= 0
  attached = sl.prefix_blocks > 0
  g = jnp.clip(sl.prefix_id, 0, N_PREFIXES - 1)
  refs = jnp.zeros(N_PREFIXES, jnp.int32).at[jnp.where(attached, g, N_PREFIXES)].add(1, mode="drop")
  held = sl.kv_blocks + sl.prefix_blocks
  checks = {
    "blocks conserved": state.free_blocks + jnp.sum(sl.kv_blocks) + jnp.sum(table.blocks)
    == params.num_blocks,
    "free blocks >= 0": state.free_blocks >= 0,
    "own blocks >= 0": jnp.all(sl.kv_blocks >= 0),
    "refcount = attached requests": jnp.all(refs == table.refs),
    "no refcount < 0": jnp.all(table.refs >= 0),
    "referenced prefixes are resident": jnp.all((table.refs == 0) | (table.blocks > 0)),
    "resident prefixes hold b_p blocks": jnp.all(
      (table.blocks == 0) | (table.blocks == table.tokens // ls.BLOCK_SIZE)
    ),
    "attached to a resident prefix": jnp.all(
      ~attached | (live & (sl.prefix_blocks == table.blocks[g]))
    ),
    "attached past the prefix": jnp.all(~attached | (sl.prefilled >= table.tokens[g])),
    # KV is allocated exactly: own + shared blocks cover the prefilled tokens
    "held = ceil(prefilled / 16)": jnp.all(
      ~live | (held == (sl.prefilled + ls.BLOCK_SIZE - 1) // ls.BLOCK_SIZE)
    ),
  }
  return jnp.stack(list(checks.values())), list(checks)


@pytest.mark.parametrize("macro,name,seed,extra", [(1, "sarathi", 21, 20), (16, "hygen", 4, 40)])
def test_invariants_after_every_step(macro, name, seed, extra):
  wl = _mmlu_workload(seed, n_offline=24)
  longest = -(-int(np.max(wl.prompt_len + wl.out_len)) // ls.BLOCK_SIZE)
  params = small_params(
    num_blocks=longest + extra, max_seqs=4, token_budget=160, offline_slots=4, offline_stop=3.0
  )
  pp = () if name == "sarathi" else hygen.params(params, COEF, latency_budget=0.05)
  state = serving_fixtures.run_checking_every_step(
    ENV[macro], POLICIES[name], params, pp, wl, lambda _, after: _invariants(after, params)
  )
  assert int(state.prefix_hits) > 0 and int(state.prefix_evictions) > 0


def test_reference_invariants_after_every_step():
  wl = _mmlu_workload(4, n_offline=24)
  longest = -(-int(np.max(wl.prompt_len + wl.out_len)) // ls.BLOCK_SIZE)
  params = small_params(num_blocks=longest + 40, max_seqs=4, token_budget=160, offline_slots=4)
  bad = []

  def trace(step, t, free, table, prefixes):
    refs = {}
    for _, _, _, _, _, pid, pb in table.values():
      if pb:
        refs[pid] = refs.get(pid, 0) + 1
        if prefixes[pid][0] != pb:
          bad.append((step, "shared blocks differ from the resident prefix"))
    own = sum(entry[4] for entry in table.values())
    if free + own + sum(e[0] for e in prefixes.values()) != params.num_blocks:
      bad.append((step, "blocks not conserved"))
    if any(e[1] != refs.get(g, 0) or e[0] <= 0 for g, e in prefixes.items()):
      bad.append((step, "refcount or resident blocks wrong"))

  res = reference.simulate(wl, ENV[1].config, params, "sarathi", trace=trace)
  assert not bad, bad[:3]
  assert res["n_finished"] == wl.n_total and res["prefix_evictions"] > 0


def test_sharing_saves_work():
  """MMLU-like pool with a few online rows: the same requests finish, fewer prefill tokens are
  computed (by exactly the tokens saved) and the makespan drops."""
  wl = _mmlu_workload(7, n_online=4, n_offline=160, n_groups=12, rate=5.0)
  params = small_params(num_blocks=3000, max_seqs=16, token_budget=512, offline_slots=16)
  runs = {}
  for n_prefixes in (0, 12):
    env = ls.make(ls.EnvConfig(n_slots=32, admit_max=8, macro_steps=16, n_prefixes=n_prefixes))
    runs[n_prefixes] = sim.rollout(env, POLICIES["sarathi"], params, (), jax.random.key(0), wl)[0]
  off, on = runs[0], runs[12]
  assert int(off.n_finished) == int(on.n_finished) == wl.n_total
  assert int(off.n_dropped) == int(on.n_dropped) == 0
  assert np.all(np.isfinite(np.asarray(on.outputs.finish_t)))
  saved = float(on.prefix_tokens_saved)
  assert int(on.prefix_hits) >= 100 and saved > 0.5 * float(off.offline_tokens)
  assert float(on.tokens) == float(off.tokens) - saved  # no preemption: exact accounting
  assert float(on.offline_tokens) == float(off.offline_tokens) - saved
  assert float(on.t) < 0.7 * float(off.t)
  assert int(off.prefix_hits) == int(off.prefix_evictions) == 0


def test_sharing_off_is_unchanged():
  """n_prefixes = 0 ignores the prefix fields; n_prefixes > 0 with prefixes shorter than a block
  (nothing to share) runs the new code path to bit-identical results."""
  wl = mixed_workload(9, n_offline=16)
  short = wl.replace(prefix_len=np.where(wl.prefix_id >= 0, 15, 0).astype(np.int32))
  params = small_params(num_blocks=50, max_seqs=4, offline_slots=3, noise_sigma=0.3)
  plain = ls.make(ls.EnvConfig(n_slots=24, admit_max=3, macro_steps=16))
  off, _ = sim.rollout(plain, POLICIES["sarathi"], params, (), jax.random.key(0), wl)
  on, _ = sim.rollout(ENV[16], POLICIES["sarathi"], params, (), jax.random.key(0), short)
  assert off.prefixes.blocks.shape == (0,) and int(off.n_finished) == wl.n_total
  assert int(off.n_mem_preempt) > 0  # memory is tight enough to matter
  for a, b in zip(jax.tree.leaves(off.outputs), jax.tree.leaves(on.outputs), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for field in ("t", "step", "tokens", "busy_time", "n_mem_preempt", "free_blocks"):
    assert float(getattr(off, field)) == float(getattr(on, field)), field
  assert int(on.prefix_hits) == int(on.prefix_evictions) == 0


def _tiny_workload():
  """Four offline requests available at t0: A, B, C of group 0 (prefix 40 tokens: s_p = 32,
  two blocks) with 50-token prompts, then D of group 1 (prefix 40) with a 120-token prompt."""
  wl = workloads.make_requests(None, np.zeros(4), [50, 50, 50, 120], [1, 1, 1, 1])
  return workloads.validate(
    wl.replace(
      cls=np.full(4, workloads.OFFLINE, np.int32),
      slo_ttft=np.full(4, np.inf),
      slo_tbt=np.full(4, np.inf),
      deadline=np.full(4, np.inf),
      prefix_id=np.array([0, 0, 0, 1], np.int32),
      prefix_len=np.full(4, 40, np.int32),
    )
  )


def test_hand_worked_case():
  """8 KV blocks, one request per iteration, FCFS, 64-token budget:
  it. 1: A prefills 50 tokens (4 blocks), finishes, publishes group 0 (2 blocks, kept cached);
     B and C attach at its end (prefilled 32, 2 hits, 64 tokens saved);
  it. 2, 3: B, C prefill 18 tokens each (2 own blocks) and finish; group 0 unreferenced;
  it. 4: D's first chunk, 64 tokens (4 blocks; free 6 -> 2);
  it. 5: D's last 56 tokens need 4 blocks: stall;
  it. 6: memory short -> group 0 evicted (free 4) instead of preempting D; D finishes and
     publishes group 1."""
  wl = _tiny_workload()
  config = ls.EnvConfig(n_slots=4, admit_max=4, n_prefixes=2)
  params = small_params(num_blocks=8, token_budget=64, max_seqs=1)
  log = []
  res = reference.simulate(
    wl, config, params, "fcfs", trace=lambda *a: log.append((a[2], a[3], dict(a[4])))
  )
  assert res["n_finished"] == 4 and res["steps"] == 6
  assert (res["prefix_hits"], res["prefix_tokens_saved"], res["prefix_evictions"]) == (2, 64, 1)
  assert res["tokens"] == 50 + 18 + 18 + 120 and res["n_mem_preempt"] == 0
  free, _, prefixes = log[0]  # after it. 1: A done, its prefix cached unreferenced
  assert free == 6 and prefixes[0][:2] == (2, 0)
  _, table, prefixes = log[1]  # after it. 2: B done; C attached at prefilled 32
  assert prefixes[0][:2] == (2, 1) and table[2][2] == 32 and table[2][6] == 2
  free, table, prefixes = log[3]  # after it. 4: D's first chunk
  assert free == 2 and table[3][2] == 64 and prefixes[0][:2] == (2, 0)
  free, _, prefixes = log[4]  # it. 5 stalls
  assert free == 2 and 0 in prefixes
  free, _, prefixes = log[5]  # it. 6: group 0 evicted, D done, group 1 published and cached
  assert free == 6 and set(prefixes) == {1} and prefixes[1][:2] == (2, 0)
  # The jitted engine tells the same story.
  state, _ = sim.rollout(ls.make(config), baselines.fcfs(), params, (), jax.random.key(0), wl)
  np.testing.assert_allclose(np.asarray(state.outputs.finish_t), res["finish_t"], rtol=1e-12)
  assert [int(state.prefix_hits), float(state.prefix_tokens_saved)] == [2, 64.0]
  assert int(state.prefix_evictions) == 1 and int(state.free_blocks) == 6
  np.testing.assert_array_equal(np.asarray(state.prefixes.blocks), [0, 2])


def test_group_out_of_range_is_rejected():
  wl = _tiny_workload()
  config = ls.EnvConfig(n_slots=4, admit_max=4, n_prefixes=1)
  params = small_params(num_blocks=8, token_budget=64, max_seqs=1)
  with pytest.raises(ValueError, match="n_prefixes"):
    ls.make(config).init(jax.random.key(0), params, wl)
  with pytest.raises(ValueError, match="n_prefixes"):
    reference.simulate(wl, config, params, "fcfs")
  with pytest.raises(ValueError, match="n_prefixes"):  # the driver checks on the host
    sim.rollout(ls.make(config), baselines.fcfs(), params, (), jax.random.key(0), wl)
  with pytest.raises(ValueError, match="n_prefixes"):
    ls.make(ls.EnvConfig(n_prefixes=-1))
  ls.make(ls.EnvConfig(n_slots=4, admit_max=4)).init(jax.random.key(0), params, wl)  # off: fine
