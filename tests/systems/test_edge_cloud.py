"""systems/edge_cloud: jitted == plain-Python reference, conservation and stall invariants."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.scheduling import disco
from jaxsys.systems import edge_cloud as ec
from jaxsys.systems import edge_cloud_reference as reference

N, G = 16, 48
TIMES = ("ttft", "t_m", "stall_time", "tbt_p99", "tbt_max", "finish")
MONEY = ("server_cost", "energy", "cost")
COUNTS = tuple(f for f in reference.FIELDS if f not in TIMES + MONEY)  # compared exactly


def _random_params(rng, migrate, buffer_scale):
  """Wide ranges so both migration directions, stalls and ties of starts all occur."""
  lam = float(np.exp(rng.uniform(np.log(1e-9), np.log(1e-5))))  # device cheaper or dearer
  return ec.EnvParams(
    device=ec.DeviceParams(
      a_d=rng.uniform(0.0, 0.3),
      prefill_tps=rng.uniform(100.0, 2000.0),
      decode_tps=rng.uniform(5.0, 80.0),
      energy_per_token=rng.uniform(0.05, 1.0),
    ),
    server=ec.ServerParams(
      rtt=rng.uniform(0.0, 0.2),
      q_median=rng.uniform(0.05, 1.0),
      q_sigma=rng.uniform(0.0, 1.2),
      prefill_tps=rng.uniform(500.0, 10000.0),
      tbt_median=rng.uniform(0.005, 0.2),
      tbt_sigma=rng.uniform(0.0, 1.0),
      p_in=rng.uniform(0.0, 1e-6),
      p_out=rng.uniform(1e-7, 4e-6),
    ),
    lam=lam,
    r_c=rng.uniform(2.0, 20.0),
    tbt_slo=rng.uniform(0.05, 0.6),
    migrate=migrate,
    buffer_scale=buffer_scale,
    rem_est=rng.uniform(0.0, 300.0),
  )


def _random_workload(rng, n=N, g=G):
  return ec.make_workload(
    rng,
    rng.integers(1, 400, 64),
    n,
    rate=rng.uniform(0.2, 5.0),
    out_median=rng.uniform(2.0, 40.0),
    out_sigma=1.0,
    max_out=g,
  )


def _policy_params(rng, name, wl):
  if name == "disco_wait":
    return disco.WaitParams(
      w0=rng.uniform(0.0, 1.0), w1=rng.uniform(0.0, 5e-3), w_tail=rng.uniform(0.2, 3.0)
    )
  if name == "disco_threshold":
    return disco.ThresholdParams(l_th=float(rng.integers(1, 400)))
  if name == "random_split":
    return disco.SplitParams(q=rng.uniform())
  return disco.NoParams()


@functools.partial(jax.jit, static_argnames=("name",))
def _jit_run(p, wl, params, name):
  s_srv, s_dev = disco.POLICIES[name].starts(params, wl.prompt_len, wl.u)
  return ec.simulate(p, wl, s_srv, s_dev, streams=True), (s_srv, s_dev)


def _run(p, wl, params, name, streams=False):
  """One compile per policy and shape: streams always come back, dropped unless asked."""
  (out, st), starts = _jit_run(p, wl, params, name)
  return ((out, st) if streams else out), starts


def _assert_same(out, ref, where):
  for f in TIMES + MONEY:
    a, b = np.asarray(getattr(out, f), np.float64), np.asarray(ref[f], np.float64)
    tol = 1e-9 if f in TIMES else 1e-9 * max(1.0, float(np.max(np.abs(b))))
    np.testing.assert_allclose(a, b, rtol=0, atol=tol, err_msg=f"{f} ({where})")
  for f in COUNTS:
    np.testing.assert_array_equal(
      np.asarray(getattr(out, f)).astype(np.int64),
      np.asarray(ref[f]).astype(np.int64),
      err_msg=f"{f} ({where})",
    )


def test_jitted_equals_reference_on_random_workloads():
  """60 seeded workloads x every policy x (no migration, migration with and without buffer)."""
  migrated, directions, stalls = 0, set(), 0
  for seed in range(60):
    rng = np.random.default_rng(seed)
    wl = _random_workload(rng)
    for name in disco.POLICIES:
      params = _policy_params(rng, name, wl)
      for migrate, scale in ((False, 1.0), (True, 1.0), (True, 0.0)):
        p = _random_params(np.random.default_rng((seed, len(name), int(scale))), migrate, scale)
        out, (s_srv, s_dev) = _run(p, wl, params, name)
        ref = reference.simulate(p, wl, np.asarray(s_srv), np.asarray(s_dev))
        _assert_same(out, ref, f"seed {seed}, {name}, migrate {migrate}, buffer {scale}")
        m = np.asarray(out.migrated)
        migrated += int(m.sum())
        directions |= set(np.asarray(out.winner)[m].tolist())
        stalls += int(np.asarray(out.stalls).sum())
  # The comparison covered migrations in both directions and streams with stalls.
  assert migrated > 50 and directions == {ec.SERVER, ec.DEVICE} and stalls > 0


def test_streams_match_reference():
  rng = np.random.default_rng(7)
  wl = _random_workload(rng)
  p = _random_params(rng, True, 1.0)
  params = disco.WaitParams(w0=0.1, w1=1e-3, w_tail=1.0)
  (out, st), (s_srv, s_dev) = _run(p, wl, params, "disco_wait", streams=True)
  ref = reference.simulate(p, wl, np.asarray(s_srv), np.asarray(s_dev), with_streams=True)
  for i, (gen, shown, who) in enumerate(ref["streams"]):
    n = len(gen)
    np.testing.assert_allclose(np.asarray(st.gen[i, :n]), gen, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.asarray(st.disp[i, :n]), shown, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(st.endpoint[i, :n]), who)
    assert np.all(np.isnan(np.asarray(st.gen[i, n:]))) and np.all(
      np.asarray(st.endpoint[i, n:]) < 0
    )


@pytest.mark.parametrize("seed", range(4))
def test_conservation_invariants(seed):
  """Every token delivered once; cost = charged tokens and energy; display monotone."""
  rng = np.random.default_rng(100 + seed)
  wl = _random_workload(rng)
  p = _random_params(rng, True, float(seed % 2))
  for name in disco.POLICIES:
    params = _policy_params(rng, name, wl)
    (out, st), _ = _run(p, wl, params, name, streams=True)
    n = np.asarray(wl.out_len)
    ep = np.asarray(st.endpoint)
    valid = np.arange(G)[None, :] < n[:, None]
    # each of the out_len tokens comes from exactly one endpoint, nothing after the end
    assert np.all(np.isin(ep[valid], (ec.SERVER, ec.DEVICE))) and np.all(ep[~valid] == -1)
    np.testing.assert_array_equal(np.asarray(out.tokens_srv) + np.asarray(out.tokens_dev), n)
    np.testing.assert_array_equal(np.asarray(out.tokens_srv), (ep == ec.SERVER).sum(1))
    # cost = server tokens x price + lam x energy, migration re-prefill on its target
    plen = np.asarray(wl.prompt_len)
    mig = np.where(np.asarray(out.migrated), plen + np.asarray(out.switch) + 1, 0)
    to_srv = np.where(np.asarray(out.winner) == ec.DEVICE, mig, 0)
    to_dev = mig - to_srv
    srv, dev = p.server, p.device
    server_cost = srv.p_in * (np.asarray(out.prompt_srv) + to_srv) + srv.p_out * np.asarray(
      out.tokens_srv
    )
    energy = dev.energy_per_token * (
      np.asarray(out.prompt_dev) + to_dev + np.asarray(out.tokens_dev)
    )
    np.testing.assert_allclose(np.asarray(out.cost), server_cost + p.lam * energy, rtol=1e-12)
    # budget usage is the prompt of every started endpoint
    np.testing.assert_array_equal(np.asarray(out.prompt_srv), np.where(out.started_srv, plen, 0))
    # display: never before generation, at most the reading pace, monotone
    gen, disp = np.asarray(st.gen), np.asarray(st.disp)
    assert np.all(disp[valid] >= gen[valid] - 1e-12)
    gaps = np.diff(disp, axis=1)[valid[:, 1:]]
    assert np.all(gaps >= 1.0 / p.r_c - 1e-9)
    assert np.all(np.diff(gen, axis=1)[valid[:, 1:]] >= 0)
    np.testing.assert_allclose(np.asarray(out.ttft), gen[:, 0], rtol=0, atol=1e-12)


def _steady(migrate, buffer_scale, tbt_slo=0.3):
  """Deterministic TBTs faster than reading, a slow device prefill (t_m up to ~1 s)."""
  return ec.EnvParams(
    device=ec.DeviceParams(a_d=0.0, prefill_tps=300.0, decode_tps=40.0, energy_per_token=0.3),
    server=ec.ServerParams(tbt_sigma=0.0, tbt_median=0.02),
    lam=1e-8,  # device far cheaper: server -> device migrations
    r_c=4.5,
    tbt_slo=tbt_slo,
    migrate=migrate,
    buffer_scale=buffer_scale,
  )


def test_buffer_prevents_stalls_and_no_buffer_stalls():
  """With B = ceil(r_c t_m) a reader never sees a stall (tbt_slo >= 1/r_c); with B = 0 the
  migration gap t_m shows up as stalls."""
  rng = np.random.default_rng(3)
  wl = ec.make_workload(rng, rng.integers(60, 300, 50), 64, out_median=120, max_out=256)
  params = disco.NoParams()
  (buf, st), _ = _run(_steady(True, 1.0), wl, params, "server_only", streams=True)
  assert np.asarray(buf.migrated).mean() > 0.5
  assert int(np.asarray(buf.stalls).sum()) == 0
  # the gap at the switch is the reading pace: the buffer hides t_m entirely
  m = np.flatnonzero(np.asarray(buf.migrated))
  s = np.asarray(buf.switch)[m]
  disp = np.asarray(st.disp)
  gap = disp[m, s + 1] - disp[m, s]
  assert np.all(gap <= 1 / 4.5 + 1e-9)
  (nobuf, _), _ = _run(_steady(True, 0.0), wl, params, "server_only", streams=True)
  assert np.all(np.asarray(nobuf.switch)[np.asarray(nobuf.migrated)] == 0)
  assert int(np.asarray(nobuf.stalls).sum()) > 10
  assert float(np.asarray(nobuf.stall_time).sum()) > 0
  # migration saves cost either way; without it there are no stalls either
  (plain, _), _ = _run(_steady(False, 1.0), wl, params, "server_only", streams=True)
  assert int(np.asarray(plain.stalls).sum()) == 0
  assert float(np.asarray(buf.cost).mean()) < 0.5 * float(np.asarray(plain.cost).mean())


def test_ttft_is_min_over_started_endpoints():
  rng = np.random.default_rng(11)
  wl = _random_workload(rng)
  p = _random_params(rng, False, 1.0)
  plen = np.asarray(wl.prompt_len, np.float64)
  t_srv = np.asarray(ec.server_ttft(p.server, plen, np.asarray(wl.z_q)))
  t_dev = np.asarray(ec.device_ttft(p.device, plen))
  out, _ = _run(p, wl, disco.NoParams(), "race_both")
  np.testing.assert_allclose(np.asarray(out.ttft), np.minimum(t_srv, t_dev), rtol=1e-12)
  out, _ = _run(p, wl, disco.NoParams(), "server_only")
  np.testing.assert_allclose(np.asarray(out.ttft), t_srv, rtol=1e-12)
  assert not np.any(np.asarray(out.started_dev))
  w = disco.WaitParams(w0=0.3, w1=0.0, w_tail=10.0)
  out, _ = _run(p, wl, w, "disco_wait")
  dev_on = 0.3 < t_srv
  np.testing.assert_array_equal(np.asarray(out.started_dev), dev_on)
  want = np.where(dev_on, np.minimum(t_srv, 0.3 + t_dev), t_srv)
  np.testing.assert_allclose(np.asarray(out.ttft), want, rtol=1e-12)


def test_vmapped_sweep_equals_separate_runs():
  rng = np.random.default_rng(5)
  wl = _random_workload(rng)
  p = _random_params(rng, True, 1.0)
  stacked = disco.SplitParams(q=jnp.asarray([0.2, 0.7]))
  swept = disco.sweep(p, wl, disco.POLICIES["random_split"], stacked)
  for i, q in enumerate((0.2, 0.7)):
    single, _ = _run(p, wl, disco.SplitParams(q=q), "random_split")
    for f in TIMES + ("cost",):
      np.testing.assert_allclose(
        np.asarray(getattr(swept, f))[i], np.asarray(getattr(single, f)), rtol=0, atol=1e-12
      )
  # stacked EnvParams (migration on / off) in one call
  both = disco.stack([p.replace(migrate=True), p.replace(migrate=False)])
  out = disco.sweep(both, wl, disco.POLICIES["race_both"], disco.broadcast(disco.NoParams(), 2))
  assert np.asarray(out.migrated)[1].sum() == 0
  with pytest.raises(ValueError, match="stacked"):
    disco.sweep(p, wl, disco.POLICIES["race_both"], disco.NoParams())


def test_no_retrace_across_sweeps():
  calls = []

  @jax.jit
  def f(p, wl, q):
    calls.append(1)
    s_srv, s_dev = disco.POLICIES["random_split"].starts(
      disco.SplitParams(q=q), wl.prompt_len, wl.u
    )
    return ec.simulate(p, wl, s_srv, s_dev).cost

  for seed in range(3):
    rng = np.random.default_rng(seed)
    f(_random_params(rng, True, 1.0), _random_workload(rng), rng.uniform())
  assert len(calls) == 1


def test_bad_input_is_rejected():
  rng = np.random.default_rng(0)
  wl = _random_workload(rng)
  with pytest.raises(ValueError, match="out_len"):
    ec.check_workload(wl.replace(out_len=np.full(N, G + 1, np.int32)))
  with pytest.raises(ValueError, match="prompt_len"):
    ec.check_workload(wl.replace(prompt_len=np.zeros(N, np.int32)))
  with pytest.raises(ValueError, match="z_tok"):
    ec.check_workload(wl.replace(z_tok=np.zeros((N + 1, G))))
  with pytest.raises(ValueError, match="device.decode_tps"):
    ec.check_params(ec.EnvParams(device=ec.DeviceParams(decode_tps=0.0)))
  with pytest.raises(ValueError, match="lam"):
    ec.check_params(ec.EnvParams(lam=-1.0))
  with pytest.raises(ValueError, match="prompt_pool"):
    ec.make_workload(rng, [], 4)
