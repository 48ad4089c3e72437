"""HyGen: online/offline co-location under a per-batch latency budget (serving.md section 3).

Online requests (trace arrivals, TTFT/TBT SLOs) and an offline pool (class OFFLINE, throughput
only) share one Sarathi engine (`systems/llm_serving`, offline stream under `offline_slots`).
Pieces:

- a batch-latency predictor on `[1, S_p, S_p^2, N_p, N_d, S_d]`, piecewise [R]: decode-only
  batches and batches holding prefill get separate coefficients (DistServe's split), each the max
  of two affine rows (the roofline's compute/memory kink), fitted by least squares to the env's
  own time model with 2% noise (`fit_predictor`, `mape`);
- the two-phase scheduler (`hygen()`): phase 1 a Sarathi fill of the online requests; phase 2
  offline decodes, then offline prefill chunks in the offline stream order, the longest prefix
  whose predicted batch time stays within `L` (cumulative feature increments, the last chunk
  cut); `L = inf` is Sarathi++ and a finite `rate_cap` on offline starts is HyGen*;
- the SLO-aware profiler (`profile`): one vmapped sweep over several profiling slices x (a grid
  of `L` or of the cap, plus an online-only lane), the largest value keeping online P99 TTFT and
  mean TBT within `tau` on every slice;
- PSM order (`psm_order`): offline prompts grouped by shared prefix on the host, largest group
  first, so that shared prefixes run back to back.

Usage:

  coef = hygen.fit_predictor(jax.random.key(0), env_params, 80_000)
  pparams = hygen.params(env_params, coef, latency_budget=0.05)
  state, _ = sim.rollout(env, hygen.hygen(), env_params, pparams, key, workload)

Exact rules (tie-breaks, the starvation guard): docs/llm_serving_semantics.md, "HyGen".
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.scheduling import common
from jaxsys.systems import llm_serving as ls
from jaxsys.systems import timing

_TIER = 2.0**22  # Sarathi tier offset (exact in float32 next to queue positions)
_OFFLINE_SHIFT = 2.0**24  # offline priorities sit below every online one
N_FEATURES = 6  # [1, S_p, S_p^2, N_p, N_d, S_d]
COEF_SHAPE = (2, 2, N_FEATURES)  # (decode-only | with prefill) x (two affine rows) x features
OFFLINE_WINDOW = 32  # offline candidates phase 2 considers per iteration [R]


# ---------------------------------------------------------------------------- predictor


class Batches(NamedTuple):
  """Random batches labelled by a time model: features [n] each and times f64[n] (s)."""

  features: timing.Features
  time: jnp.ndarray


def predictor_columns(f: timing.Features) -> jnp.ndarray:
  """Design matrix f64[n, 6]: [1, S_p, S_p^2, N_p, N_d, S_d] (HyGen's form, serving.md 1.5)."""
  cols = [jnp.ones_like(f.s_p), f.s_p, f.s_p * f.s_p, f.n_p, f.n_d, f.s_d]
  return jnp.stack([jnp.asarray(c, jnp.float64) for c in cols], axis=-1)


def as_piecewise(coef) -> jnp.ndarray:
  """coef as f64[2, 2, 6] (piece x row x feature); a single linear form f64[6] is broadcast
  (every row equal: the plain HyGen predictor)."""
  coef = jnp.asarray(coef, jnp.float64)
  if coef.shape == (N_FEATURES,):
    return jnp.broadcast_to(coef, COEF_SHAPE)
  if coef.shape != COEF_SHAPE:
    raise ValueError(f"predictor coef: shape {coef.shape}, want {COEF_SHAPE} or ({N_FEATURES},)")
  return coef


def _affine(c, n_p, n_d, s_p, s_d):
  # summed in this order (the reference sums alike, so decisions at the budget agree)
  t = c[0] + c[1] * s_p
  t = t + c[2] * (s_p * s_p)
  t = t + c[3] * n_p
  t = t + c[4] * n_d
  return t + c[5] * s_d


def predict(coef, n_p, n_d, s_p, s_d):
  """Predicted batch time (s) [R, piecewise in the DistServe manner]: piece 0 for decode-only
  batches (`n_p == 0`), piece 1 for batches holding prefill; within a piece the max of two
  affine rows `c0 + c1 S_p + c2 S_p^2 + c3 N_p + c4 N_d + c5 S_d` (a compute-bound and a
  memory-bound regime: the roofline's max() kink). `coef`: f64[2, 2, 6] or f64[6] (one form)."""
  c = as_piecewise(coef)
  row = lambda i, r: _affine(c[i, r], n_p, n_d, s_p, s_d)  # noqa: E731
  dec = jnp.maximum(row(0, 0), row(0, 1))
  pre = jnp.maximum(row(1, 0), row(1, 1))
  return jnp.where(jnp.asarray(n_p) > 0, pre, dec)


def draw_batches(
  key,
  env_params: ls.EnvParams,
  n: int,
  time_model: str = "roofline",
  noise_sigma: float = 0.02,
  max_ctx: int = 4096,
) -> Batches:
  """`n` random batches of the engine (`timing.random_features` under the env's token budget and
  batch size), labelled by the env's true time model times `exp(noise_sigma * N(0, 1))`."""
  k_f, k_n = jax.random.split(key)
  f = timing.random_features(
    k_f,
    n,
    max_seqs=int(env_params.max_seqs),
    token_budget=int(env_params.token_budget),
    max_ctx=max_ctx,
  )
  t = timing.batch_time(time_model, env_params.time_coef, f)
  noise = jnp.exp(noise_sigma * jax.random.normal(k_n, (n,), jnp.float64))
  return Batches(f, t * noise)


def _wlstsq(x, t, w):
  # Rows weighted by 1/t: least squares on the relative error, so that 20 ms decode steps count
  # as much as 300 ms prefills (MAPE is what the budget check needs); w in {0, 1} selects rows.
  a = x / t[:, None] * w[:, None]
  scale = jnp.maximum(jnp.linalg.norm(a, axis=0), 1e-30)
  sol, *_ = jnp.linalg.lstsq(a / scale, w)
  return sol / scale


@functools.partial(jax.jit, static_argnames="iters")
def _max_affine(x, t, member, iters: int = 30):
  """Two affine rows f64[2, 6] whose max fits t on the rows `member` (relative error).

  [R] Alternating fit of a max-affine model (Magnani & Boyd 2009): assign each batch to the row
  predicting more, refit both rows by least squares; started from three splits (S_p above its
  median, S_d above its median, above the one-row fit), the one with the least training
  relative error wins (fixed shapes: every start runs `iters` rounds)."""
  w = member.astype(jnp.float64)
  one = _wlstsq(x, t, w)
  med = lambda v: jnp.nanmedian(jnp.where(member, v, jnp.nan))  # noqa: E731
  starts = jnp.stack([x[:, 1] > med(x[:, 1]), x[:, 5] > med(x[:, 5]), x @ one < t])

  def fit(split):
    def body(a, _):
      rows = jnp.stack([_wlstsq(x, t, w * a), _wlstsq(x, t, w * (1.0 - a))])
      return ((x @ rows[0]) >= (x @ rows[1])).astype(jnp.float64), None

    a, _ = jax.lax.scan(body, split.astype(jnp.float64), None, length=iters)
    rows = jnp.stack([_wlstsq(x, t, w * a), _wlstsq(x, t, w * (1.0 - a))])
    err = jnp.sum(w * jnp.abs(jnp.max(x @ rows.T, axis=1) - t) / t)
    return rows, err

  rows, err = jax.vmap(fit)(starts)
  return rows[jnp.argmin(err)]


def split_holdout(batches: Batches, holdout: float = 0.2) -> tuple[Batches, Batches]:
  """(first 1 - holdout, last holdout) of the batches."""
  n = batches.time.shape[0]
  cut = int(round(n * (1.0 - holdout)))
  take = lambda lo, hi: jax.tree.map(lambda x: x[lo:hi], batches)  # noqa: E731
  return take(0, cut), take(cut, n)


def fit_batches(batches: Batches) -> jnp.ndarray:
  """Piecewise predictor coef f64[2, 2, 6] fitted to labelled batches (see `predict`)."""
  x = predictor_columns(batches.features)
  pre = jnp.asarray(batches.features.n_p) > 0
  return jnp.stack([_max_affine(x, batches.time, ~pre), _max_affine(x, batches.time, pre)])


def fit_predictor(
  key,
  env_params: ls.EnvParams,
  n: int = 80_000,
  time_model: str = "roofline",
  noise_sigma: float = 0.02,
  holdout: float = 0.2,
) -> jnp.ndarray:
  """Predictor coef f64[2, 2, 6] fitted on the first `1 - holdout` of
  `draw_batches(key, env_params, n)`; `split_holdout` of the same draw gives the held-out part."""
  train, _ = split_holdout(draw_batches(key, env_params, n, time_model, noise_sigma), holdout)
  return fit_batches(train)


def mape(coef, batches: Batches) -> float:
  """Mean absolute percentage error of the predictor on labelled batches (a fraction)."""
  f = batches.features
  pred = predict(coef, f.n_p, f.n_d, f.s_p, f.s_d)
  return float(jnp.mean(jnp.abs(pred - batches.time) / batches.time))


# ---------------------------------------------------------------------------- the policy


@flax.struct.dataclass
class HyGenParams:
  """Policy numbers (a profiler sweep vmaps over a stack of these)."""

  coef: jnp.ndarray  # f64[2, 2, 6]: piecewise predictor on [1, S_p, S_p^2, N_p, N_d, S_d] (s)
  latency_budget: jnp.ndarray  # f64: L, predicted seconds per batch (inf: Sarathi++)
  rate_cap: jnp.ndarray  # f64: offline starts per second (inf: none; finite: HyGen*)
  starvation: jnp.ndarray  # f64: guard factor, oldest first past this x mean wait (inf: off)
  token_budget: jnp.ndarray  # i32: the env's token budget (the policy fills against it)
  max_seqs: jnp.ndarray  # i32: the env's batch size
  watermark_blocks: jnp.ndarray  # i32: floor(watermark * num_blocks) of the env


def params(
  env_params: ls.EnvParams,
  coef=None,
  latency_budget=float("inf"),
  rate_cap=float("inf"),
  starvation=4.0,
) -> HyGenParams:
  """HyGenParams for one env configuration (coef defaults to zeros: no budget needed)."""
  coef = jnp.zeros((N_FEATURES,), jnp.float64) if coef is None else coef
  return HyGenParams(
    coef=jnp.array(as_piecewise(coef)),
    latency_budget=jnp.asarray(latency_budget, jnp.float64),
    rate_cap=jnp.asarray(rate_cap, jnp.float64),
    starvation=jnp.asarray(starvation, jnp.float64),
    token_budget=jnp.asarray(env_params.token_budget, jnp.int32),
    max_seqs=jnp.asarray(env_params.max_seqs, jnp.int32),
    watermark_blocks=jnp.asarray(
      np.floor(float(env_params.watermark) * float(env_params.num_blocks)), jnp.int32
    ),
  )


@flax.struct.dataclass
class HyGenState:
  n_started: jnp.ndarray  # f64: offline requests this policy started (first grant)
  wait_sum: jnp.ndarray  # f64: sum of the waits (start - release) of those starts
  seen: jnp.ndarray  # i32[n_slots]: wid whose start was counted (-1 none)


def _priority(sl):
  """Sarathi tiers, FCFS within; offline requests below every online one."""
  tier = jnp.where(ls.in_decode(sl), 2.0, jnp.where(sl.prefilled > 0, 1.0, 0.0))
  sarathi = tier * _TIER - common.queue_pos(sl)
  return jnp.where(sl.cls == ls.OFFLINE, sarathi - _OFFLINE_SHIFT, sarathi)


def _features(sl, grant, decode):
  granted = grant > 0
  pre = granted & ~decode
  dec = granted & decode
  f64 = lambda x: jnp.sum(x).astype(jnp.float64)  # noqa: E731
  return (
    f64(pre),
    f64(dec),
    f64(jnp.where(pre, grant, 0)),
    f64(jnp.where(dec, sl.prefilled + 1, 0)),
  )


def hygen(window: int = OFFLINE_WINDOW) -> common.Policy:
  """The two-phase HyGen scheduler; params: `HyGenParams` (see `params`).

  `window` (static): phase 2 orders only the first `window` offline candidates (top_k) [R]; a
  batch never holds more than max_seqs requests anyway.
  """

  def init(pp, obs):
    n = obs.slots.wid.shape[0]
    return HyGenState(
      jnp.zeros((), jnp.float64), jnp.zeros((), jnp.float64), jnp.full((n,), -1, jnp.int32)
    )

  def act(key, st, obs, pp):
    del key
    sl, t = obs.slots, obs.t
    n_slots = sl.wid.shape[0]
    off = sl.cls == ls.OFFLINE
    ok = ls.runnable(sl, t)
    rem = ls.remaining(sl)
    dec = ls.in_decode(sl)
    priority = _priority(sl)
    budget, max_seqs, wm = pp.token_budget, pp.max_seqs, pp.watermark_blocks

    # Phase 1: Sarathi over the online requests. Short of KV blocks (the fill with unlimited
    # blocks differs), preempt the lowest offline holder and give offline nothing this time.
    on_wish = jnp.where(ok & ~off, rem, 0)
    fill = functools.partial(ls.fill, priority, on_wish, ~dec, sl.prefilled, sl.kv_blocks)
    g_on = fill(obs.free_blocks, budget, max_seqs, wm, True)
    g_big = fill(jnp.int32(ls.NO_LIMIT), budget, max_seqs, 0, True)
    short = jnp.any(g_on != g_big)
    holder = off & (sl.kv_blocks > 0) & (sl.status == ls.RUNNING)
    victim = ls._memory_victim(
      sl.replace(kv_blocks=jnp.where(holder, sl.kv_blocks, 0)),
      ls.sortable_key(priority.astype(jnp.float32)),
    )
    preempt = victim & holder & short

    # Phase 2: offline candidates in order (decodes, then prefills; queue order within; the
    # starvation guard lifts the oldest waiting one), the first `window` of them.
    cand = ok & off & ~preempt & ~short
    # not started yet: nothing computed beyond an attached shared prefix (EnvConfig.n_prefixes)
    new = (sl.generated == 0) & (sl.prefilled == sl.prefix_blocks * ls.BLOCK_SIZE)
    new = new & (sl.n_preempt == 0)
    qpos = common.queue_pos(sl)
    starving = _starving(sl, t, cand & new, st, pp)
    tier = jnp.where(dec, 2.0, jnp.where(starving, 1.0, 0.0))
    key_ = jnp.where(cand, tier * 2.0**40 - qpos, -jnp.inf)
    k = min(window, n_slots)
    top, idx = jax.lax.top_k(key_, k)
    valid = top > -jnp.inf
    is_new = valid & new[idx]
    # HyGen*: new offline starts under the rate cap (one at t = 0, then `rate_cap` per second)
    capped = jnp.isfinite(pp.rate_cap)
    allow = jnp.floor(jnp.where(capped, pp.rate_cap * t, 0.0)) + 1.0 - st.n_started
    valid = valid & (~is_new | ~capped | (jnp.cumsum(is_new) <= allow))
    is_dec = dec[idx]
    c = jnp.where(valid, rem[idx], 0)
    pf = sl.prefilled[idx]
    blocks = jnp.where(valid, ls.new_blocks(pf, c, sl.kv_blocks[idx]), 0)

    n_p0, n_d0, s_p0, s_d0 = _features(sl, g_on, dec)
    on_blocks = jnp.sum(jnp.where(g_on > 0, ls.new_blocks(sl.prefilled, g_on, sl.kv_blocks), 0))
    tok = jnp.sum(g_on) + jnp.cumsum(c)
    cnt = jnp.sum(g_on > 0) + jnp.cumsum(valid)
    blk = on_blocks + jnp.cumsum(blocks)
    is_pre = valid & ~is_dec
    has_pre = jnp.any((g_on > 0) & ~dec) | (jnp.cumsum(is_pre) > 0)
    n_p = n_p0 + jnp.cumsum(is_pre)
    n_d = n_d0 + jnp.cumsum(valid & is_dec)
    s_p = s_p0 + jnp.cumsum(jnp.where(is_pre, c, 0))
    s_d = s_d0 + jnp.cumsum(jnp.where(valid & is_dec, pf + 1, 0))
    lat = pp.latency_budget
    t_hat = predict(pp.coef, n_p, n_d, s_p, s_d)
    fits = (
      valid
      & (tok <= budget)
      & (cnt <= max_seqs)
      & (blk <= obs.free_blocks - jnp.where(has_pre, wm, 0))
      & (t_hat <= lat)
    )
    # Longest feasible prefix; candidates the cap holds back are skipped, not a stop.
    stop = valid & ~fits
    n_full = jnp.where(jnp.any(stop), jnp.argmax(stop), k)
    prefix = valid & (jnp.arange(k) < n_full)
    b = jnp.minimum(n_full, k - 1)
    # The first offline prefill that does not fit whole: its largest chunk that does.
    before = lambda x0, x: jnp.where(n_full > 0, x[jnp.maximum(n_full - 1, 0)], x0)  # noqa: E731
    tok_b = before(jnp.sum(g_on), tok)
    blk_b = before(on_blocks, blk)
    n_p_b, n_d_b = before(n_p0, n_p), before(n_d0, n_d)
    s_p_b, s_d_b = before(s_p0, s_p), before(s_d0, s_d)
    room_b = obs.free_blocks - wm - blk_b
    hi = jnp.minimum(c[b], budget - tok_b)

    def chunk_fits(x):
      return (ls.new_blocks(pf[b], x, sl.kv_blocks[idx[b]]) <= room_b) & (
        predict(pp.coef, n_p_b + 1, n_d_b, s_p_b + x, s_d_b) <= lat
      )

    def bisect(_, lo_hi):  # largest x in [0, hi] with chunk_fits (0 always "fits")
      lo, hi_ = lo_hi
      mid = (lo + hi_ + 1) // 2
      good = chunk_fits(mid)
      return jnp.where(good, mid, lo), jnp.where(good, hi_, mid - 1)

    cut = jax.lax.fori_loop(0, 32, bisect, (jnp.int32(0), jnp.maximum(hi, 0).astype(jnp.int32)))[0]
    can_cut = (n_full < k) & valid[b] & ~is_dec[b] & (cnt[b] <= max_seqs) & (hi > 0)
    cut = jnp.where(can_cut, cut, 0)
    g_off = jnp.where(prefix, c, 0).at[b].add(jnp.where(n_full < k, cut, 0))
    grant = g_on + jnp.zeros((n_slots,), jnp.int32).at[idx].add(
      jnp.where(valid, g_off, 0).astype(jnp.int32)
    )

    # Starts counted here: a new offline request granted for the first time.
    started = off & new & (grant > 0) & (st.seen != sl.wid)
    n_started = st.n_started + jnp.sum(started)
    wait_sum = st.wait_sum + jnp.sum(jnp.where(started, t - sl.release, 0.0))
    seen = jnp.where(started, sl.wid, st.seen)

    horizon = _horizon(sl, grant, dec, ok, off, priority, pp)
    action = ls.Action(
      grant=grant.astype(jnp.int32),
      priority=priority.astype(jnp.float32),
      preempt=preempt,
      horizon=horizon,
      fixed_order=jnp.asarray(False),
    )
    return action, HyGenState(n_started, wait_sum, seen)

  return common.Policy(init=init, plan=common.no_plan, act=act)


def _starving(sl, t, waiting_new, st, pp):
  """One-hot: the oldest new offline request, once its wait exceeds `starvation` x the mean
  wait of the offline requests started so far [R, serving.md 3.4]."""
  mean_wait = st.wait_sum / jnp.maximum(st.n_started, 1.0)
  qpos = jnp.where(waiting_new, common.queue_pos(sl), jnp.inf)
  oldest = jnp.argmin(qpos)
  wait = t - sl.release[oldest]
  fire = jnp.any(waiting_new) & (st.n_started > 0) & (wait > pp.starvation * mean_wait)
  return (jnp.arange(sl.wid.shape[0]) == oldest) & fire


def _horizon(sl, grant, dec, ok, off, priority, pp):
  """Iterations the same decode batch stays within the budget (bounds a macro-step).

  From iteration 2 on every member decodes with context `prefilled + grant + 1`, growing by one
  per iteration, so under each decode row r (`coef[0, r]`) each prefix's predicted time grows by
  `c5_r` per member and iteration: with M_r the largest prefix prediction of row r at iteration
  2 and N members, iteration u is safe while `M_r + (u - 2) c5_r N <= L` for both rows (less a
  rounding margin). Only matters when the batch is every runnable request (otherwise no
  macro-step runs)."""
  granted = grant > 0
  rows = pp.coef[0]  # [2, 6]: the decode-only piece
  c0, c4, c5 = rows[:, 0], rows[:, 4], rows[:, 5]  # [2]
  ctx2 = (sl.prefilled + grant + 1).astype(jnp.float64)
  n_on = jnp.sum(granted & ~off).astype(jnp.float64)
  base = c0 + c4 * n_on + c5 * jnp.sum(jnp.where(granted & ~off, ctx2, 0.0))  # [2]
  # offline members in phase 2 order: decode tier first, then queue order (priority order)
  mem = granted & off
  order_key = jnp.where(mem, priority.astype(jnp.float64), -jnp.inf)
  inc = jnp.where(mem[:, None], c4[None, :] + c5[None, :] * ctx2[:, None], 0.0)  # [n, 2]
  # prefix sums in that order via the pairwise "no later than" matrix (members are few)
  ahead = (order_key[:, None] >= order_key[None, :]).astype(jnp.float64)
  prefix = base[:, None] + inc.T @ ahead  # [2, n]
  m2 = jnp.maximum(base, jnp.max(jnp.where(mem[None, :], prefix, -jnp.inf), axis=1))
  n = jnp.sum(granted).astype(jnp.float64)
  lat = pp.latency_budget
  slack = lat - 1e-9 * (1.0 + jnp.abs(lat)) - m2
  steps = jnp.floor(slack / jnp.maximum(c5 * n, 1e-300))
  h = jnp.where(slack < 0, 1.0, 2.0 + jnp.minimum(steps, 1e9))
  h = jnp.where(c5 < 0, 1.0, jnp.where(c5 == 0, jnp.where(slack < 0, 1.0, 1e9), h))
  h = jnp.min(h)
  unbounded = ~jnp.isfinite(lat) | ~jnp.any(ok & off)
  return jnp.where(unbounded, ls.NO_LIMIT, jnp.minimum(h, ls.NO_LIMIT)).astype(jnp.int32)


# ---------------------------------------------------------------------------- PSM order


def psm_order(prefix_id, prefix_len=None) -> np.ndarray:
  """Host-side PSM order of offline rows: the DFS order of a one-level prefix trie [R, 3.4].

  Children by subtree size: the largest prefix group first (ties: the smaller group id), rows of
  a group in their given order; rows without a prefix (-1) last, in their given order.

  Returns:
    int64 permutation of range(len(prefix_id)).
  """
  pid = np.asarray(prefix_id, np.int64)
  groups, counts = np.unique(pid[pid >= 0], return_counts=True)
  rank = {g: r for r, g in enumerate(groups[np.lexsort((groups, -counts))])}
  key = np.array([rank[g] if g >= 0 else len(rank) for g in pid.tolist()], np.int64)
  return np.argsort(key, kind="stable")


# ---------------------------------------------------------------------------- profiler


def budget_grid(coef, env_params: ls.EnvParams, n: int = 32, max_ctx: int = 2048) -> np.ndarray:
  """n budgets L (s), geometric from one decode step to a full-budget prefill next to a full
  decode batch (serving.md 3.2), as predicted by `coef`."""
  c = np.asarray(coef, np.float64)
  budget, seqs = float(env_params.token_budget), float(env_params.max_seqs)
  lo = float(predict(c, 0.0, 1.0, 0.0, 1.0))
  hi = float(predict(c, 1.0, seqs - 1.0, budget, (seqs - 1.0) * max_ctx))
  return np.geomspace(max(lo, 1e-4), max(hi, 2.0 * max(lo, 1e-4)), n)


def profile(
  env,
  env_params,
  workload,
  coef,
  values,
  *,
  kind: str = "budget",
  tau: float = 0.1,
  tau_tbt: float | None = None,
  window: int = OFFLINE_WINDOW,
  key=None,
  chunk_steps: int = 1024,
) -> dict:
  """SLO-aware profiler: one vmapped sweep over profiling slices x (online-only lane + `values`).

  `workload` is one workload or a list of S slices (same request counts: they are stacked,
  `workload_axis=0`); `env_params` one `EnvParams` or a list of S (each slice its own arrival
  scale and `offline_stop`, the measuring window that ends the offline stream).
  kind "budget": HyGen with L = each value; kind "cap": Sarathi++ with an offline start-rate cap
  of each value (HyGen*). The online-only lane runs the same policy with `offline_slots = 0`.
  [R] A value is feasible when on every slice the online P99 TTFT is within (1 + tau) and the
  mean TBT within (1 + tau_tbt, default tau) of that slice's online-only lane (a budget tuned
  on one slice of a bursty trace does not carry over; the worst slice decides); the largest
  feasible value wins (the smallest value when none is feasible, with `feasible_any` False).

  Returns:
    dict: values; per slice "base" (online-only metrics, list of S dicts), ttft_ratio and
    tbt_ratio f64[S, V] (over the slice's online-only lane), offline_tokens_s and
    offline_starts_s f64[S, V]; "feasible" bool[V] (every slice), "best", "feasible_any".
  """
  if kind not in ("budget", "cap"):
    raise ValueError(f"profile: kind={kind!r}: use 'budget' or 'cap'")
  wls = list(workload) if isinstance(workload, list | tuple) else [workload]
  eps = list(env_params) if isinstance(env_params, list | tuple) else [env_params] * len(wls)
  if len(eps) != len(wls):
    raise ValueError(f"profile: {len(eps)} env_params for {len(wls)} workloads")
  for ep in eps:
    if not np.isfinite(float(ep.offline_stop)):
      raise ValueError("profile: set env_params.offline_stop (the window) so that lanes end")
  if len({w.n_total for w in wls}) != 1:
    raise ValueError(f"profile: slices differ in request count {[w.n_total for w in wls]}")
  from jaxsys.lib import sim
  from jaxsys.systems import serving_metrics

  values = np.asarray(values, np.float64)
  if values.ndim != 1 or values.size < 1 or np.any(np.diff(values) <= 0):
    raise ValueError("profile: values must be a non-empty increasing 1-D grid")
  tau_tbt = tau if tau_tbt is None else tau_tbt
  n_s, n_v = len(wls), values.size
  lanes_env, lanes_pp, lanes_wl = [], [], []
  for ep, wl in zip(eps, wls, strict=True):
    lanes_env += [ep.replace(offline_slots=0)] + [ep] * n_v
    lanes_pp.append(params(ep, coef, np.inf))
    if kind == "budget":
      lanes_pp += [params(ep, coef, v) for v in values]
    else:
      lanes_pp += [params(ep, coef, np.inf, rate_cap=v) for v in values]
    lanes_wl += [wl] * (1 + n_v)
  key = jax.random.key(0) if key is None else key
  keys = jnp.stack([key] * len(lanes_env))
  state, pstate = sim.sweep(
    env,
    hygen(window),
    sim.stack(lanes_env),
    sim.stack(lanes_pp),
    keys,
    sim.stack(lanes_wl),
    workload_axis=0,
    chunk_steps=chunk_steps,
  )
  state, n_started = jax.device_get((state, pstate.n_started))
  bases, rows = [], []
  ttft, tbt, tok, starts = (np.zeros((n_s, n_v)) for _ in range(4))
  for s_i, (ep, wl) in enumerate(zip(eps, wls, strict=True)):
    t_end = float(ep.offline_stop)
    lane_rows = []
    for v_i in range(1 + n_v):
      i = s_i * (1 + n_v) + v_i
      out = serving_metrics.lane(state.outputs, i)
      off_tokens = np.asarray(state.offline_tokens)[i]
      lane_rows.append(serving_metrics.hybrid_summary(wl, out, t_end, off_tokens))
    base = lane_rows[0]
    bases.append(base)
    rows.append(lane_rows[1:])
    ttft[s_i] = [r["ttft_p99"] / base["ttft_p99"] for r in lane_rows[1:]]
    tbt[s_i] = [r["tbt_mean"] / base["tbt_mean"] for r in lane_rows[1:]]
    tok[s_i] = [r["offline_tokens_s"] for r in lane_rows[1:]]
    first = s_i * (1 + n_v) + 1
    starts[s_i] = np.asarray(n_started)[first : first + n_v] / t_end
  ok = np.all((ttft <= 1.0 + tau) & (tbt <= 1.0 + tau_tbt), axis=0)
  best = float(values[np.flatnonzero(ok)[-1]]) if ok.any() else float(values[0])
  return {
    "values": values,
    "base": bases,
    "ttft_ratio": ttft,
    "tbt_ratio": tbt,
    "offline_tokens_s": tok,
    "offline_starts_s": starts,
    "rows": rows,
    "feasible": ok,
    "feasible_any": bool(ok.any()),
    "best": best,
  }


def largest_feasible(prof: dict, tau: float, tau_tbt: float | None = None) -> float:
  """The largest profiled value within (1 + tau) on every slice (nan when none)."""
  tau_tbt = tau if tau_tbt is None else tau_tbt
  ok = np.all((prof["ttft_ratio"] <= 1 + tau) & (prof["tbt_ratio"] <= 1 + tau_tbt), axis=0)
  return float(prof["values"][np.flatnonzero(ok)[-1]]) if ok.any() else float("nan")
