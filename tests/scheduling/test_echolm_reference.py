"""EchoLM routing: jitted `echolm.route` == plain-Python `echolm_reference.route`, conservation.

84 seeded random cases (12 per policy kind, two cache shapes, random cache contents, router and
cache parameters, load, replay on/off), all in float64: arms, example rows, quality draws and
replays must agree exactly, floats to 1e-9 relative.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.scheduling import echolm as el
from jaxsys.scheduling import echolm_reference as er
from jaxsys.systems import context_cache as cc

# two static cache shapes (each is one compile per kind); `active` varies the usable size
CONFIGS = (
  (cc.CacheConfig(capacity=16, dim=8, top_k=5, k_max=3, n_replay=2), 64),
  (cc.CacheConfig(capacity=8, dim=8, top_k=8, k_max=1, n_replay=1), 48),
)
N_CASES = 12 * len(el.KINDS)
EXACT = ("arm", "n_examples", "ex_tokens", "good", "replay_prompt", "replay_out")
CLOSE = ("sim_max", "q_pred", "p_good", "backlog", "latency_est")


@functools.partial(jax.jit, static_argnums=0)
def _route_with_chosen(config, params, stream, cache0):
  """`echolm.route`, plus the cache rows each request prepended ([N, k_max], -1 padding).

  RouteOut does not carry the rows, so each step re-runs the (deterministic) retrieval and
  choice on the cache the step starts from, then calls the unchanged `echolm._step`.
  """

  def step(st, req):
    ids, sims = cc.retrieve(st.cache, params.cache, config.cache, req["emb"])
    chosen, _, _, _ = cc.select_examples(st.cache, params.cache, config.cache, ids, sims)
    st, out = el._step(config, params, st, req)
    return st, (out, jnp.where(out.arm == el.SMALL_EX, chosen, -1))

  zero_t = jnp.zeros((), stream.arrival.dtype)
  st0 = el.RouteState(cache0, jnp.zeros(2, params.prefill_s.dtype), zero_t, el.linucb_init())
  return jax.lax.scan(step, st0, stream._asdict())


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _cache0(rng, config, topics, p_empty=0.4):
  """An empty table, or one with random rows near the stream's topics (counters included)."""
  cache = cc.init(config, jnp.float64)
  if rng.random() < p_empty:
    return cache
  m = config.capacity
  j = rng.integers(0, len(topics), m)
  return cache.replace(
    emb=jnp.asarray(_unit(topics[j] + rng.uniform(0, 0.5) * rng.standard_normal(topics[j].shape))),
    req_len=jnp.asarray(rng.integers(1, 300, m), jnp.int32),
    resp_len=jnp.asarray(rng.integers(1, 300, m), jnp.int32),
    quality=jnp.asarray(rng.choice([0.0, 0.5, 1.0], m)),
    uses=jnp.asarray(rng.integers(0, 6, m), jnp.int32),
    last_use=jnp.asarray(-rng.exponential(2.0, m)),
    utility_ema=jnp.asarray(rng.uniform(0, 0.6, m)),
    valid=jnp.asarray(rng.random(m) < 0.8),
    src=jnp.asarray(np.where(rng.random(m) < 0.5, j, 500 + np.arange(m)), jnp.int32),
    n_insert=jnp.int32(rng.integers(0, 50)),
    n_evict=jnp.int32(rng.integers(0, 20)),
    n_replay=jnp.int32(rng.integers(0, 9)),
  )


def _case(seed):
  """(RouteConfig, RouterParams, Stream, cache0) of one random case; kind = KINDS[seed % 7]."""
  rng = np.random.default_rng(seed)
  kind = el.KINDS[seed % len(el.KINDS)]
  config, n = CONFIGS[(seed // len(el.KINDS)) % len(CONFIGS)]
  cparams = cc.random_params(rng, config, p_empty=0.08)
  params = el.RouterParams(
    arrival_scale=float(np.exp(rng.uniform(np.log(0.3), np.log(100.0)))),
    q_target=float(rng.uniform(0.3, 0.95)),
    queue_cap=float(rng.choice([0.0, rng.uniform(0.05, 1.0), rng.uniform(0.05, 3.0), 1e9])),
    tau=float(rng.uniform(0.5, 0.99)),
    strong_threshold=float(rng.uniform(0.2, 0.8)),
    alpha_ucb=float(rng.uniform(0.0, 1.5)),
    beta=float(rng.uniform(0.0, 3.0)),
    latency_norm=float(rng.uniform(0.5, 20.0)),
    idle_s=float(rng.choice([-1.0, rng.uniform(0.0, 2.0), 1e9])),
    replay=float(rng.random() < 0.7),
    hit_quality_other=float(rng.uniform(0.0, 0.5)),
    large_difficulty=float(rng.uniform(0.0, 1.0)),
    prefill_s=jnp.asarray([rng.uniform(1e-4, 4e-4), rng.uniform(1e-5, 5e-5)]),
    decode_s=jnp.asarray([rng.uniform(2e-4, 1e-3), rng.uniform(1e-4, 4e-4)]),
    quality=el.QualityModel(
      w=jnp.asarray(np.asarray(el.DEFAULT_QUALITY_W) + rng.normal(0, 1.0, 4)),
      q_large=float(rng.uniform(0.6, 0.95)),
    ),
    cache=cparams,
  )
  topics = _unit(rng.standard_normal((int(rng.integers(2, 8)), config.dim)))
  j = rng.integers(0, len(topics), n)
  repeat = rng.random(n) < rng.uniform(0.1, 0.6)  # verbatim repeats: exact-cache hits
  noise = rng.uniform(0.05, 0.8) * rng.standard_normal((n, config.dim))
  stream = el.Stream(
    emb=_unit(topics[j] + np.where(repeat[:, None], 0.0, noise)),
    prompt_len=rng.integers(1, 400, n).astype(np.int32),
    out_len=rng.integers(1, 400, n).astype(np.int32),
    arrival=np.cumsum(rng.exponential(rng.uniform(0.02, 1.0), n)),
    src=np.where(repeat, j, 1000 + np.arange(n)).astype(np.int32),
    difficulty=rng.normal(0.0, 1.0, n),
    rl_score=rng.random(n),
    u_quality=rng.random(n),
    u_replay=rng.random((n, config.n_replay)),
  )
  if kind == "echolm_threshold":  # tight caps and targets in range, so that every branch fires
    cap = rng.choice([0.0, rng.uniform(0.05, 1.0), rng.uniform(0.05, 1.0), 1e9])
    params = params.replace(queue_cap=float(cap), q_target=float(rng.uniform(0.3, 0.8)))
  p_empty = 0.1 if kind == "echolm_threshold" else 0.4
  return el.RouteConfig(kind, config), params, stream, _cache0(rng, config, topics, p_empty)


@pytest.fixture(scope="module")
def runs():
  """Per case: (case, jitted (final, out, chosen) as numpy, reference dict)."""
  res = []
  for seed in range(N_CASES):
    case = _case(seed)
    final, (out, chosen) = _route_with_chosen(*case)
    got = jax.tree.map(np.asarray, (final, out, chosen))
    res.append((case, got, er.route(*case)))
  return res


def test_jitted_equals_reference_on_84_random_cases(runs):
  for seed, (case, (final, out, chosen), ref) in enumerate(runs):
    msg = f"seed {seed} kind {case[0].kind}"
    for name in EXACT:
      np.testing.assert_array_equal(getattr(out, name), ref[name], err_msg=f"{msg}: {name}")
    np.testing.assert_array_equal(chosen, ref["chosen"], err_msg=f"{msg}: chosen")
    for name in CLOSE:
      got = getattr(out, name)
      np.testing.assert_allclose(got, ref[name], rtol=1e-9, atol=1e-12, err_msg=f"{msg}: {name}")
    np.testing.assert_allclose(final.backlog, ref["final_backlog"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(final.t, ref["final_t"], rtol=1e-12)
    np.testing.assert_allclose(final.lin.a, ref["lin_a"], rtol=1e-9, atol=1e-9, err_msg=msg)
    np.testing.assert_allclose(final.lin.b, ref["lin_b"], rtol=1e-9, atol=1e-9, err_msg=msg)
    for name, want in ref["cache"].items():
      got = getattr(final.cache, name)
      if got.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=f"{msg}: {name}")
      else:
        np.testing.assert_array_equal(got, want, err_msg=f"{msg}: cache.{name}")
  # the cases exercise every branch, not only the easy paths
  outs = [r[1][1] for r in runs]
  arms = np.concatenate([o.arm for o in outs])
  assert np.bincount(arms, minlength=4).min() > 300, np.bincount(arms, minlength=4)
  assert sum(int((r[1][2] >= 0).sum()) for r in runs) > 200  # example rows prepended
  assert sum(int(r[1][0].cache.n_evict - r[0][3].n_evict) for r in runs) > 500
  assert sum(int(r[1][0].cache.n_replay - r[0][3].n_replay) for r in runs) > 60
  by_kind = {k: [r[1][1].arm for r in runs if r[0][0].kind == k] for k in el.KINDS}
  assert sum(len(set(a.tolist())) == 3 for a in by_kind["echolm_linucb"]) >= 6
  assert sum(len(set(a.tolist())) == 3 for a in by_kind["echolm_threshold"]) >= 3
  # response-cache hits on the same question (stored quality) and on another one
  hit_p = np.concatenate([o.p_good[o.arm == el.HIT] for o in outs])
  assert (hit_p == 1.0).sum() > 30 and (hit_p < 0.5).sum() > 30


def test_public_route_equals_the_wrapper(runs):
  """`echolm.route` itself gives what the test's wrapper gave (one case per kind)."""
  for case, (final, out, _), _ in runs[: len(el.KINDS)]:
    f2, o2 = jax.tree.map(np.asarray, el.route(*case))
    for name in el.RouteOut._fields:
      np.testing.assert_allclose(getattr(o2, name), getattr(out, name), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(f2.backlog, final.backlog, rtol=1e-12)
    np.testing.assert_array_equal(f2.cache.uses, final.cache.uses)


def test_conservation(runs):
  """Each request one arm; backlogs >= 0; what a tier's backlog gains at a request is the work
  routed to it (the large tier: its requests plus the re-answers of the replay)."""
  for seed, (case, (final, out, _), ref) in enumerate(runs):
    config, params, stream, cache0 = case
    kind, n = config.kind, len(stream.arrival)
    msg = f"seed {seed} kind {kind}"
    assert out.arm.shape == (n,) and np.isin(out.arm, [0, 1, 2, 3]).all()
    assert kind in ("exact_cache", "semantic_cache") or not (out.arm == el.HIT).any()
    assert kind.startswith("echolm") or not (out.arm == el.SMALL_EX).any()
    assert (out.n_examples[out.arm != el.SMALL_EX] == 0).all()
    assert (out.ex_tokens <= int(params.cache.token_cap)).all()
    assert (out.backlog >= 0).all() and (ref["seen"] >= 0).all()
    pre, dec = np.asarray(params.prefill_s), np.asarray(params.decode_s)
    prompt, olen = stream.prompt_len.astype(float), stream.out_len.astype(float)
    large = out.arm == el.LARGE
    small = (out.arm == el.SMALL) | (out.arm == el.SMALL_EX)
    own0 = prompt * pre[0] + olen * dec[0]
    own1 = (prompt + out.ex_tokens) * pre[1] + olen * dec[1]
    replay = (out.replay_prompt * pre[0] + out.replay_out * dec[0]).sum(1)
    want = np.stack([large * own0 + replay, small * own1], 1)
    # the backlog each request saw: the previous one drained for the time in between
    t = stream.arrival / float(params.arrival_scale)
    prev = np.concatenate([np.zeros((1, 2)), out.backlog[:-1]])
    seen = np.maximum(prev - np.diff(t, prepend=0.0)[:, None], 0.0)
    np.testing.assert_allclose(out.backlog - seen, want, rtol=1e-9, atol=1e-9, err_msg=msg)
    np.testing.assert_allclose(ref["work_in"], want, rtol=1e-9, atol=1e-9, err_msg=msg)
    np.testing.assert_allclose(ref["seen"], seen, rtol=1e-9, atol=1e-9, err_msg=msg)
    # large tier in total: its routed requests plus the replays, nothing else
    np.testing.assert_allclose(
      (out.backlog - seen)[:, 0].sum(), own0[large].sum() + replay.sum(), rtol=1e-9, atol=1e-9
    )
    tier_seen = np.where(large, seen[:, 0], seen[:, 1])
    lat = np.where(out.arm == el.HIT, 0.0, tier_seen + np.where(large, own0, own1))
    np.testing.assert_allclose(out.latency_est, lat, rtol=1e-9, atol=1e-12, err_msg=msg)
    np.testing.assert_allclose(final.backlog, out.backlog[-1], rtol=0, atol=0)
    # every large answer is inserted (when the cache is in use), every replay is counted
    inserted = int(final.cache.n_insert - cache0.n_insert)
    assert inserted == (int(large.sum()) if int(params.cache.active) > 0 else 0), msg
    replayed = int(final.cache.n_replay - cache0.n_replay)
    assert replayed == int((out.replay_prompt > 0).sum()), msg
    if not kind.startswith("echolm") or float(params.replay) == 0:
      assert replayed == 0, msg


def test_reference_rejects_bad_input():
  config, params, stream, cache0 = _case(0)
  with pytest.raises(ValueError, match="unknown routing kind"):
    er.route(config._replace(kind="nope"), params, stream, cache0)
  with pytest.raises(ValueError, match="rows"):
    er.route(config, params, stream._replace(src=stream.src[:-1]), cache0)
