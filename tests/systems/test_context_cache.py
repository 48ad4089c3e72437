"""EchoLM's in-context cache: jitted == plain-Python reference, invariants, sweep, no retrace."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.systems import context_cache as cc
from jaxsys.systems import context_cache_reference as ref

CONFIG = cc.CacheConfig(capacity=12, dim=8, top_k=5, k_max=3, n_replay=2)


def _params(rng):
  return cc.random_params(rng, CONFIG)


def _stream(seed, n=40):
  rng = np.random.default_rng(seed)
  return cc.random_stream(rng, CONFIG, n, n_topics=int(rng.integers(2, 8))), _params(rng)


def _check_equal(stream, params, seed):
  cache, out = cc.process_stream(CONFIG, params, cc.init(CONFIG, jnp.float64), stream)
  state, routs = ref.process_stream(CONFIG, params, stream)
  out = jax.tree.map(np.asarray, out)
  for name in ("ids", "chosen", "n_chosen", "ex_tokens", "slot", "evicted", "replayed"):
    want = np.asarray([r[name] for r in routs])
    np.testing.assert_array_equal(getattr(out, name), want, err_msg=f"seed {seed}: {name}")
  np.testing.assert_array_equal(out.replay_tokens, [r["replay_tokens"] for r in routs])
  np.testing.assert_allclose(out.sims, [r["sims"] for r in routs], rtol=1e-12, atol=1e-12)
  for name, want in state.items():
    got = np.asarray(getattr(cache, name))
    if got.dtype.kind == "f":
      np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=f"seed {seed}: {name}")
    else:
      np.testing.assert_array_equal(got, want, err_msg=f"seed {seed}: {name}")
  return cache, out, state


def test_jitted_equals_reference_on_60_random_streams():
  evictions = replays = chosen = 0
  for seed in range(60):
    stream, params = _stream(seed)
    cache, out, _ = _check_equal(stream, params, seed)
    evictions += int(cache.n_evict)
    replays += int(cache.n_replay)
    chosen += int(out.n_chosen.sum())
  # the streams exercise every mechanism, not only the easy paths
  assert evictions > 100 and replays > 50 and chosen > 300


def test_invariants():
  for seed in range(20):
    stream, params = _stream(100 + seed)
    cache, out = cc.process_stream(CONFIG, params, cc.init(CONFIG, jnp.float64), stream)
    out = jax.tree.map(np.asarray, out)
    assert int(cache.valid.sum()) <= int(params.active)
    assert not np.asarray(cache.valid)[int(params.active) :].any()
    assert (out.ex_tokens <= params.token_cap).all()
    assert (out.n_chosen <= CONFIG.k_max).all()
    assert (out.n_chosen[~np.asarray(stream.use_examples)] == 0).all()
    # sims come best first; chosen rows are distinct retrieved rows
    s = np.where(np.isfinite(out.sims), out.sims, -9.0)
    assert (np.diff(s, axis=1) <= 1e-12).all()
    for i in range(len(stream.t)):
      c = out.chosen[i][out.chosen[i] >= 0]
      assert len(set(c)) == len(c) and set(c) <= set(out.ids[i])


def test_evicted_entry_is_the_argmin():
  """Replays the stream step by step and checks each eviction against the decayed scores."""
  stream, params = _stream(7, n=60)
  params = params.replace(active=6)
  cache = cc.init(CONFIG, jnp.float64)
  step = jax.jit(cc.step, static_argnums=0)
  seen = 0
  for i in range(len(stream.t)):
    req = cc.Request(*(np.asarray(f)[i] for f in stream))
    # the score the insert sees: after this request's examples were marked used
    ids, sims = cc.retrieve(cache, params, CONFIG, req.emb)
    ch, cu, _, _ = cc.select_examples(cache, params, CONFIG, ids, sims, req.use_examples)
    score = np.asarray(cc.evict_score(cc.mark_used(cache, params, ch, cu, req.t), params, req.t))
    cache, out = step(CONFIG, params, cache, req)
    if int(out.evicted) >= 0:
      seen += 1
      assert int(out.evicted) == int(np.argmin(score))
      assert score[int(out.evicted)] == pytest.approx(score.min())
  assert seen > 10


def test_sweep_over_cache_size_equals_separate_runs_and_reference():
  stream, params = _stream(3, n=50)
  sizes = [2, 5, 12]
  stacked = jax.tree.map(
    lambda *x: jnp.stack([jnp.asarray(v) for v in x]),
    *[params.replace(active=s) for s in sizes],
  )
  caches, outs = cc.sweep(CONFIG, stacked, cc.init(CONFIG, jnp.float64), stream)
  refs = ref.sweep(CONFIG, [params.replace(active=s) for s in sizes], stream)
  for j, s in enumerate(sizes):
    one_cache, one_out = cc.process_stream(
      CONFIG, params.replace(active=s), cc.init(CONFIG, jnp.float64), stream
    )
    np.testing.assert_array_equal(np.asarray(outs.chosen)[j], np.asarray(one_out.chosen))
    np.testing.assert_array_equal(np.asarray(caches.valid)[j], np.asarray(one_cache.valid))
    np.testing.assert_array_equal(np.asarray(outs.evicted)[j], [r["evicted"] for r in refs[j][1]])
  # a bigger cache keeps more entries and evicts less
  assert np.asarray(caches.n_evict).tolist() == sorted(np.asarray(caches.n_evict).tolist())[::-1]


def test_no_retrace_and_empty_cache():
  config = cc.CacheConfig(capacity=6, dim=4, top_k=3, k_max=2)
  stream = cc.random_stream(np.random.default_rng(0), config, 10)
  counted = chex.assert_max_traces(n=1)(cc.step)
  run = jax.jit(lambda p, c, s: jax.lax.scan(lambda c, r: counted(config, p, c, r), c, s))
  for a in (3, 6):
    run(cc.CacheParams(active=a), cc.init(config, jnp.float64), stream)
  ids, sims = cc.retrieve(cc.init(config), cc.CacheParams(), config, jnp.ones(4) / 2)
  assert (np.asarray(ids) == -1).all() and np.isneginf(np.asarray(sims)).all()
