"""DiSCo dispatch policies and their baselines for systems/edge_cloud (serving.md 4.2, 4.4).

A policy is a `Dispatch` NamedTuple of one pure function `starts(params, prompt_len, u)` ->
(start_srv, start_dev), f64[n] offsets from arrival (inf = never started), and its params are a
flax.struct pytree, so a budget sweep is a vmap over stacked params:

  calib = ...  # an edge_cloud.Workload of past requests (the calibration split)
  wp = disco.calibrate_wait(env_params, calib, budgets=(0.1, 0.5))  # WaitParams stacked [2]
  policy = disco.POLICIES["disco_wait"]
  out = disco.sweep(env_params, wl, policy, wp)      # edge_cloud.Outputs, leading axis 2

Policies read only the prompt length and a pre-drawn uniform (random split); never the output
length or a server draw. Calibration reads the calibration split's outcomes (past requests).

Budget: a fraction b of prompt tokens on the constrained endpoint [2].
- Device-constrained, `disco_wait` [2; form R]: always start the server; start the device at
  `w(l) = min(w_tail, w0 + w1 * l)` if no server token has come. `w_tail` is the server-TTFT
  quantile the tail share of the budget affords (`tail_share * b` of requests) [R]; (w0, w1)
  from one vmapped grid evaluation minimising mean TTFT under the budget [R].
- Server-constrained, `disco_threshold` [2]: `l < l_th` device only, else both; `l_th` the
  smallest length with `sum_{l >= l_th} l <= b * sum l` on the calibration split.
Baselines [2/R]: `server_only`, `device_only`, `race_both`, `random_split` (server alone with
probability q, else device alone; q solved to match a target cost, `match_cost`). DiSCo without
migration is `disco_*` run with `EnvParams.migrate = False`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.systems import edge_cloud as ec

INF = float("inf")


class Dispatch(NamedTuple):
  """A dispatch policy: `starts(params, prompt_len i32[n], u f64[n]) -> (f64[n], f64[n])`."""

  starts: Callable[[Any, jnp.ndarray, jnp.ndarray], tuple[jnp.ndarray, jnp.ndarray]]


@flax.struct.dataclass
class WaitParams:
  w0: float  # s: wait before starting the device, at length 0
  w1: float  # s per prompt token
  w_tail: float  # s: the device starts by then at the latest


@flax.struct.dataclass
class ThresholdParams:
  l_th: float  # prompts shorter than this run on the device only


@flax.struct.dataclass
class SplitParams:
  q: float  # probability of sending a request to the server only


@flax.struct.dataclass
class NoParams:
  pass


def _zeros(plen):
  return jnp.zeros(jnp.shape(plen), jnp.float64)


def _wait(params, plen, u):
  del u
  w = jnp.minimum(params.w_tail, params.w0 + params.w1 * jnp.asarray(plen, jnp.float64))
  return _zeros(plen), w


def _threshold(params, plen, u):
  del u
  short = jnp.asarray(plen, jnp.float64) < params.l_th
  return jnp.where(short, INF, 0.0), _zeros(plen)


def _split(params, plen, u):
  srv = jnp.asarray(u) < params.q
  return jnp.where(srv, 0.0, INF), jnp.where(srv, INF, 0.0)


POLICIES = {
  "disco_wait": Dispatch(_wait),
  "disco_threshold": Dispatch(_threshold),
  "server_only": Dispatch(lambda params, plen, u: (_zeros(plen), _zeros(plen) + INF)),
  "device_only": Dispatch(lambda params, plen, u: (_zeros(plen) + INF, _zeros(plen))),
  "race_both": Dispatch(lambda params, plen, u: (_zeros(plen), _zeros(plen))),
  "random_split": Dispatch(_split),
}


def wait_time(params: WaitParams, prompt_len):
  """(start_srv, start_dev) of DiSCo's device-constrained wait-time policy."""
  return _wait(params, prompt_len, None)


def starts(name: str, params, wl: ec.Workload):
  """The dispatch offsets of policy `name` for workload `wl` (host convenience)."""
  if name not in POLICIES:
    raise KeyError(f"unknown DiSCo policy {name!r}; known: {', '.join(POLICIES)}")
  return POLICIES[name].starts(params, jnp.asarray(wl.prompt_len), jnp.asarray(wl.u))


def _run(p, wl, policy, params, streams):
  s_srv, s_dev = policy.starts(params, jnp.asarray(wl.prompt_len), jnp.asarray(wl.u))
  return ec.simulate(p, wl, s_srv, s_dev, streams=streams)


@functools.partial(jax.jit, static_argnames=("policy", "streams"))
def _sweep_jit(p, wl, policy, stacked, streams):
  return jax.vmap(lambda q: _run(p, wl, policy, q, streams))(stacked)


@functools.partial(jax.jit, static_argnames=("policy",))
def _sweep_env_jit(stacked_p, wl, policy, stacked):
  return jax.vmap(lambda p, q: _run(p, wl, policy, q, False))(stacked_p, stacked)


def sweep(p: ec.EnvParams, wl: ec.Workload, policy: Dispatch, stacked, streams: bool = False):
  """One jitted vmap of `policy` over stacked params (leading axis K): Outputs with axis K.

  `p` is shared by every lane, or stacked along the same axis K (then each lane its own; e.g.
  migration on and off, or buffer sizes, in one call; `streams` is not available then).
  """
  if any(jnp.ndim(x) > 0 for x in jax.tree.leaves(p)):
    if streams:
      raise ValueError("sweep: streams=True needs one shared EnvParams")
    return _sweep_env_jit(p, wl, policy, stacked)
  if not jax.tree.leaves(stacked):
    raise ValueError(
      "sweep needs stacked policy params or stacked EnvParams; a knob-less policy with one "
      "EnvParams is a single run (edge_cloud.simulate)"
    )
  return _sweep_jit(p, wl, policy, stacked, streams)


def stack(items):
  """Stacks a list of equal-structure pytrees along a new leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *items)


def broadcast(params, k: int):
  """Params repeated k times (a policy without a knob, in a K-lane sweep)."""
  return jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (k,) + jnp.shape(x)), params)


# Calibration --------------------------------------------------------------------------------


def _budgets(budgets):
  b = np.asarray(budgets, np.float64)
  if b.ndim != 1 or b.size == 0 or np.any(b <= 0) or np.any(b > 1):
    raise ValueError(f"budgets must be a non-empty list of fractions in (0, 1], got {budgets!r}")
  return b


def length_threshold(prompt_len, b: float) -> float:
  """Smallest l_th with sum over l >= l_th of l <= b * sum l (prompts of the calibration split).

  Candidates are the observed lengths and max + 1 (nothing on the server), so l_th is exact.
  """
  pl = np.asarray(prompt_len, np.int64)
  total = pl.sum()
  cands = np.unique(np.concatenate([pl, [pl.max() + 1]]))
  above = np.array([pl[pl >= c].sum() for c in cands])
  ok = above <= b * total
  return float(cands[np.argmax(ok)])  # above falls with c: the first ok is the smallest


def calibrate_threshold(calib: ec.Workload, budgets) -> ThresholdParams:
  """`ThresholdParams` stacked over `budgets` (server-constrained regime)."""
  b = _budgets(budgets)
  return ThresholdParams(l_th=jnp.asarray([length_threshold(calib.prompt_len, x) for x in b]))


class WaitGrid(NamedTuple):
  """The grid evaluation behind `calibrate_wait` (for plots and tests)."""

  w0: np.ndarray  # f64[G0]
  w1: np.ndarray  # f64[G1]
  ttft_mean: np.ndarray  # f64[K, G0, G1]: mean TTFT per budget's w_tail and grid point
  usage: np.ndarray  # f64[K, G0, G1]: device prompt tokens / all prompt tokens


@jax.jit
def _grid_eval(p, wl, w0, w1, w_tail):
  """Mean TTFT and device prompt share of w(l) = min(w_tail, w0 + w1 l) on a grid; one vmap.

  Dispatch only decides TTFT and usage, so this needs no token stream: the same rules as
  edge_cloud (server at 0, device at w if no server token by then).
  """
  plen = jnp.asarray(wl.prompt_len, jnp.float64)
  ttft_srv = ec.server_ttft(p.server, plen, jnp.asarray(wl.z_q))
  ttft_dev = ec.device_ttft(p.device, plen)

  def one(a, b, t):
    w = jnp.minimum(t, a + b * plen)
    dev_on = w < ttft_srv
    ttft = jnp.where(dev_on, jnp.minimum(ttft_srv, w + ttft_dev), ttft_srv)
    return jnp.mean(ttft), jnp.sum(jnp.where(dev_on, plen, 0.0)) / jnp.sum(plen)

  g = jax.vmap(jax.vmap(jax.vmap(one, (None, 0, None)), (0, None, None)), (None, None, 0))
  return g(w0, w1, w_tail)


def calibrate_wait(
  p: ec.EnvParams,
  calib: ec.Workload,
  budgets,
  *,
  tail_share: float = 0.5,
  n_w0: int = 48,
  n_w1: int = 32,
  return_grid: bool = False,
):
  """`WaitParams` stacked over `budgets` (device-constrained regime).

  w_tail: the (1 - tail_share * b) quantile of the calibration server TTFTs, so about
  `tail_share * b` of requests reach it [R]. (w0, w1): the grid point with the least mean
  TTFT whose device prompt share (with the tail cap) is <= b; the grid holds w0 = inf (tail
  protection only), so a feasible point exists whenever the tail share is.
  """
  b = _budgets(budgets)
  if not 0 <= tail_share <= 1:
    raise ValueError(f"tail_share must lie in [0, 1], got {tail_share}")
  plen = np.asarray(calib.prompt_len, np.float64)
  ttft_srv = np.asarray(ec.server_ttft(p.server, plen, np.asarray(calib.z_q)))
  hi = float(np.quantile(ttft_srv, 0.999))
  w_tail = np.array(
    [np.quantile(ttft_srv, 1 - tail_share * x) if tail_share * x > 0 else INF for x in b]
  )
  w0 = np.concatenate([np.linspace(0.0, hi, n_w0 - 1), [INF]])
  w1 = np.linspace(0.0, 2.0 * hi / max(np.median(plen), 1.0), n_w1)
  mean, usage = jax.device_get(_grid_eval(p, calib, w0, w1, w_tail))
  mean, usage = np.asarray(mean), np.asarray(usage)
  best0, best1 = [], []
  for i, x in enumerate(b):
    score = np.where(usage[i] <= x, mean[i], INF)
    j = np.unravel_index(np.argmin(score), score.shape)
    if not np.isfinite(score[j]):  # even the tail cap alone is over budget: never the device
      j = (n_w0 - 1, 0)
      w_tail[i] = INF
    best0.append(w0[j[0]])
    best1.append(w1[j[1]])
  params = WaitParams(
    w0=jnp.asarray(best0), w1=jnp.asarray(best1), w_tail=jnp.asarray(w_tail, jnp.float64)
  )
  if return_grid:
    return params, WaitGrid(w0, w1, mean, usage)
  return params


def match_cost(p: ec.EnvParams, wl: ec.Workload, targets) -> SplitParams:
  """`SplitParams` stacked over `targets` ($ per request): the server share q whose random
  split costs closest to each target on `wl`.

  Without migration a request's cost depends only on the endpoint it was sent to, so one
  server-only and one device-only run give every q's cost exactly: sorting the uniforms, q just
  above the j-th smallest sends those j requests to the server. q is that step's midpoint.
  """
  zeros = jnp.zeros(wl.n, jnp.float64)
  p = p.replace(migrate=False)
  c_srv = np.asarray(ec.simulate_jit(p, wl, zeros, zeros + INF).cost)
  c_dev = np.asarray(ec.simulate_jit(p, wl, zeros + INF, zeros).cost)
  u = np.asarray(wl.u)
  order = np.argsort(u, kind="stable")
  # cost[j]: the first j requests by u on the server, the rest on the device
  cost = (c_dev.sum() + np.concatenate([[0.0], np.cumsum((c_srv - c_dev)[order])])) / wl.n
  edges = np.concatenate([[0.0], u[order], [1.0]])
  qs = []
  for t in np.atleast_1d(np.asarray(targets, np.float64)):
    j = int(np.argmin(np.abs(cost - t)))
    qs.append(0.5 * (edges[j] + edges[j + 1]))
  return SplitParams(q=jnp.asarray(qs))


def mean_output(calib: ec.Workload) -> float:
  """The policy's length estimate after the first token: calibration mean output - 1 [R]."""
  return float(np.mean(np.asarray(calib.out_len)) - 1.0)
