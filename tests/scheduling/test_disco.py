"""scheduling/disco: calibration meets the budget, thresholds are exact, cost matching works."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.scheduling import disco
from jaxsys.systems import edge_cloud as ec

BUDGETS = (0.1, 0.3, 0.6, 0.9)


def _workload(seed, n=300):
  rng = np.random.default_rng(seed)
  pool = np.rint(np.exp(rng.normal(np.log(80), 0.7, 500))).clip(5, 800)
  return ec.make_workload(rng, pool, n, out_median=20.0, max_out=32)


P = ec.EnvParams(device=ec.DeviceParams(prefill_tps=600.0, decode_tps=45.0))


def test_length_threshold_is_smallest_within_budget():
  plen = np.array([5, 10, 10, 20, 55])  # total 100
  assert disco.length_threshold(plen, 0.55) == 55.0  # 55 <= 55
  assert disco.length_threshold(plen, 0.74) == 55.0  # 20 + 55 = 75 > 74
  assert disco.length_threshold(plen, 0.75) == 20.0
  assert disco.length_threshold(plen, 0.1) == 56.0  # nothing fits: no request on the server
  rng = np.random.default_rng(0)
  plen = rng.integers(1, 500, 400)
  for b in BUDGETS:
    th = disco.length_threshold(plen, b)
    assert plen[plen >= th].sum() <= b * plen.sum()
    smaller = plen[plen < th]
    if smaller.size:  # one step lower breaks the budget
      assert plen[plen >= smaller.max()].sum() > b * plen.sum()


def test_threshold_policy_meets_server_budget_on_calibration():
  calib = _workload(0)
  params = disco.calibrate_threshold(calib, BUDGETS)
  out = disco.sweep(P, calib, disco.POLICIES["disco_threshold"], params)
  share = np.asarray(out.prompt_srv).sum(1) / np.asarray(calib.prompt_len).sum()
  assert np.all(share <= np.asarray(BUDGETS) + 1e-12)
  assert np.all(np.diff(share) >= 0) and share[-1] > 0.5
  # every short prompt runs on the device alone
  short = np.asarray(calib.prompt_len)[None, :] < np.asarray(params.l_th)[:, None]
  assert not np.any(np.asarray(out.started_srv)[short])


def test_wait_policy_meets_device_budget_and_gains_with_budget():
  calib, test = _workload(1), _workload(2)
  params, grid = disco.calibrate_wait(P, calib, BUDGETS, return_grid=True)
  assert grid.ttft_mean.shape == (len(BUDGETS), grid.w0.size, grid.w1.size)
  out = disco.sweep(P, calib, disco.POLICIES["disco_wait"], params)
  usage = np.asarray(out.prompt_dev).sum(1) / np.asarray(calib.prompt_len).sum()
  assert np.all(usage <= np.asarray(BUDGETS) + 1e-12)
  assert usage[-1] > 0.3  # the budget is used, not left idle
  # the grid's numbers are the simulator's
  mean = np.asarray(out.ttft).mean(1)
  assert np.all(np.diff(mean) <= 1e-12)
  assert np.all(np.diff(np.asarray(params.w_tail)) <= 0)
  # out of sample: more budget, lower TTFT; DiSCo beats the server alone at every budget
  out = disco.sweep(P, test, disco.POLICIES["disco_wait"], params)
  s_srv, s_dev = disco.starts("server_only", disco.NoParams(), test)
  alone = ec.simulate(P, test, s_srv, s_dev)
  assert np.all(np.asarray(out.ttft).mean(1) < float(np.asarray(alone.ttft).mean()))
  assert np.all(np.quantile(np.asarray(out.ttft), 0.99, axis=1) < np.quantile(alone.ttft, 0.99))


def test_match_cost_hits_the_target():
  wl = _workload(3)
  p = P.replace(lam=1e-8)  # device much cheaper: cost falls as q falls
  ends = disco.sweep(
    p, wl, disco.POLICIES["random_split"], disco.SplitParams(q=jnp.array([0, 1.0]))
  )
  lo, hi = np.asarray(ends.cost).mean(1)
  assert lo < 0.2 * hi
  targets = lo + np.array([0.25, 0.75]) * (hi - lo)
  q = disco.match_cost(p, wl, targets)
  assert 0.1 < float(q.q[0]) < float(q.q[1]) < 0.9
  out = disco.sweep(p, wl, disco.POLICIES["random_split"], q)
  np.testing.assert_allclose(np.asarray(out.cost).mean(1), targets, rtol=0.05)


def test_policies_never_read_output_lengths():
  wl = _workload(4)
  other = wl.replace(out_len=np.asarray(wl.out_len)[::-1].copy())
  params = {
    "disco_wait": disco.WaitParams(0.2, 1e-3, 1.0),
    "disco_threshold": disco.ThresholdParams(90.0),
    "random_split": disco.SplitParams(0.4),
  }
  for name in disco.POLICIES:
    a = disco.starts(name, params.get(name, disco.NoParams()), wl)
    b = disco.starts(name, params.get(name, disco.NoParams()), other)
    for x, y in zip(a, b, strict=True):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # every policy starts at least one endpoint for every request
    assert np.all(np.isfinite(np.minimum(np.asarray(a[0]), np.asarray(a[1]))))


def test_bad_budgets_and_names():
  with pytest.raises(ValueError, match="budgets"):
    disco.calibrate_threshold(_workload(0, 20), [0.0, 0.5])
  with pytest.raises(ValueError, match="tail_share"):
    disco.calibrate_wait(P, _workload(0, 20), [0.5], tail_share=1.5)
  with pytest.raises(KeyError, match="unknown DiSCo policy"):
    disco.starts("nope", disco.NoParams(), _workload(0, 20))
  assert jnp.asarray(disco.calibrate_threshold(_workload(0, 20), [0.5]).l_th).shape == (1,)
