"""EchoLM routing: each policy kind, LinUCB updates, quality fit, calibration, vmapped sweep."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.lib import sim
from jaxsys.scheduling import echolm as el
from jaxsys.systems import context_cache as cc

CFG = cc.CacheConfig(capacity=64, dim=16)


def _stream(n=200, seed=0, rate=2.0):
  rng = np.random.default_rng(seed)
  base = rng.standard_normal((20, CFG.dim))
  j = (rng.zipf(1.3, n) - 1) % 20
  exact = rng.random(n) < 0.3
  emb = base[j] + np.where(exact[:, None], 0.0, 0.1 * rng.standard_normal((n, CFG.dim)))
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  return el.Stream(
    emb.astype(np.float32),
    rng.integers(50, 300, n).astype(np.int32),
    rng.integers(10, 300, n).astype(np.int32),
    np.cumsum(rng.exponential(1.0 / rate, n)),
    np.where(exact, j, 100 + np.arange(n)).astype(np.int32),
    rng.normal(0, 1, n),
    rng.random(n),
    rng.random(n),
    rng.random((n, 1)),
  )


def _route(kind, stream=None, **kw):
  p = el.RouterParams(cache=cc.CacheParams(active=CFG.capacity), **kw)
  st, out = el.route(el.RouteConfig(kind, CFG), p, stream or _stream(), cc.init(CFG))
  return st, jax.tree.map(np.asarray, out)


def test_fixed_policies_and_caches():
  _, out = _route("large_only")
  assert (out.arm == el.LARGE).all() and (out.n_examples == 0).all()
  _, out = _route("small_only")
  assert (out.arm == el.SMALL).all()
  _, exact = _route("exact_cache")
  _, sem = _route("semantic_cache", tau=0.8)
  # every exact hit is a verbatim repeat: cached answer to the same question
  assert (exact.arm == el.HIT).sum() > 0
  assert (sem.arm == el.HIT).sum() > (exact.arm == el.HIT).sum()
  assert np.all(exact.sim_max[exact.arm == el.HIT] >= 1 - 1e-6)
  # paraphrase hits answer another question: quality 0 by default
  para = (sem.arm == el.HIT) & (sem.sim_max < 0.999)
  assert para.any() and (sem.p_good[para] == 0).all()


def test_threshold_router_respects_target_and_queue_cap():
  _, out = _route("echolm_threshold", q_target=0.6)
  ex = out.arm == el.SMALL_EX
  assert ex.any() and (out.q_pred[ex, el.SMALL_EX] >= 0.6).all()
  assert (out.ex_tokens[ex] <= 1024).all() and (out.n_examples[ex] >= 1).all()
  # a queue cap of 0: nothing fits anywhere, so everything falls back to a small arm
  _, capped = _route("echolm_threshold", q_target=0.6, queue_cap=0.0)
  assert not (capped.arm == el.LARGE).any()
  # an unreachable target sends everything large
  _, high = _route("echolm_threshold", q_target=1.1)
  assert (high.arm == el.LARGE).all()


def test_backlog_grows_with_load_and_drains():
  _, slow = _route("large_only", arrival_scale=1.0)
  _, fast = _route("large_only", arrival_scale=50.0)
  assert fast.backlog[:, 0].mean() > 5 * slow.backlog[:, 0].mean()
  assert (slow.backlog >= 0).all()


def test_linucb_update_and_choice():
  lin = el.linucb_init(3)
  x = jnp.asarray([1.0, 0.5, 0.0])
  for _ in range(20):
    lin = el.linucb_update(lin, 1, x, 1.0)
    lin = el.linucb_update(lin, 0, x, 0.0)
    lin = el.linucb_update(lin, 2, x, 0.2)
  assert int(el.linucb_choose(lin, x, 0.0)) == 1
  np.testing.assert_allclose(lin.a[1], np.eye(3) + 20 * np.outer(x, x))
  st, out = _route("echolm_linucb", stream=_stream(300, rate=20.0), beta=2.0)
  assert len(set(out.arm.tolist())) >= 2  # it explores
  assert float(jnp.trace(st.lin.a.sum(0))) > 3 * el.N_FEATURES


def test_replay_only_when_large_idle_and_charged():
  _, out = _route("echolm_threshold", q_target=0.6, idle_s=1e9)
  assert (out.replay_out > 0).sum() > 0
  _, off = _route("echolm_threshold", q_target=0.6, replay=0.0)
  assert (off.replay_out == 0).all()
  _, busy = _route("echolm_threshold", q_target=0.6, idle_s=-1.0)
  assert (busy.replay_out == 0).all()


def test_fit_quality_model_recovers_coefficients():
  rng = np.random.default_rng(0)
  w = np.asarray([-1.0, 0.2, 0.5, 1.5])
  k = rng.integers(0, 5, 20000).astype(float)
  s = rng.random(20000)
  p = 1 / (1 + np.exp(-(w[0] + w[1] * k + w[2] * s + w[3] * k * s)))
  qm = el.fit_quality_model(k, s, rng.random(20000) < p, l2=1e-6)
  np.testing.assert_allclose(np.asarray(qm.w), w, atol=0.15)
  with pytest.raises(ValueError, match="fit_logistic"):
    el.fit_logistic(np.ones((3, 2)), np.ones(4))


def test_routellm_calibration_hits_target_share():
  rng = np.random.default_rng(1)
  emb = rng.standard_normal((3000, 8))
  y = rng.random(3000) < 1 / (1 + np.exp(-2 * emb[:, 0]))
  w = el.routellm_fit(emb, y)
  score = el.routellm_score(w, emb)
  assert np.corrcoef(score, emb[:, 0])[0, 1] > 0.9
  for share in (0.2, 0.5, 0.8):
    thr = el.calibrate_threshold(score, share)
    assert abs(np.mean(score < thr) - share) < 0.01
  with pytest.raises(ValueError, match="strong_share"):
    el.calibrate_threshold(score, 1.5)


def test_route_sweep_equals_separate_runs():
  stream = _stream(120)
  ps = [el.RouterParams(cache=cc.CacheParams(active=CFG.capacity), q_target=q) for q in (0.5, 0.9)]
  _, outs = el.route_sweep(
    el.RouteConfig("echolm_threshold", CFG), sim.stack(ps), stream, cc.init(CFG)
  )
  for i, p in enumerate(ps):
    _, one = el.route(el.RouteConfig("echolm_threshold", CFG), p, stream, cc.init(CFG))
    np.testing.assert_array_equal(np.asarray(outs.arm)[i], np.asarray(one.arm))
  # a lower target offloads more
  assert (np.asarray(outs.arm)[0] != el.LARGE).sum() > (np.asarray(outs.arm)[1] != el.LARGE).sum()


def test_tier_rates_roofline():
  from jaxsys.systems import timing

  pre, dec = el.tier_rates(timing.get_preset("llama31_8b_h100"))
  assert 15e-6 < pre < 40e-6  # serving.md 1.5: about 25 us per prefill token on an H100
  assert 1e-4 < dec < 5e-4  # a 32-request decode step of ~8 ms, per request


def test_bad_input_is_rejected():
  stream = _stream(n=20)
  with pytest.raises(ValueError, match="unknown routing kind"):
    _route("largest", stream)
  with pytest.raises(ValueError, match="arrival order"):
    _route("large_only", stream._replace(arrival=stream.arrival[::-1].copy()))
  with pytest.raises(ValueError, match="prompt_len"):
    _route("echolm_linucb", stream._replace(prompt_len=np.zeros(20, np.int32)))
  with pytest.raises(ValueError, match="differ in length"):
    _route("large_only", stream._replace(src=stream.src[:5]))


def test_threshold_router_cap_counts_the_request_on_both_tiers():
  """A request whose own work exceeds queue_cap fits neither tier: the better small arm takes it
  (the cap includes the request on the large tier too, as on the small one)."""
  stream = _stream(n=1)
  p_large = float(el.RouterParams().prefill_s[0] * stream.prompt_len[0])
  _, out = _route("echolm_threshold", stream, q_target=2.0, queue_cap=0.5 * p_large)
  assert out.arm[0] in (el.SMALL_EX, el.SMALL)
  _, out = _route("echolm_threshold", stream, q_target=2.0, queue_cap=1e3)
  assert out.arm[0] == el.LARGE
