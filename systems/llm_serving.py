"""Jittable LLM-serving engine: continuous batching over a fixed-capacity request table.

Semantics (exact, shared with the plain-Python reference): docs/llm_serving_semantics.md.

Shared-prefix KV caching [R, serving.md 3.4] is off by default (`EnvConfig.n_prefixes = 0`, the
code path is then the plain engine). With `n_prefixes = P > 0`, requests carrying
`Workload.prefix_id` in [0, P) share whole KV blocks of their group's prefix
(`s_p = 16 floor(prefix_len / 16)` tokens, `b_p = s_p / 16` blocks): the first request of a
group to prefill past `s_p` publishes its first `b_p` blocks to a table of resident prefixes, a
later request of the group (fresh, or restarting after a recompute preemption) attaches at the end
of a step and starts its prefill at `s_p`, and prefixes no running request reads stay cached
until KV memory is short, when the least recently used one is evicted before anybody is
preempted (unreferenced ones first; queued attachers of an evicted prefix lose the attach).
Policies see `kv_blocks` with the shared blocks and those cached blocks as free. Counters:
`State.prefix_hits`, `prefix_tokens_saved`, `prefix_evictions`. Exact rules: the semantics doc,
"Shared prefixes".

Usage:

  env = make(EnvConfig(n_slots=256, n_prefixes=64))
  wl = workloads.co_locate(online, workloads.offline_pool(rng, 2000, "mmlu"))
  state, _ = sim.rollout(env, baselines.sarathi(), EnvParams(), (), jax.random.key(0), wl)
  print(state.prefix_hits, state.prefix_tokens_saved, state.prefix_evictions)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.lib import batching
from jaxsys.systems import timing

BLOCK_SIZE = 16
_SMALL = 16  # fill sorts this many candidates directly; more take ranks or the bisection
_RANK_MAX = 128  # tables up to this size fill by pairwise ranks instead
EMPTY, BLOCKED, WAITING, RUNNING, PREEMPTED = 0, 1, 2, 3, 4
OFFLINE = 3  # request class of the offline stream (workloads.OFFLINE)


class EnvConfig(NamedTuple):
  """Static choices: shapes and code paths (hashable, never vmapped)."""

  n_slots: int = 256  # request-table capacity; must exceed peak concurrency
  admit_max: int = 64  # arrivals moved into the table per step
  chunked_prefill: bool = True  # Sarathi-style chunks; False grants whole prompts only
  time_model: str = "roofline"  # "roofline" or "linear"
  # Most iterations of a steady decode batch change only token counters: one step may run up
  # to this many of them at once (a macro-step, see `_decode_stretch`); 1 = one per step.
  macro_steps: int = 1
  # Shared-prefix KV caching: prefix groups 0..n_prefixes-1 share whole KV blocks of their
  # prefix (serving.md 3.4); 0 turns it off (the prefix fields of a workload are ignored).
  n_prefixes: int = 0


@flax.struct.dataclass
class EnvParams:
  """Numbers of one run; a sweep vmaps over a stack of these."""

  # Fields that only gate branches: lib/sim.sweep passes them unbatched when every lane agrees.
  branch_fields = ("noise_sigma", "max_resident")

  token_budget: int = 512  # tokens per iteration (Sarathi chunk)
  max_seqs: int = 128  # requests per iteration
  # requests holding KV at once (vLLM's running set, which its max_num_seqs caps); the default
  # leaves it to memory, so a request the order pauses keeps its KV for free
  max_resident: int = 1 << 30
  num_blocks: int = 26_700  # KV-cache capacity in blocks of 16 tokens
  watermark: float = 0.01  # fraction of blocks kept free when a batch holds a prefill
  arrival_scale: float = 1.0  # online arrival times are divided by it: the load knob
  # HyGen co-location: offline requests in the table at once (the offline slot quota), and the
  # time from which offline items not yet admitted are dropped (counted in n_dropped)
  offline_slots: int = 1 << 30
  offline_stop: float = float("inf")
  noise_sigma: float = 0.0  # lognormal multiplicative noise on batch time
  step_delay: float = 0.0  # non-LLM time between DAG stages (s)
  alpha: float = 100.0  # service-gain penalty exponent
  decode_weight: float = 8.0  # gain weight of a decode token vs a prompt token
  time_coef: timing.TimeCoef = timing.TimeCoef()  # batch time model coefficients


@flax.struct.dataclass
class Slots:
  """The request table, one entry per slot (leading axis n_slots)."""

  wid: jnp.ndarray  # i32: workload index of the occupant, -1 when EMPTY
  status: jnp.ndarray  # i32: EMPTY, BLOCKED, WAITING, RUNNING or PREEMPTED
  arrival: jnp.ndarray  # f64: scaled arrival of the request (the job arrival for DAG nodes)
  release: jnp.ndarray  # f64: when the request became runnable (arrival, or DAG release)
  seq: jnp.ndarray  # i32: queue order, set when the slot becomes WAITING
  prompt_len: jnp.ndarray  # i32: prompt tokens
  out_len: jnp.ndarray  # i32: true output tokens (hidden from policies)
  generated: jnp.ndarray  # i32: output tokens emitted so far
  prefilled: jnp.ndarray  # i32: tokens whose KV is in the cache
  kv_blocks: jnp.ndarray  # i32: KV blocks held
  first_tok_t: jnp.ndarray  # f64: time of the first token (NaN before)
  last_tok_t: jnp.ndarray  # f64: time of the latest token (NaN before)
  tbt_sum: jnp.ndarray  # f64: sum of gaps between tokens
  tbt_max: jnp.ndarray  # f64: largest gap between tokens
  n_preempt: jnp.ndarray  # i32: preemptions (policy or memory) so far
  gain: jnp.ndarray  # f64: soft service gain so far (latency class)
  good_tokens: jnp.ndarray  # f64: hard SLO token goodput so far (latency class)
  cls: jnp.ndarray  # i32: request class
  slo_ttft: jnp.ndarray  # f64: TTFT SLO (s)
  slo_tbt: jnp.ndarray  # f64: TBT SLO (s)
  deadline_abs: jnp.ndarray  # f64: absolute deadline (arrival + deadline), inf for latency
  job_id: jnp.ndarray  # i32: DAG job, -1 for a plain request
  stage: jnp.ndarray  # i32: DAG stage
  client_id: jnp.ndarray  # i32: client id
  n_stages: jnp.ndarray  # i32: stages of the node's job (1 for a plain request)
  # Shared prefixes (stay -1 / 0 with EnvConfig.n_prefixes = 0). kv_blocks above counts the
  # request's own blocks only; while attached it also reads prefix_blocks shared blocks.
  prefix_id: jnp.ndarray  # i32: prefix group of the occupant, -1 for none
  prefix_blocks: jnp.ndarray  # i32: b_p while attached to its group's resident prefix, else 0


@flax.struct.dataclass
class PrefixTable:
  """Resident shared prefixes, one entry per group (leading axis EnvConfig.n_prefixes)."""

  blocks: jnp.ndarray  # i32: KV blocks held by the resident prefix, 0 when not resident
  refs: jnp.ndarray  # i32: requests in the table attached to it
  last_use: jnp.ndarray  # f64: time of the last attach, publish or detach (the LRU key)
  tokens: jnp.ndarray  # i32: shareable tokens s_p = 16 floor(prefix_len / 16) (constant)


@flax.struct.dataclass
class Outputs:
  """Per-request results, written once when a request finishes (leading axis n_total)."""

  finish_t: jnp.ndarray  # f64: finish time, NaN until finished
  release: jnp.ndarray  # f64: when the request became runnable
  ttft: jnp.ndarray  # f64: first token - release
  tbt_max: jnp.ndarray  # f64: largest gap between tokens
  tbt_mean: jnp.ndarray  # f64: (last - first token) / (out_len - 1), 0 for one token
  n_preempt: jnp.ndarray  # i32: preemptions suffered
  gain: jnp.ndarray  # f64: soft service gain (latency class; others scored from e2e)
  good_tokens: jnp.ndarray  # f64: hard SLO token goodput (latency class)


@flax.struct.dataclass
class State:
  """Engine state: the table, the clock, counters and per-request outputs."""

  slots: Slots  # the request table
  t: jnp.ndarray  # f64: clock (s)
  step: jnp.ndarray  # i32: iterations so far
  key: jnp.ndarray  # typed key: the loop key, folded with the step
  free_blocks: jnp.ndarray  # i32: free KV blocks
  online_ptr: jnp.ndarray  # i32: next workload index to admit
  online_end: jnp.ndarray  # i32: rows of the online stream (the offline rows follow)
  offline_ptr: jnp.ndarray  # i32: next offline row to admit (n_total when none is left)
  n_dropped: jnp.ndarray  # i32: offline rows dropped at offline_stop (counted in n_finished)
  next_seq: jnp.ndarray  # i32: next queue order number
  busy_time: jnp.ndarray  # f64: sum of batch times of non-empty iterations
  busy_steps: jnp.ndarray  # i32: non-empty iterations
  n_finished: jnp.ndarray  # i32: finished requests, plus dropped offline rows
  admit_blocked: jnp.ndarray  # i32: due arrivals that found no free slot (item-steps)
  n_mem_preempt: jnp.ndarray  # i32: preemptions for KV memory
  n_policy_preempt: jnp.ndarray  # i32: preemptions asked by the policy
  mem_stall: jnp.ndarray  # bool: the last iteration granted nothing for lack of KV blocks
  tokens: jnp.ndarray  # f64: tokens processed (prefill + decode)
  offline_tokens: jnp.ndarray  # f64: of which granted to offline (class 3) requests
  stage_done: jnp.ndarray  # i32[n_jobs, max_stages]: finished nodes per job and stage
  outputs: Outputs  # per-request results
  prefixes: PrefixTable  # resident shared prefixes ([0] arrays when sharing is off)
  prefix_hits: jnp.ndarray  # i32: attaches to a resident prefix
  prefix_tokens_saved: jnp.ndarray  # f64: prefill tokens skipped by attaching (sum of s_p)
  prefix_evictions: jnp.ndarray  # i32: unreferenced prefixes evicted for KV memory


@flax.struct.dataclass
class Obs:
  """What a policy may see: the table without true lengths, BLOCKED slots shown as EMPTY."""

  slots: Slots  # out_len is -1 everywhere; kv_blocks includes an attached prefix's blocks
  t: jnp.ndarray  # f64: clock
  step: jnp.ndarray  # i32: iteration
  free_blocks: jnp.ndarray  # i32: free KV blocks (plus reclaimable cached prefixes' blocks)
  busy_time: jnp.ndarray  # f64: sum of batch times so far
  busy_steps: jnp.ndarray  # i32: non-empty iterations so far


NO_LIMIT = 1 << 30
# A token's gain factor clamp(x)^alpha below this counts as 0: such a token is written off
# (alpha = 100: ratio below 0.81). Exact zeros let a macro-step run over late requests.
GAIN_FLOOR = 1e-9


class Action(NamedTuple):
  grant: jnp.ndarray  # i32[n_slots]: tokens asked for this iteration (projected by the env)
  priority: jnp.ndarray  # f32[n_slots]: order of the projection and of memory victims
  preempt: jnp.ndarray  # bool[n_slots]: preempt by recompute
  # i32: for how many iterations the policy would act the same if only token counters moved
  # (it bounds a macro-step; a policy with pending work of its own says 1)
  horizon: jnp.ndarray | int = NO_LIMIT
  # bool: the priorities would stay the same while only token counters move (a queue order);
  # lets a macro-step keep a decode batch while other requests wait for room in it
  fixed_order: jnp.ndarray | bool = False


class Env(NamedTuple):
  """A serving engine as pure functions (see `make`)."""

  config: EnvConfig
  init: object  # (key, params, workload) -> State
  step: object  # (key, state, action, params, workload) -> State
  observe: object  # (state) -> Obs
  check: object = None  # (workload) -> None, host-side ValueError on a bad workload (lib/sim)


def _ceil_div(a, b):
  return (a + b - 1) // b


def sortable_key(priority):
  """Maps float32 priorities to int32 keys with the same order (-0.0 == 0.0, NaN lowest)."""
  p = jnp.where(jnp.isnan(priority), -jnp.inf, priority).astype(jnp.float32) + jnp.float32(0.0)
  bits = jax.lax.bitcast_convert_type(p, jnp.int32)
  return jnp.where(bits >= 0, bits, bits ^ jnp.int32(0x7FFFFFFF))


def new_blocks(prefilled, tokens, kv_blocks):
  """KV blocks a slot must add to hold `prefilled + tokens` tokens."""
  return jnp.maximum(_ceil_div(prefilled + tokens, BLOCK_SIZE) - kv_blocks, 0)


def fill(
  priority,
  demand,
  is_prefill,
  prefilled,
  kv_blocks,
  free_blocks,
  token_budget,
  max_seqs,
  watermark_blocks,
  chunked: bool,
):
  """Longest feasible prefix of the candidates in priority order, last prefill chunk cut.

  Order: priority descending (float32), then slot index ascending. A batch is feasible when its
  tokens fit `token_budget`, it has at most `max_seqs` requests and its new KV blocks fit
  `free_blocks` (minus `watermark_blocks` when it holds a prefill chunk).

  No full sort (a 128-slot sort costs ~9 us per lane under vmap on a CPU). When everything
  fits, nothing is ordered. With at most 16 candidates only those are sorted. Else, for tables
  of up to 128 slots, a pairwise "served no later than" matrix gives every candidate's prefix
  sums in one product (~2 us per lane); larger tables bisect over the int32 image of the
  priorities for the largest feasible set of whole priority levels (33 rounds of one
  matrix-vector product) and walk the boundary level in slot order with one cumsum.

  Returns the granted tokens, int32[n_slots].
  """
  cand = demand > 0
  demand = jnp.where(cand, demand, 0)
  blocks = jnp.where(cand, new_blocks(prefilled, demand, kv_blocks), 0)
  imin, imax = jnp.iinfo(jnp.int32).min, jnp.iinfo(jnp.int32).max
  key = jnp.where(cand, sortable_key(priority), imin)
  pre = cand & is_prefill
  n_slots = priority.shape[0]
  limits = (token_budget, max_seqs, free_blocks, watermark_blocks)

  def feasible(limits, tokens, count, blks, has_prefill):
    token_budget, max_seqs, free_blocks, watermark_blocks = limits
    headroom = free_blocks - jnp.where(has_prefill, watermark_blocks, 0)
    return (tokens <= token_budget) & (count <= max_seqs) & (blks <= headroom)

  # Tokens, count, blocks and prefills of a set as one matrix-vector product (exact: float64
  # holds these integers); 2.5x faster than four masked sums per bisection round under vmap.
  def feasible_above(ops, v):
    cand, key, demand, blocks, pre, limits = ops[:6]
    columns = jnp.stack([demand, blocks, jnp.ones_like(demand), pre.astype(demand.dtype)])
    tokens, blks, count, n_pre = columns.astype(jnp.float64) @ (key >= v).astype(jnp.float64)
    return feasible(limits, tokens, count, blks, n_pre > 0)

  # The branches take every traced value as an operand (lib/batching.switch_by_need).
  def by_bisection(ops):
    cand, key, demand, blocks, pre, limits, _ = ops
    lo0 = jnp.min(jnp.where(cand, key, imax)).astype(jnp.int64) - 1
    hi0 = jnp.max(key).astype(jnp.int64) + 1

    # Invariant: the set above hi fits, the set above lo does not (lo is below every key).
    def bisect(_, bounds):
      lo, hi = bounds
      mid = (lo + hi) // 2
      ok = feasible_above(ops, mid.astype(jnp.int32))
      return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

    cut = jax.lax.fori_loop(0, 33, bisect, (lo0, hi0), unroll=True)[1]
    base = cand & (key >= cut)
    # The next priority level below the cut does not fit whole: walk it in slot order.
    below = cand & (key < cut)
    level = jnp.max(jnp.where(below, key, imin))
    in_level = below & (key == level)
    tok_cum = jnp.sum(jnp.where(base, demand, 0)) + jnp.cumsum(jnp.where(in_level, demand, 0))
    cnt_cum = jnp.sum(base) + jnp.cumsum(in_level)
    blk_cum = jnp.sum(jnp.where(base, blocks, 0)) + jnp.cumsum(jnp.where(in_level, blocks, 0))
    pre_cum = jnp.any(base & pre) | (jnp.cumsum(in_level & pre) > 0)
    fits = in_level & feasible(limits, tok_cum, cnt_cum, blk_cum, pre_cum)
    stop = in_level & ~fits
    return base | fits, jnp.argmax(stop).astype(jnp.int32), jnp.any(stop)

  def by_small_sort(ops):
    # Few candidates (the common case off overload): sort just them and walk with cumsums.
    # Also right when everything fits, however many compete (the nesting switch_by_need needs).
    cand, key, demand, blocks, pre, limits, everything_fits = ops
    n_cand = jnp.sum(cand)
    idx = jnp.nonzero(cand, size=_SMALL, fill_value=0)[0]
    valid = jnp.arange(_SMALL) < n_cand
    order = jnp.lexsort((idx, -jnp.where(valid, key[idx], imin).astype(jnp.int64)))
    idx, valid = idx[order], valid[order]
    tok = jnp.cumsum(jnp.where(valid, demand[idx], 0))
    blk = jnp.cumsum(jnp.where(valid, blocks[idx], 0))
    ok = valid & feasible(limits, tok, jnp.cumsum(valid), blk, jnp.cumsum(valid & pre[idx]) > 0)
    prefix = jnp.cumsum(~ok) == 0
    whole = jnp.zeros_like(cand).at[idx].max(prefix & valid)
    first_out = jnp.sum(prefix)
    b = idx[jnp.minimum(first_out, _SMALL - 1)].astype(jnp.int32)
    return jnp.where(everything_fits, cand, whole), b, (first_out < n_cand) & ~everything_fits

  def by_rank(ops):
    # ahead[j, i]: candidate j is served no later than i. One product gives every candidate's
    # inclusive prefix sums in the serving order: no sort, no rounds, O(n_slots^2) flops that
    # vectorise well. float32 is exact here: values are clipped so that the first infeasible
    # prefix sums below 2^24, and a rounded sum of non-negative terms never drops below a
    # rounded sum of fewer of them (needs token_budget and free blocks below 2^23).
    cand, key, demand, blocks, pre, limits, _ = ops
    token_budget, _, free_blocks, _ = limits
    # Serving order as one int64 key: priority first, then the lower slot index.
    order = key.astype(jnp.int64) * (1 << 32) - jnp.arange(n_slots, dtype=jnp.int64)
    ahead = order[:, None] >= order[None, :]
    clipped = jnp.stack(
      [
        jnp.minimum(demand, token_budget + 1),
        jnp.minimum(blocks, jnp.maximum(free_blocks, 0) + 1),
        cand.astype(demand.dtype),
        pre.astype(demand.dtype),
      ]
    ).astype(jnp.float32)  # zero outside the candidates
    tokens, blks, count, n_pre = clipped @ ahead.astype(jnp.float32)
    # Feasibility only falls along the order, so the feasible candidates are the prefix.
    whole = cand & feasible(limits, tokens, count, blks, n_pre > 0)
    stop = cand & ~whole
    b = jnp.argmin(jnp.where(stop, count, jnp.inf))
    return whole, b.astype(jnp.int32), jnp.any(stop)

  def everything(ops):
    return ops[0], jnp.int32(0), jnp.asarray(False)

  # Under light load everything fits, and usually few requests compete. Each branch handles
  # all that the ones before it do, with the same result, so a vmapped sweep runs the one its
  # neediest lane needs instead of all three (under vmap a switch becomes a select).
  ops = (cand, key, demand, blocks, pre, limits)
  everything_fits = feasible_above(ops, jnp.min(jnp.where(cand, key, imax)))
  need = jnp.where(everything_fits, 0, jnp.where(jnp.sum(cand) <= _SMALL, 1, 2))
  ops = ops + (everything_fits,)
  general = by_rank if n_slots <= _RANK_MAX else by_bisection
  whole, b, has_stop = batching.switch_by_need(need, (everything, by_small_sort, general), ops)
  # The first candidate that does not fit may still take a partial prefill chunk.
  tokens_before = jnp.sum(jnp.where(whole, demand, 0))
  chunk = jnp.minimum(token_budget - tokens_before, demand[b])
  ok_partial = (
    has_stop
    & chunked
    & pre[b]
    & (chunk > 0)
    & feasible(
      limits,
      tokens_before + chunk,
      jnp.sum(whole) + 1,
      jnp.sum(jnp.where(whole, blocks, 0)) + new_blocks(prefilled[b], chunk, kv_blocks[b]),
      True,
    )
  )
  grant = jnp.where(whole, demand, 0)
  return grant.at[b].add(jnp.where(ok_partial, chunk, 0).astype(grant.dtype)).astype(jnp.int32)


def _check_x64():
  if not jax.config.jax_enable_x64:
    raise RuntimeError(
      "llm_serving keeps time in float64: call jax.config.update('jax_enable_x64', True) "
      "before building the environment."
    )


def check_workload(workload, config: EnvConfig) -> None:
  """Host check of a workload against the static config (concrete arrays only).

  Raises:
    ValueError when shared prefixes are on and a row's prefix_id is >= config.n_prefixes.
  """
  if config.n_prefixes <= 0 or getattr(workload, "prefix_id", None) is None:
    return
  pid = np.asarray(workload.prefix_id)
  bad = np.flatnonzero(pid >= config.n_prefixes)
  if bad.size:
    i = int(bad[0])
    raise ValueError(
      f"Workload.prefix_id[{i}] = {int(pid[i])} but EnvConfig.n_prefixes = {config.n_prefixes}:"
      f" prefix groups must lie in [0, n_prefixes) (the largest is {int(pid.max())})"
    )


def _prefix_table(workload, n_prefixes: int) -> PrefixTable:
  """An empty table; `tokens` holds each group's shareable whole-block tokens s_p."""
  tokens = jnp.zeros((n_prefixes,), jnp.int32)
  if n_prefixes and getattr(workload, "prefix_id", None) is not None:
    pid = jnp.asarray(workload.prefix_id, jnp.int32)
    share = (jnp.asarray(workload.prefix_len, jnp.int32) // BLOCK_SIZE) * BLOCK_SIZE
    at = jnp.where((pid >= 0) & (pid < n_prefixes), pid, n_prefixes)
    tokens = tokens.at[at].max(share, mode="drop")  # equal within a group (validate)
  return PrefixTable(
    blocks=jnp.zeros((n_prefixes,), jnp.int32),
    refs=jnp.zeros((n_prefixes,), jnp.int32),
    last_use=jnp.zeros((n_prefixes,), jnp.float64),
    tokens=tokens,
  )


def init(key, params: EnvParams, workload, config: EnvConfig) -> State:
  """An empty engine at t = 0 with every request still in the workload stream.

  A concrete workload is checked against the config (`check_workload`); under a trace the
  driver should check it on the host first (group ids >= n_prefixes then never share).
  """
  if not isinstance(getattr(workload, "prefix_id", None), jax.core.Tracer):
    check_workload(workload, config)
  n, s = workload.n_total, config.n_slots
  i32 = lambda v: jnp.full((s,), v, jnp.int32)  # noqa: E731
  f64 = lambda v: jnp.full((s,), v, jnp.float64)  # noqa: E731
  slots = Slots(
    wid=i32(-1),
    status=i32(EMPTY),
    arrival=f64(0.0),
    release=f64(0.0),
    seq=i32(0),
    prompt_len=i32(0),
    out_len=i32(0),
    generated=i32(0),
    prefilled=i32(0),
    kv_blocks=i32(0),
    first_tok_t=f64(jnp.nan),
    last_tok_t=f64(jnp.nan),
    tbt_sum=f64(0.0),
    tbt_max=f64(0.0),
    n_preempt=i32(0),
    gain=f64(0.0),
    good_tokens=f64(0.0),
    cls=i32(0),
    slo_ttft=f64(jnp.inf),
    slo_tbt=f64(jnp.inf),
    deadline_abs=f64(jnp.inf),
    job_id=i32(-1),
    stage=i32(0),
    client_id=i32(0),
    n_stages=i32(1),
    prefix_id=i32(-1),
    prefix_blocks=i32(0),
  )
  nan = jnp.full((n,), jnp.nan, jnp.float64)
  outputs = Outputs(
    finish_t=nan,
    release=nan,
    ttft=nan,
    tbt_max=nan,
    tbt_mean=nan,
    n_preempt=jnp.zeros((n,), jnp.int32),
    gain=jnp.zeros((n,), jnp.float64),
    good_tokens=jnp.zeros((n,), jnp.float64),
  )
  zero_i = jnp.zeros((), jnp.int32)
  zero_f = jnp.zeros((), jnp.float64)
  n_online = jnp.sum(jnp.asarray(workload.cls) != OFFLINE, dtype=jnp.int32)
  state = State(
    slots=slots,
    t=zero_f,
    step=zero_i,
    key=key,
    free_blocks=jnp.asarray(params.num_blocks, jnp.int32),
    online_ptr=zero_i,
    online_end=n_online,
    offline_ptr=n_online,
    n_dropped=zero_i,
    next_seq=zero_i,
    busy_time=zero_f,
    busy_steps=zero_i,
    n_finished=zero_i,
    admit_blocked=zero_i,
    n_mem_preempt=zero_i,
    n_policy_preempt=zero_i,
    mem_stall=jnp.zeros((), bool),
    tokens=zero_f,
    offline_tokens=zero_f,
    stage_done=jnp.zeros((workload.n_jobs, workload.max_stages), jnp.int32),
    outputs=outputs,
    prefixes=_prefix_table(workload, config.n_prefixes),
    prefix_hits=zero_i,
    prefix_tokens_saved=zero_f,
    prefix_evictions=zero_i,
  )
  state = _admit(state, params, workload, config.admit_max, config.n_prefixes)
  if config.n_prefixes:
    state = _attach(state)
  return state


def observe(state: State) -> Obs:
  """The policy's view: no true output lengths, future DAG calls hidden."""
  sl = state.slots
  hidden = sl.status == BLOCKED
  visible = sl.replace(
    wid=jnp.where(hidden, -1, sl.wid),
    status=jnp.where(hidden, EMPTY, sl.status),
    out_len=jnp.full_like(sl.out_len, -1),
  )
  free_blocks = state.free_blocks
  if state.prefixes.blocks.shape[-1]:  # sharing on (static)
    # Blocks each context holds (own + shared), and as free also the blocks of prefixes that
    # no running request reads, which the engine evicts when memory is short (as a paged cache
    # counts cached blocks free).
    visible = visible.replace(kv_blocks=sl.kv_blocks + sl.prefix_blocks)
    table = state.prefixes
    free_blocks = free_blocks + jnp.sum(jnp.where(_reclaimable(sl, table), table.blocks, 0))
  return Obs(
    slots=visible,
    t=state.t,
    step=state.step,
    free_blocks=free_blocks.astype(jnp.int32),
    busy_time=state.busy_time,
    busy_steps=state.busy_steps,
  )


def remaining(slots):
  """Tokens left in the current prefill target (1 in decode phase)."""
  return slots.prompt_len + slots.generated - slots.prefilled


def in_decode(slots):
  return (slots.generated >= 1) & (remaining(slots) == 1)


def runnable(slots, t):
  active = (slots.status == WAITING) | (slots.status == RUNNING) | (slots.status == PREEMPTED)
  return active & (slots.release <= t)


def scaled_arrival(arrival, params: EnvParams):
  """Arrival time(s) after the load scaling.

  A product with the reciprocal, never a division: XLA may lower a vectorised division
  differently from a scalar one, and the idle jump must land exactly on an admissible time.
  """
  return arrival * (1.0 / params.arrival_scale)


def _admit(state: State, params: EnvParams, workload, admit_max: int, n_prefixes: int = 0):
  """Step 1: the offline window's close, due online arrivals, then available offline rows.

  The close comes first, so an online arrival at the closing instant sees the slots it frees.
  """
  place = functools.partial(_place, n_prefixes=n_prefixes)
  n = workload.n_total
  closing = (state.t >= params.offline_stop) & (
    (state.offline_ptr < n) | (_offline_live(state.slots) > 0)
  )
  state = jax.lax.cond(closing, _close_offline, lambda s, _: s, state, n)
  sl = state.slots
  # Read the stream through a window of the next `w` items: gathers from [n_total] arrays make
  # XLA:CPU split tiny fusions over threads once n_total is large (measured: 13 -> 33 us/step).
  w = min(admit_max, n)
  start = jnp.minimum(state.online_ptr, n - w)
  idx = state.online_ptr + jnp.arange(w, dtype=jnp.int32)
  at = jnp.minimum(idx - start, w - 1)
  arrivals = scaled_arrival(jax.lax.dynamic_slice_in_dim(workload.arrival, start, w), params)
  due = (idx < state.online_end) & (arrivals[at] <= state.t)
  n_due = jnp.sum(due, dtype=jnp.int32)  # a prefix: the stream is sorted
  free = sl.status == EMPTY
  n_admit = jnp.minimum(n_due, jnp.sum(free, dtype=jnp.int32))
  sl, n_first = place(sl, free, n_admit, state.online_ptr, start, w, arrivals, state, workload)
  state = state.replace(
    slots=sl,
    online_ptr=state.online_ptr + n_admit,
    next_seq=state.next_seq + n_first,
    admit_blocked=state.admit_blocked + n_due - n_admit,
  )

  # The offline stream: rows in host order, each available from its own (unscaled) time; the
  # first one not yet available stops the stream, as does the quota or the admit_max left.
  def offline(state):
    sl, ptr = state.slots, state.offline_ptr
    start = jnp.minimum(ptr, n - w)
    idx = ptr + jnp.arange(w, dtype=jnp.int32)
    avail = jax.lax.dynamic_slice_in_dim(workload.arrival, start, w)
    due = (idx < n) & (avail[jnp.minimum(idx - start, w - 1)] <= state.t)
    n_due = jnp.sum(jnp.cumprod(due), dtype=jnp.int32)
    free = sl.status == EMPTY
    room = jnp.maximum(params.offline_slots - _offline_live(sl), 0)
    take = jnp.minimum(jnp.minimum(n_due, jnp.sum(free, dtype=jnp.int32)), room)
    take = jnp.minimum(take, admit_max - n_admit)
    sl, n_first = place(sl, free, take, ptr, start, w, avail, state, workload)
    return state.replace(slots=sl, offline_ptr=ptr + take, next_seq=state.next_seq + n_first)

  # A workload without offline rows skips it (in a sweep the cond becomes a select).
  return jax.lax.cond(state.offline_ptr < n, offline, lambda s: s, state)


def _close_offline(state: State, n) -> State:
  """The offline window ends: unstarted rows and offline requests in the table are dropped."""
  sl = state.slots
  gone = (sl.cls == OFFLINE) & (sl.wid >= 0)
  n_gone = jnp.sum(gone, dtype=jnp.int32)
  freed = jnp.sum(jnp.where(gone, sl.kv_blocks, 0), dtype=jnp.int32)
  dropped = n - state.offline_ptr + n_gone
  prefixes = state.prefixes
  if prefixes.blocks.shape[-1]:  # sharing on (static)
    prefixes, sl = _detach(prefixes, sl, gone, state.t)
  return state.replace(
    prefixes=prefixes,
    slots=sl.replace(
      wid=jnp.where(gone, -1, sl.wid),
      status=jnp.where(gone, EMPTY, sl.status),
      kv_blocks=jnp.where(gone, 0, sl.kv_blocks),
    ),
    free_blocks=state.free_blocks + freed,
    offline_ptr=jnp.asarray(n, state.offline_ptr.dtype),
    n_dropped=state.n_dropped + dropped,
    n_finished=state.n_finished + dropped,
  )


def _offline_live(slots):
  """Offline requests in the table (EMPTY slots keep their old class, so count occupants)."""
  return jnp.sum((slots.cls == OFFLINE) & (slots.wid >= 0), dtype=jnp.int32)


def _place(sl, free, n_take, ptr, start, w, arrivals, state, workload, n_prefixes=0):
  """Rows ptr..ptr+n_take-1 (read from the window at `start`) into the lowest EMPTY slots.

  Returns (slots, number of rows that became WAITING and took a queue number).
  """
  n = workload.n_total
  rank = jnp.cumsum(free, dtype=jnp.int32) - 1
  take = free & (rank < n_take)
  window = lambda field: jax.lax.dynamic_slice_in_dim(field, start, w)  # noqa: E731
  src = jnp.minimum(ptr + rank, n - 1)
  local = jnp.clip(src - start, 0, w - 1)
  get = lambda field: jnp.where(take, window(field)[local], 0)  # noqa: E731
  put = lambda field, value: jnp.where(take, value, field)  # noqa: E731

  arrival = arrivals[local]
  stage = get(workload.stage)
  cls = get(workload.cls)
  first_stage = take & (stage == 0)
  seq = state.next_seq + jnp.cumsum(first_stage, dtype=jnp.int32) - 1
  job = jnp.where(take, window(workload.job_id)[local], -1)
  n_stages = jnp.where(job >= 0, jnp.asarray(workload.n_stages)[jnp.maximum(job, 0)], 1)
  no_deadline = (cls == 0) | (cls == OFFLINE)
  deadline_abs = jnp.where(no_deadline, jnp.inf, arrival + window(workload.deadline)[local])
  slots = sl.replace(
    wid=put(sl.wid, src),
    status=put(sl.status, jnp.where(stage == 0, WAITING, BLOCKED)),
    arrival=put(sl.arrival, arrival),
    release=put(sl.release, arrival),
    seq=jnp.where(first_stage, seq, sl.seq),
    prompt_len=put(sl.prompt_len, get(workload.prompt_len)),
    out_len=put(sl.out_len, get(workload.out_len)),
    generated=put(sl.generated, 0),
    prefilled=put(sl.prefilled, 0),
    kv_blocks=put(sl.kv_blocks, 0),
    first_tok_t=put(sl.first_tok_t, jnp.nan),
    last_tok_t=put(sl.last_tok_t, jnp.nan),
    tbt_sum=put(sl.tbt_sum, 0.0),
    tbt_max=put(sl.tbt_max, 0.0),
    n_preempt=put(sl.n_preempt, 0),
    gain=put(sl.gain, 0.0),
    good_tokens=put(sl.good_tokens, 0.0),
    cls=put(sl.cls, cls),
    slo_ttft=put(sl.slo_ttft, window(workload.slo_ttft)[local]),
    slo_tbt=put(sl.slo_tbt, window(workload.slo_tbt)[local]),
    deadline_abs=put(sl.deadline_abs, deadline_abs),
    job_id=put(sl.job_id, job),
    stage=put(sl.stage, stage),
    client_id=put(sl.client_id, get(workload.client_id)),
    n_stages=put(sl.n_stages, n_stages),
  )
  if n_prefixes and getattr(workload, "prefix_id", None) is not None:
    slots = slots.replace(
      prefix_id=put(sl.prefix_id, jnp.where(take, window(workload.prefix_id)[local], -1)),
      prefix_blocks=put(sl.prefix_blocks, 0),
    )
  return slots, jnp.sum(first_stage, dtype=jnp.int32)


def _preempt(slots, mask):
  """Recompute preemption: the KV is dropped, the prompt and output so far are prefilled again."""
  freed = jnp.sum(jnp.where(mask, slots.kv_blocks, 0), dtype=jnp.int32)
  slots = slots.replace(
    status=jnp.where(mask, PREEMPTED, slots.status),
    prefilled=jnp.where(mask, 0, slots.prefilled),
    kv_blocks=jnp.where(mask, 0, slots.kv_blocks),
    n_preempt=slots.n_preempt + mask,
  )
  return slots, freed


def _held(slots, n_prefixes: int):
  """KV blocks each slot's context holds: its own plus an attached prefix's (shared)."""
  return slots.kv_blocks + slots.prefix_blocks if n_prefixes else slots.kv_blocks


def _group(slots, table: PrefixTable):
  """Each slot's prefix group clipped into the table, and whether it has a valid one."""
  n_prefixes = table.blocks.shape[-1]
  valid = (slots.prefix_id >= 0) & (slots.prefix_id < n_prefixes)
  return jnp.clip(slots.prefix_id, 0, n_prefixes - 1), valid


def _attachable(slots, table: PrefixTable):
  """Slots that would attach now: queued at prefilled 0 with their group's prefix resident."""
  g, valid = _group(slots, table)
  queued = (slots.status == WAITING) | (slots.status == PREEMPTED)
  return queued & (slots.prefilled == 0) & valid & (table.blocks[g] > 0)


def _attach(state: State) -> State:
  """Attach (end of a step, after admission): each attachable slot starts at prefilled = s_p
  and shares the b_p resident blocks (refcount + 1)."""
  sl, table = state.slots, state.prefixes
  g, _ = _group(sl, table)
  ok = _attachable(sl, table)
  tokens = jnp.where(ok, table.tokens[g], 0)
  at = jnp.where(ok, sl.prefix_id, table.blocks.shape[-1])
  table = table.replace(
    refs=table.refs.at[at].add(1, mode="drop"),
    last_use=table.last_use.at[at].set(state.t, mode="drop"),
  )
  sl = sl.replace(
    prefilled=jnp.where(ok, tokens, sl.prefilled),
    prefix_blocks=jnp.where(ok, table.blocks[g], sl.prefix_blocks),
  )
  return state.replace(
    slots=sl,
    prefixes=table,
    prefix_hits=state.prefix_hits + jnp.sum(ok, dtype=jnp.int32),
    prefix_tokens_saved=state.prefix_tokens_saved + jnp.sum(tokens).astype(jnp.float64),
  )


def _detach(table: PrefixTable, slots, mask, t):
  """Slots in `mask` leave (preempted, finished, dropped): an attached one releases its prefix
  (refcount - 1, last use t). Their own blocks are freed by the caller. Returns (table, slots)."""
  at = jnp.where(mask & (slots.prefix_blocks > 0), slots.prefix_id, table.blocks.shape[-1])
  table = table.replace(
    refs=table.refs.at[at].add(-1, mode="drop"),
    last_use=table.last_use.at[at].set(t, mode="drop"),
  )
  return table, slots.replace(prefix_blocks=jnp.where(mask, 0, slots.prefix_blocks))


def _publish(slots, table: PrefixTable, t):
  """After an iteration: an unattached request whose group has no resident prefix and which has
  prefilled >= s_p moves its first b_p blocks into the table (resident, refcount 1, attached).
  One publisher per group, the lowest slot. Returns (slots, table)."""
  n_prefixes, n_slots = table.blocks.shape[-1], slots.wid.shape[0]
  g, valid = _group(slots, table)
  tokens = table.tokens[g]
  ok = (
    (slots.wid >= 0)
    & (slots.prefix_blocks == 0)
    & valid
    & (tokens > 0)
    & (table.blocks[g] == 0)
    & (slots.prefilled >= tokens)
  )
  idx = jnp.arange(n_slots, dtype=jnp.int32)
  first = jnp.full((n_prefixes,), n_slots, jnp.int32)
  first = first.at[jnp.where(ok, slots.prefix_id, n_prefixes)].min(idx, mode="drop")
  pub = ok & (first[g] == idx)
  b = jnp.where(pub, tokens // BLOCK_SIZE, 0)
  at = jnp.where(pub, slots.prefix_id, n_prefixes)
  table = table.replace(
    blocks=table.blocks.at[at].set(b, mode="drop"),
    refs=table.refs.at[at].set(1, mode="drop"),
    last_use=table.last_use.at[at].set(t, mode="drop"),
  )
  slots = slots.replace(kv_blocks=slots.kv_blocks - b, prefix_blocks=slots.prefix_blocks + b)
  return slots, table


def _reclaimable(slots, table: PrefixTable):
  """Resident prefixes that no RUNNING request reads: bool[n_prefixes]. The engine may evict
  them when memory is short (queued attachers then lose the attach)."""
  n_prefixes = table.blocks.shape[-1]
  reading = (slots.prefix_blocks > 0) & (slots.status == RUNNING)
  at = jnp.where(reading, slots.prefix_id, n_prefixes)
  readers = jnp.zeros((n_prefixes,), jnp.int32).at[at].add(1, mode="drop")
  return (table.blocks > 0) & (readers == 0)


def _evict(slots, table: PrefixTable, short):
  """When memory is short, one reclaimable prefix frees its blocks: the least recently used
  unreferenced one, else the least recently used one read by queued attachers only (they go
  back to prefilled 0, their attach not counted); ties to the lowest group.

  Returns (slots, table, blocks freed, evicted, any reclaimable, the slots whose attach was
  taken back, their tokens).
  """
  can = _reclaimable(slots, table)
  unref = can & (table.refs == 0)
  pool = jnp.where(jnp.any(unref), unref, can)
  lru = jnp.min(jnp.where(pool, table.last_use, jnp.inf))
  e = jnp.argmax(pool & (table.last_use == lru))
  any_can = jnp.any(can)
  evict = short & any_can
  freed = jnp.where(evict, table.blocks[e], 0)
  revoked = evict & (slots.prefix_blocks > 0) & (slots.prefix_id == e)
  slots = slots.replace(
    prefilled=jnp.where(revoked, 0, slots.prefilled),
    prefix_blocks=jnp.where(revoked, 0, slots.prefix_blocks),
  )
  table = table.replace(
    blocks=table.blocks.at[e].add(-freed),
    refs=table.refs.at[e].set(jnp.where(evict, 0, table.refs[e])),
  )
  tokens_back = jnp.sum(revoked, dtype=jnp.int32) * table.tokens[e]
  return slots, table, freed, evict, any_can, revoked, tokens_back


def _memory_victim(slots, key):
  """One-hot mask of the lowest-priority slot holding KV blocks (last in the ordering rule)."""
  holders = slots.kv_blocks > 0
  low = jnp.min(jnp.where(holders, key, jnp.iinfo(jnp.int32).max))
  at_low = holders & (key == low)
  last = jnp.max(jnp.where(at_low, jnp.arange(key.shape[0]), -1))
  return jnp.arange(key.shape[0]) == last


def _residency(demand, priority, kv_blocks, max_resident):
  """Drops the candidates without KV beyond the first `max_resident - holders` in the order.

  The rest of the projection is unchanged; a request already holding KV is never displaced
  (only the policy preempts). The first few in the order are a fill with one token each and
  room only for the count, so `fill` finds them.
  """
  entering = (demand > 0) & (kv_blocks == 0)
  room = max_resident - jnp.sum(kv_blocks > 0, dtype=jnp.int32)

  def select():
    ones = entering.astype(jnp.int32)
    zero = jnp.zeros_like(ones)
    big = jnp.int32(NO_LIMIT)
    first = fill(priority, ones, zero.astype(bool), zero, zero, big, big, room, 0, False)
    return jnp.where(entering & (first == 0), 0, demand)

  binding = jnp.sum(entering, dtype=jnp.int32) > room
  # Outer cond on a parameter: a sweep whose lanes all leave residency unbounded skips it.
  return jax.lax.cond(
    max_resident < NO_LIMIT,
    lambda: jax.lax.cond(binding, select, lambda: demand),
    lambda: demand,
  )


def _features(slots, grant, decode):
  granted = grant > 0
  pre = granted & ~decode
  dec = granted & decode
  c = jnp.where(pre, grant, 0).astype(jnp.float64)
  k = jnp.where(pre, slots.prefilled, 0).astype(jnp.float64)
  d = jnp.where(dec, slots.prefilled + 1, 0).astype(jnp.float64)
  return timing.Features(
    n_p=jnp.sum(pre).astype(jnp.float64),
    n_d=jnp.sum(dec).astype(jnp.float64),
    s_p=jnp.sum(c),
    q=jnp.sum(c * c),
    a=jnp.sum(c * (k + c)),
    k=jnp.sum(k + c),
    s_d=jnp.sum(d),
  )


def _latency_gain(slots, emit, t, params: EnvParams):
  """Soft and hard service gain of the tokens emitted at t by latency-class slots."""
  alpha, w = params.alpha, params.decode_weight
  clamp = lambda x: jnp.clip(x, 1e-6, 1.0)  # noqa: E731
  floored = lambda f: jnp.where(f < GAIN_FLOOR, 0.0, f)  # noqa: E731
  lat = emit & (slots.cls == 0)
  first = lat & (slots.generated == 1)
  later = lat & (slots.generated >= 2)
  ttft = slots.first_tok_t - slots.release
  prompt = slots.prompt_len.astype(jnp.float64)
  soft_first = prompt * floored(clamp(slots.slo_ttft / ttft) ** alpha)
  hard_first = jnp.where(ttft <= slots.slo_ttft, prompt, 0.0)
  j1 = (slots.generated - 1).astype(jnp.float64)
  expected = (t - slots.release - jnp.minimum(ttft, slots.slo_ttft)) / slots.slo_tbt
  ratio = jnp.where(expected > 0, j1 / jnp.where(expected > 0, expected, 1.0), 1.0)
  soft_next = w * floored(clamp(ratio) ** alpha)
  hard_next = jnp.where(t <= slots.release + slots.slo_ttft + j1 * slots.slo_tbt, w, 0.0)
  soft = jnp.where(first, soft_first, jnp.where(later, soft_next, 0.0))
  hard = jnp.where(first, hard_first, jnp.where(later, hard_next, 0.0))
  return slots.replace(gain=slots.gain + soft, good_tokens=slots.good_tokens + hard)


def _noise_factor(key, iterations, sigma):
  """exp(sigma * eps) per iteration, eps ~ N(0, 1) from fold_in(key, iteration).

  Under a cond: a noise-free run draws nothing, also in a sweep when sigma is the same in every
  lane (lib/sim.sweep then passes it unbatched, and the cond stays a branch).
  """

  def draw():
    normal = lambda s: jax.random.normal(jax.random.fold_in(key, s), dtype=jnp.float64)  # noqa: E731
    return jnp.exp(sigma * jnp.vectorize(normal)(iterations))

  return jax.lax.cond(sigma > 0, draw, lambda: jnp.ones(jnp.shape(iterations), jnp.float64))


def _decode_stretch(sl, dec, quiet, t, wake, free_blocks, horizon, state, params, config):
  """Iterations 2..k of a quiet decode batch, run at once: a macro-step (serving.md 1.3).

  `sl` is the table after the step's first iteration, which preempted nobody and left every
  slot it granted (`dec`) in the decode phase, and either granted every runnable request or
  granted decodes only under a fixed priority order (`quiet`). The per-iteration engine would
  then grant `dec` one token each again and again, changing only token counters, until an event: an
  arrival or DAG release due at an admission, a finish, a shortfall of KV blocks, a latency
  request falling behind its SLO pace (its tokens would no longer earn the full gain), or the
  end of the policy's `horizon`. The stretch stops before the first of these; its last
  iteration may finish requests (the step's finish handles them). Each iteration takes its own
  batch time (the context grows by `n_d` tokens per iteration) and its own noise draw, so the
  result is the per-iteration engine's up to float rounding.

  The checks are sufficient conditions (block growth and pace are bounded, not walked token by
  token), so a stretch may end early; that only costs speed.

  Returns (slots, t, extra iterations, their summed batch time, blocks added).
  """
  u = jnp.arange(2, config.macro_steps + 1, dtype=jnp.int32)  # iteration within the step
  zeros = jnp.zeros(u.shape, jnp.float64)
  n_d = jnp.sum(dec).astype(jnp.float64)
  s_d = jnp.sum(jnp.where(dec, sl.prefilled + 1, 0)).astype(jnp.float64)  # at iteration 2
  later = timing.Features(
    n_p=zeros, n_d=zeros + n_d, s_p=zeros, q=zeros, a=zeros, k=zeros, s_d=s_d + (u - 2) * n_d
  )
  batch_time = timing.batch_time(config.time_model, params.time_coef, later)

  dt = batch_time * _noise_factor(state.key, state.step + u - 1, params.noise_sigma)
  t_u = t + jnp.cumsum(dt)
  t_before = jnp.concatenate([t[None], t_u[:-1]])  # the clock at iteration u's admission

  last_finish = jnp.min(jnp.where(dec, sl.out_len - sl.generated, NO_LIMIT)) + 1
  # Each latency slot of the batch must earn a known gain on every extra token: the full weight
  # (on pace) or nothing (written off); u_on_pace and u_written_off bound the iterations.
  # Token j (1-based) is on pace while t_j <= release + min(TTFT, SLO_TTFT) + (j - 1) * SLO_TBT.
  # The first extra token has j - 1 = generated; later tokens add SLO_TBT to the bound and at
  # most `longest` to the clock, so when SLO_TBT >= longest, that token's check covers the rest.
  g1 = sl.generated.astype(jnp.float64)
  base = sl.release + jnp.minimum(sl.first_tok_t - sl.release, sl.slo_ttft)
  pace = base + g1 * sl.slo_tbt
  pace = pace - 1e-9 * jnp.where(jnp.isfinite(pace), 1.0 + jnp.abs(pace), 0.0)  # rounding
  keeps_up = (sl.slo_tbt >= jnp.max(dt)) & (t_u[0] <= pace)
  # Written off: the soft factor stays below GAIN_FLOOR (clamped ratio below floor^(1/alpha))
  # and the hard deadline has passed. Both hold for token g1 + 1 + m (iteration u = 2 + m) if
  # (g1 + m) SLO_TBT < theta (t_2 - base) and < t_2 - release - SLO_TTFT: the ratio's numerator
  # and the deadline grow with m, the clock only helps.
  theta = jnp.exp(jnp.log(GAIN_FLOOR) / params.alpha)
  theta = jnp.where(theta > 1e-6, theta * (1.0 - 1e-9), 0.0)  # the clamp's 1e-6 stays above
  room = jnp.minimum(theta * (t_u[0] - base), t_u[0] - sl.release - sl.slo_ttft) / sl.slo_tbt
  room = room - g1 - 1e-6  # m < room, with a margin for rounding
  room = jnp.where(jnp.isfinite(room), jnp.clip(room, -1.0, config.macro_steps + 1.0), -1.0)
  u_written_off = 1 + jnp.ceil(room).astype(jnp.int32)  # 2 + largest m; 1 when none
  watched = dec & (sl.cls == 0)
  # The two are exclusive (on pace at u = 2 means a ratio >= 1): a slot not written off at
  # u = 2 must stay on pace, so the batch's bound is one count over the clock.
  paced = watched & (u_written_off < 2)
  pace_min = jnp.min(jnp.where(paced & ~keeps_up, pace, jnp.inf))
  u_on_pace = 1 + jnp.sum(t_u <= pace_min, dtype=jnp.int32)
  u_off = jnp.min(jnp.where(watched & ~paced, u_written_off, NO_LIMIT))
  u_gain = jnp.minimum(u_on_pace, u_off)
  # A slot adds at most ceil(tokens / BLOCK_SIZE) blocks for `tokens` more tokens.
  blocks_bound = n_d.astype(jnp.int32) * _ceil_div(u - 1, BLOCK_SIZE)
  ok = (
    (u <= last_finish)
    & (u <= horizon)
    & (t_before < wake)
    & (blocks_bound <= free_blocks)
    & (u <= u_gain)
  )
  extra = jnp.where(quiet, jnp.where(jnp.all(ok), ok.shape[0], jnp.argmin(ok)), 0)
  extra = extra.astype(jnp.int32)
  run = u <= extra + 1
  t_end = jnp.where(extra > 0, t_u[jnp.maximum(extra - 1, 0)], t)
  max_gap = jnp.max(jnp.where(run, t_u - t_before, 0.0))
  grow = dec & (extra > 0)
  added = jnp.where(grow, new_blocks(sl.prefilled, extra, _held(sl, config.n_prefixes)), 0)
  weight = jnp.where(grow & paced, params.decode_weight * extra, 0.0)
  sl = sl.replace(
    prefilled=sl.prefilled + jnp.where(grow, extra, 0),
    generated=sl.generated + jnp.where(grow, extra, 0),
    kv_blocks=sl.kv_blocks + added,
    last_tok_t=jnp.where(grow, t_end, sl.last_tok_t),
    tbt_sum=jnp.where(grow, sl.tbt_sum + (t_end - t), sl.tbt_sum),
    tbt_max=jnp.where(grow, jnp.maximum(sl.tbt_max, max_gap), sl.tbt_max),
    gain=sl.gain + weight,
    good_tokens=sl.good_tokens + weight,
  )
  return sl, t_end, extra, jnp.sum(jnp.where(run, dt, 0.0)), jnp.sum(added, dtype=jnp.int32)


def step(key, state: State, action: Action, params: EnvParams, workload, config: EnvConfig):
  """One engine iteration (docs/llm_serving_semantics.md, steps 1-11), or with
  `config.macro_steps > 1` a quiet stretch of up to that many (`_decode_stretch`)."""
  # (1. admission ran at the end of the previous step, or in `init`: the policy that chose
  # `action` has seen every request due by now)
  sl, t = state.slots, state.t
  n_pfx, table = config.n_prefixes, state.prefixes

  # 2. policy preemption
  asked = action.preempt & (sl.status == RUNNING)
  sl, freed = _preempt(sl, asked)
  if n_pfx:
    table, sl = _detach(table, sl, asked, t)
  free_blocks = state.free_blocks + freed

  # 3. memory preemption: one victim when the running decodes cannot all grow, or when the
  # last iteration stalled because its first request found no KV blocks; with shared prefixes
  # an unreferenced resident prefix is evicted instead while there is one
  prio_key = sortable_key(action.priority)
  decode = in_decode(sl)
  held = _held(sl, n_pfx)
  need = jnp.sum(jnp.where(decode & (sl.status == RUNNING), new_blocks(sl.prefilled, 1, held), 0))
  short = (need > free_blocks) | state.mem_stall
  if n_pfx:
    sl, table, evict_freed, evicted, any_can, revoked, tokens_back = _evict(sl, table, short)
    free_blocks = free_blocks + evict_freed
    holders = jnp.where(sl.status == RUNNING, _held(sl, n_pfx), 0)
    victim = _memory_victim(sl.replace(kv_blocks=holders), prio_key) & short & ~any_can
  else:
    victim = _memory_victim(sl, prio_key) & short
  sl, freed = _preempt(sl, victim)
  if n_pfx:
    table, sl = _detach(table, sl, victim, t)
  free_blocks = free_blocks + freed
  preempted_now = asked | victim
  if n_pfx:  # a request whose attach was just taken back waits too (its wish is stale)
    preempted_now = preempted_now | revoked

  # 4. projection of the policy's wish onto a feasible batch
  decode = in_decode(sl)
  left = remaining(sl)
  can_run = runnable(sl, t)
  demand = jnp.where(can_run & ~preempted_now, jnp.minimum(jnp.maximum(action.grant, 0), left), 0)
  held = _held(sl, n_pfx)
  demand = _residency(demand, action.priority, held, params.max_resident)
  watermark_blocks = jnp.floor(params.watermark * params.num_blocks).astype(jnp.int32)
  grant = fill(
    action.priority,
    demand,
    ~decode,
    sl.prefilled,
    held,
    free_blocks,
    params.token_budget,
    params.max_seqs,
    watermark_blocks,
    config.chunked_prefill,
  )
  granted = grant > 0
  added = jnp.where(granted, new_blocks(sl.prefilled, grant, held), 0)
  free_blocks = free_blocks - jnp.sum(added, dtype=jnp.int32)

  # 5-6. batch time and clock
  feats = _features(sl, grant, decode)
  batch_time = timing.batch_time(config.time_model, params.time_coef, feats)
  dt = batch_time * _noise_factor(state.key, state.step, params.noise_sigma)
  busy = jnp.any(granted)
  # With candidates but no grant, the first one lacked KV blocks (the prefix stops there): the
  # clock stands still and the next iteration preempts a victim for it.
  stalled = jnp.any(demand > 0) & ~busy
  n = workload.n_total
  next_arrival = jnp.where(
    state.online_ptr < state.online_end,
    scaled_arrival(workload.arrival[jnp.minimum(state.online_ptr, n - 1)], params),
    jnp.inf,
  )
  pending = ((sl.status == WAITING) | (sl.status == PREEMPTED)) & (sl.release > t)
  next_release = jnp.min(jnp.where(pending, sl.release, jnp.inf))
  wake = jnp.minimum(next_arrival, next_release)
  # Offline events: the next offline row's availability while the quota and the table have
  # room for it, and the drop time while rows are left.
  off_left = state.offline_ptr < n
  off_live = _offline_live(sl)
  off_room = (off_live < params.offline_slots) & jnp.any(sl.status == EMPTY)
  next_offline = jnp.asarray(workload.arrival)[jnp.minimum(state.offline_ptr, n - 1)]
  wake = jnp.minimum(wake, jnp.where(off_left & off_room, next_offline, jnp.inf))
  wake = jnp.minimum(wake, jnp.where(off_left | (off_live > 0), params.offline_stop, jnp.inf))
  idle_t = jnp.where(jnp.isfinite(wake) & ~stalled, jnp.maximum(t, wake), t)
  t = jnp.where(busy, t + dt, idle_t)

  # 7. advance: finished prefill targets and decodes emit one token at t
  prefilled = sl.prefilled + grant
  emit = granted & (sl.prompt_len + sl.generated - prefilled == 0)
  generated = sl.generated + emit
  gap = t - sl.last_tok_t
  later = emit & (generated >= 2)
  sl = sl.replace(
    status=jnp.where(granted, RUNNING, sl.status),
    prefilled=prefilled,
    kv_blocks=sl.kv_blocks + added,
    generated=generated,
    first_tok_t=jnp.where(emit & (generated == 1), t, sl.first_tok_t),
    last_tok_t=jnp.where(emit, t, sl.last_tok_t),
    tbt_sum=jnp.where(later, sl.tbt_sum + gap, sl.tbt_sum),
    tbt_max=jnp.where(later, jnp.maximum(sl.tbt_max, gap), sl.tbt_max),
  )
  # 8. service gain of the latency class
  sl = _latency_gain(sl, emit, t, params)
  # 8a. publish: first requests past their group's shareable prefix hand its blocks over
  if n_pfx:
    sl, table = _publish(sl, table, t)

  # 8b. macro-step: more iterations of the same decode batch while nothing else happens
  extra, extra_time, extra_blocks = jnp.int32(0), 0.0, 0
  if config.macro_steps > 1:
    # The next iteration grants the same batch if all of it now decodes, the policy asked for
    # every runnable slot (not so for one admitted or preempted just now), and either nobody
    # else can run (any order: everything fits) or, under an order that stays fixed, the
    # prefix stops at the same request for the same reason: the batch is full (max_seqs), or
    # it held decodes only (the same tokens, and blocks only get scarcer).
    waiting = jnp.any(can_run & ~granted)
    full = jnp.sum(granted) >= params.max_seqs
    only_decodes = ~jnp.any(granted & ~decode)
    quiet = (
      busy
      & ~jnp.any(granted & ~emit)
      & ~jnp.any(can_run & (demand == 0))
      & (~waiting | (jnp.asarray(action.fixed_order) & (full | only_decodes)))
    )
    if n_pfx:
      # Shared prefixes: no stretch when someone would attach at the end of this iteration
      # (the next policy call would see it).
      quiet = quiet & ~jnp.any(_attachable(sl, table))
    horizon = jnp.asarray(action.horizon, jnp.int32)
    sl, t, extra, extra_time, extra_blocks = _decode_stretch(
      sl, granted, quiet, t, wake, free_blocks, horizon, state, params, config
    )
    free_blocks = free_blocks - extra_blocks

  off_granted = granted & (sl.cls == OFFLINE)
  # 9. finish: write the outputs once, free the slot
  fin = emit & (sl.generated == sl.out_len)
  dst = jnp.where(fin, sl.wid, n)
  out = state.outputs
  tbt_mean = jnp.where(
    sl.out_len > 1, (sl.last_tok_t - sl.first_tok_t) / jnp.maximum(sl.out_len - 1, 1), 0.0
  )
  write = lambda arr, v: arr.at[dst].set(v, mode="drop")  # noqa: E731
  out = out.replace(
    finish_t=write(out.finish_t, t),
    release=write(out.release, sl.release),
    ttft=write(out.ttft, sl.first_tok_t - sl.release),
    tbt_max=write(out.tbt_max, sl.tbt_max),
    tbt_mean=write(out.tbt_mean, tbt_mean),
    n_preempt=write(out.n_preempt, sl.n_preempt),
    gain=write(out.gain, sl.gain),
    good_tokens=write(out.good_tokens, sl.good_tokens),
  )
  free_blocks = free_blocks + jnp.sum(jnp.where(fin, sl.kv_blocks, 0), dtype=jnp.int32)
  if n_pfx:
    table, sl = _detach(table, sl, fin, t)
  n_jobs = workload.n_jobs
  node_fin = fin & (sl.job_id >= 0)
  stage_done = state.stage_done.at[jnp.where(node_fin, sl.job_id, n_jobs), sl.stage].add(
    1, mode="drop"
  )
  sl = sl.replace(
    wid=jnp.where(fin, -1, sl.wid),
    status=jnp.where(fin, EMPTY, sl.status),
    kv_blocks=jnp.where(fin, 0, sl.kv_blocks),
  )

  # 10. DAG release: a node runs once every node of the previous stage has finished
  job = jnp.maximum(sl.job_id, 0)
  prev = jnp.maximum(sl.stage - 1, 0)
  ready = (sl.status == BLOCKED) & (stage_done[job, prev] == workload.width[job, prev])
  seq = state.next_seq + jnp.cumsum(ready, dtype=jnp.int32) - 1
  sl = sl.replace(
    status=jnp.where(ready, WAITING, sl.status),
    release=jnp.where(ready, t + params.step_delay, sl.release),
    seq=jnp.where(ready, seq, sl.seq),
  )
  del key  # the env's randomness comes from the loop key in the state
  state = state.replace(
    slots=sl,
    t=t,
    step=state.step + 1 + extra,
    free_blocks=free_blocks,
    next_seq=state.next_seq + jnp.sum(ready, dtype=jnp.int32),
    busy_time=state.busy_time + jnp.where(busy, dt, 0.0) + extra_time,
    busy_steps=state.busy_steps + busy + extra,
    n_finished=state.n_finished + jnp.sum(fin, dtype=jnp.int32),
    n_mem_preempt=state.n_mem_preempt + jnp.sum(victim, dtype=jnp.int32),
    n_policy_preempt=state.n_policy_preempt + jnp.sum(asked, dtype=jnp.int32),
    mem_stall=stalled,
    tokens=state.tokens + jnp.sum(grant).astype(jnp.float64) + jnp.sum(granted) * extra,
    offline_tokens=state.offline_tokens
    + jnp.sum(jnp.where(off_granted, grant + extra, 0)).astype(jnp.float64),
    stage_done=stage_done,
    outputs=out,
    prefixes=table,
  )
  if n_pfx:
    state = state.replace(
      prefix_evictions=state.prefix_evictions + evicted.astype(jnp.int32),
      prefix_hits=state.prefix_hits - jnp.sum(revoked, dtype=jnp.int32),
      prefix_tokens_saved=state.prefix_tokens_saved - tokens_back.astype(jnp.float64),
    )
  # 1. admission at the new clock, so the next policy call sees what has arrived by then (an
  # idle jump lands on an arrival, which is then served at once); then attach (shared prefixes)
  state = _admit(state, params, workload, config.admit_max, n_pfx)
  if n_pfx:
    state = _attach(state)
  return state


def make(config: EnvConfig | None = None) -> Env:
  """The engine for one static configuration. Requires jax_enable_x64 (time is float64)."""
  _check_x64()
  config = EnvConfig() if config is None else config
  if config.time_model not in ("roofline", "linear"):
    raise ValueError(f"EnvConfig.time_model={config.time_model!r}: use 'roofline' or 'linear'")
  if config.n_slots < 1 or config.admit_max < 1 or config.macro_steps < 1:
    raise ValueError(f"EnvConfig needs n_slots, admit_max and macro_steps >= 1, got {config}")
  if config.n_prefixes < 0:
    raise ValueError(f"EnvConfig.n_prefixes must be >= 0 (0 = no sharing), got {config}")
  return Env(
    config=config,
    init=lambda key, params, workload: init(key, params, workload, config),
    step=lambda key, state, action, params, workload: step(
      key, state, action, params, workload, config
    ),
    observe=observe,
    check=lambda workload: check_workload(workload, config),
  )
