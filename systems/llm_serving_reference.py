"""Plain-Python reference simulator of the LLM-serving engine (continuous batching, paged KV).

It follows docs/llm_serving_semantics.md rule by rule, tie-breaks included, so its per-request
outputs equal those of the jitted environment (systems/llm_serving.py) driven by the same
policy. It is also the honest baseline of the speed benchmark: an ordinary event loop over the
live requests (a dict of records, a heap of free slots, a sort of the candidates only), with no
numpy in the per-step loop.

Step order per iteration, as in the jitted driver (lib/sim.py): the engine admits what is due
at the current clock, the policy plans (Tempo, every `plan_every` steps) and acts on that
table, then the engine preempts, projects, times and advances (semantics steps 1-11). The
jitted engine admits at the end of each step (and in `init`), which is the same sequence: a
request is seen by the policy, and can be granted, in the first iteration that starts at or
after its arrival.

Readings of the contract where its text leaves a choice (the jitted code makes the same ones):
- Tempo's busy rings start at zero and "oldest" is the entry the push drops (ten plans ago), so
  until ten plans have run `unit` is the mean over all busy iterations so far.
- A collective node's sub-deadline is `arrival + (stage + 1) / n_stages * (deadline_abs -
  arrival)`, with `arrival` the scaled job arrival and `deadline_abs` its absolute job deadline.
- Each plan replaces the swap queue; marks not yet acted on (the slot was not RUNNING) wait until
  the next plan.

Shared-prefix KV caching (`config.n_prefixes > 0`, docs "Shared prefixes" [R]) is a dict of
resident prefixes (`_PrefixCache`): a request keeps its own blocks in `kv` and, while attached,
reads `pb` shared blocks; every block count a decision needs is `kv + pb`. Attach runs right
after admission (the jitted engine's end of step), publish after the iteration's tokens are
emitted and before finishes, eviction where a memory victim would be taken.

Usage:

  res = simulate(workload, EnvConfig(n_slots=64, n_prefixes=57), EnvParams(), "sarathi")
  print(res["finish_t"], res["prefix_hits"], res["prefix_evictions"])
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import math
from array import array

import numpy as np

BLOCK_SIZE = 16
GAIN_FLOOR = 1e-9  # a gain factor below it counts as 0
EMPTY, BLOCKED, WAITING, RUNNING, PREEMPTED = 0, 1, 2, 3, 4
OFFLINE = 3  # request class of the offline stream
POLICIES = ("fcfs", "vllm", "sarathi", "ltr", "edf", "srtf", "tempo", "hygen")

_INF = math.inf
_NEG = -1e30  # Tempo's log-density floor (nothing left to gain)
_TIER = 2.0**22  # Sarathi tier offset, exact in float32 next to queue positions
_RING = 10  # Tempo: plan periods averaged for the iteration time


def _f32(values):
  """Rounds Python floats to float32 values (NaN ordered lowest, as the env's sortable key)."""
  return [-_INF if p != p else p for p in array("f", values).tolist()]


class _Req:
  """One occupied slot of the request table."""

  __slots__ = (
    "wid",
    "slot",
    "status",
    "arrival",
    "release",
    "seq",
    "prompt",
    "out_len",
    "generated",
    "prefilled",
    "kv",
    "first_t",
    "last_t",
    "tbt_sum",
    "tbt_max",
    "n_preempt",
    "gain",
    "good",
    "cls",
    "slo_ttft",
    "slo_tbt",
    "deadline_abs",
    "target",
    "job",
    "stage",
    "prio",
    "wish",
    "pid",
    "share",
    "pb",
  )


class _PrefixCache:
  """Resident shared prefixes: group -> [blocks, requests attached, time of the last detach].

  A request of group `r.pid` may share `r.share` tokens (whole blocks of its prefix, 0 when its
  prefix is shorter than a block); `r.pb` is the number of shared blocks it reads (0 unattached).
  """

  def __init__(self):
    self.resident = {}
    self.hits = self.saved = self.evictions = 0

  def blocks(self):
    return sum(e[0] for e in self.resident.values())

  def attach(self, r, t):
    """A queued request at prefilled 0 whose prefix is resident starts after it."""
    e = self.resident.get(r.pid)
    if e is None or r.prefilled != 0 or r.status not in (WAITING, PREEMPTED):
      return
    e[1] += 1
    e[2] = t
    r.pb = e[0]
    r.prefilled = r.share
    self.hits += 1
    self.saved += r.share

  def detach(self, r, t):
    if r.pb:
      e = self.resident[r.pid]
      e[1] -= 1
      e[2] = t
      r.pb = 0

  def publish(self, r, t):
    """An unattached request past its group's shareable prefix hands those blocks over."""
    if r.share and not r.pb and r.pid not in self.resident and r.prefilled >= r.share:
      b = r.share // BLOCK_SIZE
      r.kv -= b
      r.pb = b
      self.resident[r.pid] = [b, 1, t]

  def reclaimable(self, live):
    """Resident groups that no RUNNING request reads."""
    read = {r.pid for r in live.values() if r.pb and r.status == RUNNING}
    return [g for g in self.resident if g not in read]

  def evict(self, live, stopped):
    """Frees one reclaimable prefix and returns its blocks (None when there is none): the least
    recently used unreferenced one, else the least recently used one that only queued requests
    attached to (they go back to prefilled 0, their attach is taken back, and they sit out this
    iteration: added to `stopped`); lowest group on ties."""
    groups = self.reclaimable(live)
    if not groups:
      return None
    g = min(groups, key=lambda g: (self.resident[g][1] > 0, self.resident[g][2], g))
    for r in live.values():
      if r.pb and r.pid == g:
        r.prefilled = r.pb = 0
        self.hits -= 1
        self.saved -= r.share
        stopped.add(r.slot)
    self.evictions += 1
    return self.resident.pop(g)[0]


def _time_model(name: str, coef):
  """Batch time (s) of one iteration from its features, per docs 'Batch features'."""
  c = {f.name: float(getattr(coef, f.name)) for f in dataclasses.fields(coef)}
  if name == "linear":
    a_p, b_p, c_q, c_s, c_a, e_p = (c[k] for k in ("a_p", "b_p", "c_q", "c_s", "c_a", "e_p"))
    row1 = (c["a_d"], c["b_d"], c["c_d"])
    row2 = (c["a_d2"], c["b_d2"], c["c_d2"])
    threshold = c["bs_threshold"]

    def linear(n_p, n_d, s_p, q, a, k, s_d):
      a_d, b_d, c_d = row2 if n_d >= threshold else row1
      intercept = a_p if n_p > 0 else (a_d if n_d > 0 else 0.0)
      # Grouped as in systems/timing.py so that both round alike.
      prefill = b_p * s_p + c_q * q + c_s * s_p**2 + c_a * a + e_p * n_p
      decode = b_d * s_d + c_d * n_d
      ms = intercept + prefill + decode
      return ms * 1e-3

    return linear
  if name == "roofline":
    p, n_layers, d, d_kv = c["n_params"], c["n_layers"], c["d_model"], c["d_kv"]
    flops_p = c["flops"] * c["mfu_p"]
    flops_d = c["flops"] * c["mfu_d"]
    bandwidth = c["bandwidth"] * c["eta"]
    o_layer, o_iter = c["o_layer"], c["o_iter"]

    def roofline(n_p, n_d, s_p, q, a, k, s_d):
      f_p = 2.0 * p * s_p + 4.0 * n_layers * d * a
      f_d = 2.0 * p * n_d + 4.0 * n_layers * d * s_d
      moved = 2.0 * p + 4.0 * n_layers * d_kv * (k + s_d)
      return max(f_p / flops_p + f_d / flops_d, moved / bandwidth) + n_layers * o_layer + o_iter

    return roofline
  raise ValueError(f"time_model={name!r}: use 'roofline' or 'linear'")


# ----------------------------------------------------------------------------------------------
# Policies: each sets `r.prio` (float32 value) on every visible request and returns the requests
# it preempts. The obs is the table before this step's admission, BLOCKED nodes hidden.


class _Fcfs:
  def act(self, vis, t, step, busy_time, busy_steps):
    if not vis:
      return ()
    first = min(r.seq for r in vis)
    for r, p in zip(vis, _f32([first - r.seq for r in vis]), strict=True):
      r.prio = p
    return ()


class _Sarathi:
  def act(self, vis, t, step, busy_time, busy_steps):
    if not vis:
      return ()
    first = min(r.seq for r in vis)
    prios = []
    for r in vis:
      if r.generated >= 1 and r.prompt + r.generated - r.prefilled == 1:
        tier = 2.0
      else:
        tier = 1.0 if r.prefilled > 0 else 0.0
      prios.append(tier * _TIER - (r.seq - first))
    for r, p in zip(vis, _f32(prios), strict=True):
      r.prio = p
    return ()


def _deadline(r):
  if r.cls == 0:
    return r.release + r.slo_ttft if r.generated == 0 else r.last_t + r.slo_tbt
  return r.deadline_abs


class _Edf:
  def act(self, vis, t, step, busy_time, busy_steps):
    for r, p in zip(vis, _f32([-(_deadline(r) - t) for r in vis]), strict=True):
      r.prio = p
    return ()


class _Srtf:
  def act(self, vis, t, step, busy_time, busy_steps):
    prios = []
    for r in vis:
      ttd = _deadline(r) - t
      prios.append(-ttd if ttd > 0 else -1e6 + ttd)
    for r, p in zip(vis, _f32(prios), strict=True):
      r.prio = p
    return ()


class _Bound:
  """Output-length bound UB (docs 'Length bound UB'): a quantile table or given lengths."""

  def __init__(self, pp: dict, prompts: list):
    lengths = pp.get("lengths")
    self.given = lengths is not None
    if self.given:
      self.lengths = np.asarray(lengths, np.float64).tolist()
      return
    edges = np.asarray(pp["edges"], np.float32).astype(np.float64).tolist()
    self.table = np.asarray(pp["table"], np.float32).astype(np.float64).tolist()
    self.mark_every = int(pp.get("mark_every", 50))
    self.last_mark = len(self.table[0]) - 1
    # A prompt never changes, so its bucket (searchsorted side='right') is found once.
    self.bucket = [bisect.bisect_right(edges, p) for p in prompts]

  def __call__(self, r) -> float:
    g = r.generated
    if self.given:
      ub = self.lengths[r.wid]
    else:
      ub = self.table[self.bucket[r.wid]][min(g // self.mark_every, self.last_mark)]
    return max(ub, g + 1.0)


class _Ltr:
  def __init__(self, bound: _Bound):
    self.bound = bound

  def act(self, vis, t, step, busy_time, busy_steps):
    ub = self.bound
    for r, p in zip(vis, _f32([-(ub(r) - r.generated) for r in vis]), strict=True):
      r.prio = p
    return ()


def _div(x, y):
  """IEEE division: the jitted code divides by zero when a release lies in the future."""
  try:
    return x / y
  except ZeroDivisionError:
    if x == 0 or x != x:
      return math.nan
    return math.copysign(_INF, x) * math.copysign(1.0, y)


def _log_clamp(x):
  """log(min(1, max(1e-6, x))), NaN kept as NaN like jnp.clip."""
  if x >= 1.0:
    return 0.0
  if x < 1e-6:
    return math.log(1e-6)
  return math.log(x)  # NaN falls through and stays NaN


def _safe_log(x):
  return math.log(x) if x > 0 else -_INF


def _logaddexp(x, y):
  """jnp.logaddexp: max + log1p(exp(-|x - y|)), x + y where the difference is NaN."""
  delta = x - y
  if delta != delta:
    return x + y
  return max(x, y) + math.log1p(math.exp(-abs(delta)))


class _Tempo:
  """Tempo gain density with GMAX windows (docs 'Tempo')."""

  def __init__(self, bound: _Bound, pp: dict, batch: int, n_slots: int):
    self.bound = bound
    self.alpha = float(pp.get("alpha", 100.0))
    self.w = float(pp.get("decode_weight", 8.0))
    self.batch = int(pp.get("batch", batch))
    self.topk = int(pp.get("topk_factor", 3))
    self.max_swaps = int(pp.get("max_swaps", 4))
    self.gmax = bool(pp.get("gmax", True))
    self.plan_every = int(pp.get("plan_every", 50))
    self.n_slots = n_slots
    self.ring_time = [0.0] * _RING
    self.ring_steps = [0] * _RING
    self.unit = 0.02
    self.window = set()  # wids in the GMAX window
    self.lo = self.hi = -1
    self.swap = set()  # wids queued for preemption

  def log_density(self, r, t, unit):
    a, w = self.alpha, self.w
    g = r.generated
    ub = self.bound(r)
    rem = max(ub - g, 0.0)
    rem_time = max(unit * rem, 1e-6)
    served = t - r.release
    finish = served + rem_time
    if r.cls == 0:
      ttlt = r.slo_ttft + (ub - 1.0) * r.slo_tbt
      late = a * _log_clamp(_div(ttlt, finish))
      if g == 0:
        first = math.log(r.prompt) + a * _log_clamp(_div(r.slo_ttft, served + unit))
        log_reward = _logaddexp(first, _safe_log(w * ub) + late)
      else:
        log_reward = _logaddexp(_safe_log(r.gain), _safe_log(w * rem) + late)
    else:
      deadline = r.target - r.release
      log_reward = math.log(r.prompt + w * ub) + a * _log_clamp(_div(deadline, finish))
    logd = log_reward - math.log(rem_time)
    if logd != logd or logd in (_INF, -_INF):
      return _NEG
    return min(max(logd, _NEG), -_NEG)

  def plan(self, vis, t, busy_time, busy_steps):
    d_steps = busy_steps - self.ring_steps[0]
    if d_steps > 0:
      self.unit = (busy_time - self.ring_time[0]) / d_steps
    self.ring_time = self.ring_time[1:] + [busy_time]
    self.ring_steps = self.ring_steps[1:] + [busy_steps]
    if not self.gmax:
      return
    unit = self.unit
    d32 = _f32([self.log_density(r, t, unit) for r in vis])
    dens = {r.slot: d for r, d in zip(vis, d32, strict=True)}
    k = min(self.batch * self.topk, self.n_slots)
    b = min(self.batch, k)
    cands = sorted(vis, key=lambda r: (-dens[r.slot], r.slot))[:k]
    score = {r.slot: k - i for i, r in enumerate(cands)}
    cands.sort(key=lambda r: (r.prompt + r.generated, r.slot))
    if len(cands) > b:
      # Integer rank sums (docs [R]): the first run of b candidates with the largest sum.
      scores = [score[r.slot] for r in cands]
      best = run = sum(scores[:b])
      start = 0
      for j in range(1, len(cands) - b + 1):
        run += scores[j + b - 1] - scores[j - 1]
        if run > best:
          best, start = run, j
      members = cands[start : start + b]
    else:
      members = cands
    self.window = {r.wid for r in members}
    self.swap = set()
    if not members:
      self.lo = self.hi = -1
      return
    lengths = [r.prompt + r.generated for r in members]
    self.lo, self.hi = min(lengths), max(lengths)
    floor = min(dens[r.slot] for r in members)
    for r in vis:
      length = r.prompt + r.generated
      if (
        r.status == RUNNING
        and r.wid not in self.window
        and (length < self.lo or length > self.hi)
        and dens[r.slot] < floor
      ):
        self.swap.add(r.wid)

  def act(self, vis, t, step, busy_time, busy_steps):
    if step % self.plan_every == 0:
      self.plan(vis, t, busy_time, busy_steps)
    unit, window, lo, hi = self.unit, self.window, self.lo, self.hi
    prios = []
    for r in vis:
      length = r.prompt + r.generated
      if r.wid in window:
        tier = 2.0
      else:
        tier = 1.0 if lo <= length <= hi else 0.0
      logd = min(max(self.log_density(r, t, unit), -2000.0), 2000.0)
      prios.append(tier * 4096.0 + logd)
    for r, p in zip(vis, _f32(prios), strict=True):
      r.prio = p
    if not self.swap:
      return ()
    queued = sorted(
      (r for r in vis if r.status == RUNNING and r.wid in self.swap), key=lambda r: r.slot
    )
    chosen = queued[: self.max_swaps]
    for r in chosen:
      self.swap.discard(r.wid)
    return chosen


# ----------------------------------------------------------------------------------------------
# HyGen (docs "HyGen"): online Sarathi first, then offline work under the predicted-time budget.

_OFFLINE_SHIFT = 2.0**24


def _blocks_for(r, c):
  return max(0, -(-(r.prefilled + c) // BLOCK_SIZE) - r.kv - r.pb)


def _is_decode(r):
  return r.generated >= 1 and r.prompt + r.generated - r.prefilled == 1


def _fill_py(cands, demand, free, budget, max_seqs, wm):
  """The env's fill (chunked): longest feasible prefix of `cands` (already in order), the first
  prefill that does not fit cut to the tokens left. Returns {slot: tokens}."""
  out = {}
  tokens = blocks = 0
  has_prefill = False
  for r in cands:
    c = demand[r.slot]
    decode = _is_decode(r)
    nb = _blocks_for(r, c)
    pre = has_prefill or not decode
    if (
      tokens + c <= budget and len(out) + 1 <= max_seqs and blocks + nb <= free - (wm if pre else 0)
    ):
      out[r.slot] = c
      tokens, blocks, has_prefill = tokens + c, blocks + nb, pre
      continue
    if not decode:
      c = min(budget - tokens, c)
      nb = _blocks_for(r, c)
      if c > 0 and len(out) + 1 <= max_seqs and blocks + nb <= free - wm:
        out[r.slot] = c
    break
  return out


def _predict(coef, n_p, n_d, s_p, s_d):
  """Piecewise predictor: coef[0] (two rows) for a decode-only batch, coef[1] with prefill; the
  larger of the piece's two affine rows."""

  def row(c):
    t = c[0] + c[1] * s_p
    t = t + c[2] * (s_p * s_p)
    t = t + c[3] * n_p
    t = t + c[4] * n_d
    return t + c[5] * s_d

  piece = coef[1] if n_p > 0 else coef[0]
  return max(row(piece[0]), row(piece[1]))


class _HyGen:
  """Two-phase HyGen; Sarathi++ with latency_budget = inf, HyGen* with a finite rate_cap."""

  def __init__(self, pp: dict, params):
    coef = np.asarray(pp.get("coef", np.zeros(6)), np.float64)
    if coef.shape == (6,):  # one linear form: every piece and row the same
      coef = np.broadcast_to(coef, (2, 2, 6))
    self.coef = [[[float(x) for x in r] for r in piece] for piece in coef.reshape(2, 2, 6)]
    self.lat = float(pp.get("latency_budget", _INF))
    self.cap = float(pp.get("rate_cap", _INF))
    self.starv = float(pp.get("starvation", 4.0))
    self.window = int(pp.get("window", 32))
    self.budget, self.max_seqs = int(params.token_budget), int(params.max_seqs)
    self.wm = math.floor(float(params.watermark) * int(params.num_blocks))
    self.n_started = self.wait_sum = 0.0
    self.seen = {}  # slot -> wid whose start was counted
    self.free = 0  # set by the simulator before every act

  def act(self, vis, t, step, busy_time, busy_steps):
    if not vis:
      return ()
    first = min(r.seq for r in vis)
    prios = []
    for r in vis:
      tier = 2.0 if _is_decode(r) else (1.0 if r.prefilled > 0 else 0.0)
      p = tier * _TIER - (r.seq - first)
      prios.append(p - _OFFLINE_SHIFT if r.cls == OFFLINE else p)
    for r, p in zip(vis, _f32(prios), strict=True):
      r.prio, r.wish = p, 0
    free, budget, max_seqs, wm, coef, lat = (
      self.free,
      self.budget,
      self.max_seqs,
      self.wm,
      self.coef,
      self.lat,
    )
    ready = sorted((r for r in vis if r.release <= t), key=_order)
    online = [r for r in ready if r.cls != OFFLINE]
    demand = {r.slot: r.prompt + r.generated - r.prefilled for r in ready}
    g_on = _fill_py(online, demand, free, budget, max_seqs, wm)
    short = g_on != _fill_py(online, demand, 1 << 30, budget, max_seqs, 0)
    preempt = []
    if short:
      holders = [r for r in vis if r.cls == OFFLINE and r.kv + r.pb > 0 and r.status == RUNNING]
      if holders:
        preempt = [max(holders, key=_order)]
    by_slot = {r.slot: r for r in ready}
    for slot, c in g_on.items():
      by_slot[slot].wish = c
    if not short:
      self._offline(ready, first, g_on, demand, t, free, budget, max_seqs, wm, coef, lat)
    for r in vis:  # count starts of new offline requests
      if r.cls == OFFLINE and r.wish > 0 and self._new(r) and self.seen.get(r.slot) != r.wid:
        self.n_started += 1
        self.wait_sum += t - r.release
        self.seen[r.slot] = r.wid
    return preempt

  @staticmethod
  def _new(r):
    return r.generated == 0 and r.prefilled == r.pb * BLOCK_SIZE and r.n_preempt == 0

  def _offline(self, ready, first, g_on, demand, t, free, budget, max_seqs, wm, coef, lat):
    cands = [r for r in ready if r.cls == OFFLINE]
    if not cands:
      return
    news = [r for r in cands if self._new(r)]
    starving = None
    if news and self.n_started > 0:
      oldest = min(news, key=lambda r: r.seq)
      mean_wait = self.wait_sum / max(self.n_started, 1.0)
      if t - oldest.release > self.starv * mean_wait:
        starving = oldest

    def tier(r):
      return 2.0 if _is_decode(r) else (1.0 if r is starving else 0.0)

    cands.sort(key=lambda r: (-(tier(r) * 2.0**40 - (r.seq - first)), r.slot))
    cands = cands[: self.window]
    capped = math.isfinite(self.cap)
    allow = math.floor(self.cap * t if capped else 0.0) + 1.0 - self.n_started
    by_slot = {r.slot: r for r in ready}
    tok = sum(g_on.values())
    cnt = len(g_on)
    blk = sum(_blocks_for(by_slot[s], c) for s, c in g_on.items())
    has_pre = any(not _is_decode(by_slot[s]) for s in g_on)
    n_p = sum(1 for s in g_on if not _is_decode(by_slot[s]))
    n_d = len(g_on) - n_p
    s_p = sum(c for s, c in g_on.items() if not _is_decode(by_slot[s]))
    s_d = sum(by_slot[s].prefilled + 1 for s in g_on if _is_decode(by_slot[s]))
    n_new = 0
    for r in cands:
      if self._new(r):
        n_new += 1
        if capped and n_new > allow:
          continue  # held back by the cap: skipped, not a stop
      c = demand[r.slot]
      dec = _is_decode(r)
      nb = _blocks_for(r, c)
      pre = has_pre or not dec
      n_p1, n_d1 = n_p + (0 if dec else 1), n_d + (1 if dec else 0)
      s_p1, s_d1 = s_p + (0 if dec else c), s_d + (r.prefilled + 1 if dec else 0)
      t_hat = _predict(coef, float(n_p1), float(n_d1), float(s_p1), float(s_d1))
      if (
        tok + c <= budget
        and cnt + 1 <= max_seqs
        and blk + nb <= free - (wm if pre else 0)
        and t_hat <= lat
      ):
        r.wish = c
        tok, cnt, blk, has_pre = tok + c, cnt + 1, blk + nb, pre
        n_p, n_d, s_p, s_d = n_p1, n_d1, s_p1, s_d1
        continue
      hi = min(c, budget - tok)
      if not dec and cnt + 1 <= max_seqs and hi > 0:
        room = free - wm - blk
        lo = 0
        for _ in range(32):
          mid = (lo + hi + 1) // 2
          ok = _blocks_for(r, mid) <= room and (
            _predict(coef, float(n_p + 1), float(n_d), float(s_p + mid), float(s_d)) <= lat
          )
          lo, hi = (mid, hi) if ok else (lo, mid - 1)
        r.wish = lo
      break


def _make_policy(name, pp, params, config, prompts):
  if name in ("fcfs", "vllm"):
    return _Fcfs()
  if name == "sarathi":
    return _Sarathi()
  if name == "edf":
    return _Edf()
  if name == "srtf":
    return _Srtf()
  if name == "ltr":
    return _Ltr(_Bound(pp, prompts))
  if name == "tempo":
    return _Tempo(_Bound(pp, prompts), pp, int(params.max_seqs), int(config.n_slots))
  if name == "hygen":
    return _HyGen(pp, params)
  raise ValueError(f"policy={name!r}: use one of {POLICIES}")


def _order(r):
  """The ordering rule: priority descending, then slot index ascending."""
  return (-r.prio, r.slot)


# ----------------------------------------------------------------------------------------------


def simulate(
  workload,
  config,
  params,
  policy: str,
  policy_params: dict | None = None,
  eps: np.ndarray | None = None,
  max_steps: int = 10_000_000,
  trace=None,
) -> dict:
  """Runs `workload` through the engine under `policy` until every request finished.

  Args:
    workload: `jaxsys.systems.workloads.Workload` (numpy arrays).
    config: `EnvConfig` (n_slots, admit_max, chunked_prefill, time_model, n_prefixes).
    params: `EnvParams`.
    policy: one of POLICIES; "vllm" and "fcfs" share the FCFS order (chunking is the config's).
    policy_params: for "ltr" and "tempo": `edges`, `table`, `mark_every` (table mode) or
      `lengths` (given mode); Tempo also `alpha`, `decode_weight`, `batch` (default
      params.max_seqs), `topk_factor`, `max_swaps`, `gmax`, `plan_every`.
    eps: standard normal noise, `eps[step]` scales the batch time of step `step` by
      `exp(noise_sigma * eps[step])`; None means no noise.
    max_steps: stop after this many iterations even if requests are left.
    trace: optional `trace(step, t, free_blocks, table)` called after every iteration, with
      `table` mapping each occupied slot to (wid, status, prefilled, generated, kv_blocks);
      with shared prefixes on, `trace(step, t, free_blocks, table, prefixes)`, the table's
      entries add (prefix group, shared blocks) and `prefixes` maps each resident group to
      (blocks, refcount, last use).

  Returns:
    Per-request numpy arrays (length n_total): finish_t (NaN if unfinished), ttft, tbt_max,
    tbt_mean, release, n_preempt, gain, good_tokens; scalars t, steps, busy_time, busy_steps,
    n_finished, n_mem_preempt, n_policy_preempt, admit_blocked, tokens (tokens processed),
    max_step_tokens (the largest batch, for the token-budget invariant), prefix_hits,
    prefix_tokens_saved and prefix_evictions.

  Raises:
    ValueError when shared prefixes are on and a prefix_id is >= config.n_prefixes.
  """
  pp = dict(policy_params or {})
  n_slots, admit_max = int(config.n_slots), int(config.admit_max)
  chunked = bool(config.chunked_prefill)
  budget, max_seqs = int(params.token_budget), int(params.max_seqs)
  max_resident = int(params.max_resident)
  num_blocks = int(params.num_blocks)
  watermark = math.floor(float(params.watermark) * num_blocks)
  scale = float(params.arrival_scale)
  sigma = float(params.noise_sigma)
  step_delay = float(params.step_delay)
  alpha, weight = float(params.alpha), float(params.decode_weight)
  batch_time = _time_model(config.time_model, params.time_coef)
  noise = None if eps is None or sigma == 0.0 else np.asarray(eps, np.float64).tolist()

  f64 = lambda x: np.asarray(x, np.float64).tolist()  # noqa: E731
  i64 = lambda x: np.asarray(x, np.int64).tolist()  # noqa: E731
  inv_scale = 1.0 / scale  # as the jitted env: a product with the reciprocal
  prompts, out_lens, classes = i64(workload.prompt_len), i64(workload.out_len), i64(workload.cls)
  # Online rows first (sorted, arrival scaled), then the offline stream (host order, unscaled).
  n_on = sum(1 for c in classes if c != OFFLINE)
  arrival = [a * inv_scale if i < n_on else a for i, a in enumerate(f64(workload.arrival))]
  off_quota, off_stop = int(params.offline_slots), float(params.offline_stop)
  slo_ttft, slo_tbt = f64(workload.slo_ttft), f64(workload.slo_tbt)
  deadline = f64(workload.deadline)
  job_id, stage_of = i64(workload.job_id), i64(workload.stage)
  job_stages, width = i64(workload.n_stages), i64(workload.width)
  stage_done = [[0] * len(row) for row in width]
  n = len(arrival)
  # Shared prefixes: each row's group and whole-block shareable tokens (none when off).
  n_prefixes = int(getattr(config, "n_prefixes", 0))
  group, share = [-1] * n, [0] * n
  if n_prefixes > 0 and getattr(workload, "prefix_id", None) is not None:
    group = i64(workload.prefix_id)
    if max(group) >= n_prefixes:
      i = next(j for j, g in enumerate(group) if g >= n_prefixes)
      raise ValueError(
        f"Workload.prefix_id[{i}] = {group[i]} but EnvConfig.n_prefixes = {n_prefixes}: "
        "prefix groups must lie in [0, n_prefixes)"
      )
    share = [
      BLOCK_SIZE * (p // BLOCK_SIZE) if g >= 0 else 0
      for g, p in zip(group, i64(workload.prefix_len), strict=True)
    ]
  cache = _PrefixCache() if n_prefixes > 0 else None

  pol = _make_policy(policy, pp, params, config, prompts)

  nan = math.nan
  finish_t, ttft, tbt_max, tbt_mean, release = ([nan] * n for _ in range(5))
  n_preempt, gain, good_tokens = [0] * n, [0.0] * n, [0.0] * n

  free_slots = list(range(n_slots))  # already a heap
  live = {}  # slot -> _Req, status WAITING, RUNNING or PREEMPTED (what the policy sees)
  blocked = {}  # slot -> _Req, DAG nodes waiting for their previous stage
  t = busy_time = 0.0
  step = busy_steps = n_finished = admit_blocked = n_mem = n_pol = 0
  mem_stall = False  # the last iteration had candidates but granted nothing (no KV blocks)
  free = num_blocks
  ptr = next_seq = 0
  off_ptr, off_live, n_dropped = n_on, 0, 0  # next offline row, offline requests in the table
  tokens_total = max_step_tokens = offline_tokens = 0

  while n_finished < n and step < max_steps:
    # 1. The offline window's close (its slots go back first), then due arrivals into the
    # lowest free slots, then available offline rows (in host order, under the quota and what
    # admit_max leaves).
    if t >= off_stop and (off_ptr < n or off_live > 0):
      n_dropped += n - off_ptr
      n_finished += n - off_ptr
      off_ptr = n
      for r in [r for r in live.values() if r.cls == OFFLINE]:
        free += r.kv
        if cache:
          cache.detach(r, t)
        r.kv, r.status = 0, EMPTY
        del live[r.slot]
        heapq.heappush(free_slots, r.slot)
        n_dropped += 1
        n_finished += 1
      off_live = 0
    n_due = 0
    while n_due < admit_max and ptr + n_due < n_on and arrival[ptr + n_due] <= t:
      n_due += 1
    n_admit = min(n_due, len(free_slots))
    admit_blocked += n_due - n_admit
    rows = list(range(ptr, ptr + n_admit))
    ptr += n_admit
    limit = min(admit_max - n_admit, len(free_slots) - n_admit, off_quota - off_live)
    n_off = 0
    while n_off < limit and off_ptr + n_off < n and arrival[off_ptr + n_off] <= t:
      n_off += 1
    rows += range(off_ptr, off_ptr + n_off)
    off_ptr += n_off
    off_live += n_off
    dag_event = False
    for wid in rows:
      r = _Req()
      r.wid = wid
      r.slot = heapq.heappop(free_slots)
      r.arrival = r.release = arrival[wid]
      r.prompt, r.out_len, r.cls = prompts[wid], out_lens[wid], classes[wid]
      r.generated = r.prefilled = r.kv = r.n_preempt = r.pb = 0
      r.pid, r.share = group[wid], share[wid]
      r.first_t = r.last_t = nan
      r.tbt_sum = r.tbt_max = r.gain = r.good = 0.0
      r.slo_ttft, r.slo_tbt = slo_ttft[wid], slo_tbt[wid]
      r.job, r.stage = job_id[wid], stage_of[wid]
      r.deadline_abs = _INF if r.cls in (0, OFFLINE) else r.arrival + deadline[wid]
      if r.cls == 2:
        n_stages = job_stages[r.job] if r.job >= 0 else 1
        r.target = r.arrival + (r.stage + 1.0) / n_stages * (r.deadline_abs - r.arrival)
      else:
        r.target = r.deadline_abs
      r.prio = -_INF
      r.wish = None  # a policy's grant wish; None asks for the whole remaining target
      if r.stage == 0:
        r.status, r.seq = WAITING, next_seq
        next_seq += 1
        live[r.slot] = r
      else:
        r.status, r.seq = BLOCKED, 0
        blocked[r.slot] = r
        dag_event = True

    if n_finished >= n:  # the last offline rows were dropped: nothing is left to run
      break
    # Attach: queued requests at prefilled 0 whose prefix is resident skip it.
    if cache:
      for r in live.values():
        cache.attach(r, t)
    # The policy acts on the table as the previous step and this admission left it.
    vis = list(live.values())
    if hasattr(pol, "free"):  # a policy that fills against the KV blocks (HyGen)
      # with shared prefixes, blocks of prefixes no running request reads count as free
      cached = sum(cache.resident[g][0] for g in cache.reclaimable(live)) if cache else 0
      pol.free = free + cached
    to_preempt = pol.act(vis, t, step, busy_time, busy_steps)

    # 2. Policy preemption (recompute: the KV is dropped).
    stopped = set()
    for r in to_preempt:
      if r.status == RUNNING:
        free += r.kv
        if cache:
          cache.detach(r, t)
        r.status, r.prefilled, r.kv = PREEMPTED, 0, 0
        r.n_preempt += 1
        n_pol += 1
        stopped.add(r.slot)

    # 3. Memory preemption: one victim when the running decodes cannot all grow by a token, or
    # when the last iteration stalled (its first candidate found no KV blocks).
    # Shared prefixes: evict the least recently used unreferenced prefix instead, if any.
    need = 0
    for r in vis:
      if r.status == RUNNING and r.generated >= 1 and r.prompt + r.generated - r.prefilled == 1:
        need += _blocks_for(r, 1)
    short = need > free or mem_stall
    evicted = cache.evict(live, stopped) if cache and short else None
    if evicted is not None:
      free += evicted
    elif short:
      holders = [r for r in vis if r.status == RUNNING and r.kv + r.pb > 0]
      if holders:
        victim = max(holders, key=_order)
        free += victim.kv
        if cache:
          cache.detach(victim, t)
        victim.status, victim.prefilled, victim.kv = PREEMPTED, 0, 0
        victim.n_preempt += 1
        n_mem += 1
        stopped.add(victim.slot)

    # 4. Project the wish (every runnable request asks for its remaining target) onto a
    # feasible batch: the longest feasible prefix in priority order, the last prefill cut.
    cands = [
      r for r in vis if r.release <= t and r.slot not in stopped and (r.wish is None or r.wish > 0)
    ]
    cands.sort(key=_order)
    # Residency: requests without KV enter only while fewer than max_resident hold KV.
    room = max_resident - sum(1 for r in vis if r.kv + r.pb > 0)
    kept = []
    for r in cands:
      if r.kv + r.pb == 0:
        if room <= 0:
          continue
        room -= 1
      kept.append(r)
    cands = kept
    batch = []
    tokens = blocks = 0
    has_prefill = False
    n_p = n_d = s_p = q = a_sum = k_sum = s_d = 0
    for r in cands:
      done = r.prefilled
      left = r.prompt + r.generated - done
      decode = r.generated >= 1 and left == 1
      c = demand = left if r.wish is None else min(r.wish, left)
      nb = _blocks_for(r, c)
      reserve = watermark if (has_prefill or not decode) else 0
      cut = False
      if tokens + c > budget or len(batch) >= max_seqs or blocks + nb > free - reserve:
        if decode or not chunked:
          break
        c = min(budget - tokens, demand)
        if c <= 0:
          break
        nb = _blocks_for(r, c)
        if len(batch) >= max_seqs or blocks + nb > free - watermark:
          break
        cut = True
      batch.append((r, c, nb))
      tokens += c
      blocks += nb
      if decode:
        n_d += 1
        s_d += done + 1
      else:
        has_prefill = True
        n_p += 1
        s_p += c
        q += c * c
        a_sum += c * (done + c)
        k_sum += done + c
      if cut:
        break
    free -= blocks

    # 5-6. Batch time and clock. Candidates but no grant means the first one found no KV
    # blocks: the clock stands still and the next iteration preempts a victim for it.
    mem_stall = bool(cands) and not batch
    if batch:
      dt = batch_time(
        float(n_p), float(n_d), float(s_p), float(q), float(a_sum), float(k_sum), float(s_d)
      )
      if noise is not None:
        dt *= math.exp(sigma * noise[step])
      t += dt
      busy_time += dt
      busy_steps += 1
      tokens_total += tokens
      offline_tokens += sum(c for r, c, _ in batch if r.cls == OFFLINE)
      max_step_tokens = max(max_step_tokens, tokens)
    elif not mem_stall:
      wake = arrival[ptr] if ptr < n_on else _INF
      for r in live.values():
        if r.release > t and r.release < wake and r.status in (WAITING, PREEMPTED):
          wake = r.release
      if off_ptr < n and off_live < off_quota and len(free_slots) > 0:
        wake = min(wake, arrival[off_ptr])
      if off_ptr < n or off_live > 0:
        wake = min(wake, off_stop)
      if wake < _INF:
        t = max(t, wake)

    # 7-9. Advance, emit tokens at t, service gain; publish shared prefixes; finish.
    done = []
    for r, c, nb in batch:
      r.status = RUNNING
      r.prefilled += c
      r.kv += nb
      if r.prefilled != r.prompt + r.generated:
        continue
      r.generated += 1
      g = r.generated
      if g == 1:
        r.first_t = t
      else:
        gap = t - r.last_t
        r.tbt_sum += gap
        if gap > r.tbt_max:
          r.tbt_max = gap
      r.last_t = t
      if r.cls == 0:
        _latency_gain(r, t, alpha, weight)
      if g == r.out_len:
        done.append(r)
    if cache:  # in slot order: the lowest slot of a group publishes
      for s in sorted(live):
        cache.publish(live[s], t)
    for r in done:
      wid, g = r.wid, r.generated
      finish_t[wid] = t
      release[wid] = r.release
      ttft[wid] = r.first_t - r.release
      tbt_max[wid] = r.tbt_max
      tbt_mean[wid] = (r.last_t - r.first_t) / (g - 1) if g > 1 else 0.0
      n_preempt[wid] = r.n_preempt
      gain[wid] = r.gain
      good_tokens[wid] = r.good
      free += r.kv
      if cache:
        cache.detach(r, t)
      r.kv = 0
      r.status = EMPTY
      del live[r.slot]
      heapq.heappush(free_slots, r.slot)
      n_finished += 1
      off_live -= r.cls == OFFLINE
      if r.job >= 0:
        stage_done[r.job][r.stage] += 1
        dag_event = True

    # 10. DAG release, in slot order (it sets the queue order).
    if dag_event and blocked:
      ready = sorted(
        s for s, r in blocked.items() if stage_done[r.job][r.stage - 1] == width[r.job][r.stage - 1]
      )
      for s in ready:
        r = blocked.pop(s)
        r.status, r.release, r.seq = WAITING, t + step_delay, next_seq
        next_seq += 1
        live[s] = r

    if trace is not None and cache:
      table = {
        r.slot: (r.wid, r.status, r.prefilled, r.generated, r.kv, r.pid, r.pb)
        for r in live.values()
      }
      table.update({r.slot: (r.wid, r.status, 0, 0, 0, r.pid, 0) for r in blocked.values()})
      trace(step, t, free, table, {g: tuple(e) for g, e in cache.resident.items()})
    elif trace is not None:
      table = {r.slot: (r.wid, r.status, r.prefilled, r.generated, r.kv) for r in live.values()}
      table.update({r.slot: (r.wid, r.status, 0, 0, 0) for r in blocked.values()})
      trace(step, t, free, table)
    step += 1

  return {
    "finish_t": np.asarray(finish_t, np.float64),
    "ttft": np.asarray(ttft, np.float64),
    "tbt_max": np.asarray(tbt_max, np.float64),
    "tbt_mean": np.asarray(tbt_mean, np.float64),
    "release": np.asarray(release, np.float64),
    "n_preempt": np.asarray(n_preempt, np.int32),
    "gain": np.asarray(gain, np.float64),
    "good_tokens": np.asarray(good_tokens, np.float64),
    "t": t,
    "steps": step,
    "busy_time": busy_time,
    "busy_steps": busy_steps,
    "n_finished": n_finished,
    "n_dropped": n_dropped,
    "n_mem_preempt": n_mem,
    "n_policy_preempt": n_pol,
    "admit_blocked": admit_blocked,
    "tokens": tokens_total,
    "offline_tokens": offline_tokens,
    "max_step_tokens": max_step_tokens,
    "prefix_hits": cache.hits if cache else 0,
    "prefix_tokens_saved": cache.saved if cache else 0,
    "prefix_evictions": cache.evictions if cache else 0,
  }


def _clamp(x):
  """min(1, max(1e-6, x)), NaN kept as NaN like jnp.clip."""
  if x >= 1.0:
    return 1.0
  if x < 1e-6:
    return 1e-6
  return x


def _floored(factor):
  """A gain factor below GAIN_FLOOR counts as 0 (docs 'Gain')."""
  return 0.0 if factor < GAIN_FLOOR else factor


def _latency_gain(r, t, alpha, w):
  """Soft and hard service gain of the token just emitted at t (docs 'Gain')."""
  g = r.generated
  if g == 1:
    first = r.first_t - r.release
    r.gain += r.prompt * _floored(_clamp(_div(r.slo_ttft, first)) ** alpha)
    if first <= r.slo_ttft:
      r.good += r.prompt
    return
  j1 = g - 1.0
  expected = _div(t - r.release - min(r.first_t - r.release, r.slo_ttft), r.slo_tbt)
  ratio = j1 / expected if expected > 0 else 1.0
  r.gain += w * _floored(_clamp(ratio) ** alpha)
  if t <= r.release + r.slo_ttft + j1 * r.slo_tbt:
    r.good += w
