"""EchoLM's in-context cache: a fixed-capacity table of (request, large-model response) pairs.

Spec: ../shared/papers/serving.md section 5.2. Every large-tier response is inserted; a request
offloaded to the small tier retrieves its nearest cached requests (masked `emb @ q`,
`lax.top_k`), scores each as an in-context example and prepends the best few under a token cap.
When the table is full the entry with the smallest decayed utility is evicted; when the large
tier is idle, low-quality or heavily used entries are re-answered (offline replay).

All functions are pure and jittable; `process_stream` scans a whole request stream (retrieve,
choose, mark used, insert, replay) in one jitted call and `sweep` vmaps it over stacked
`CacheParams` (e.g. the usable cache size `active`, or the utility threshold).
`systems/context_cache_reference.py` is the plain-Python twin.

  config = CacheConfig(capacity=64, dim=16)
  stream = random_stream(np.random.default_rng(0), config, n=100)
  cache, out = process_stream(config, CacheParams(active=64), init(config), stream)
  out.chosen  # [100, k_max] cache rows used as examples (-1: none)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


class CacheConfig(NamedTuple):
  """Static shapes (hashable; never vmapped)."""

  capacity: int = 4096  # M, rows of the table
  dim: int = 384  # D, embedding width (MiniLM)
  top_k: int = 8  # neighbours retrieved per request
  k_max: int = 4  # in-context examples per request at most
  n_replay: int = 1  # entries re-answered per idle request step


@flax.struct.dataclass
class CacheParams:
  """Numbers of one run (vmappable). Defaults are [R] (serving.md 5.2)."""

  gamma: float = 2.0  # similarity exponent of the utility
  tier_cap: float = 1.0  # cap(tier): how much the target tier gains from examples
  lambda_tok: float = 1e-4  # utility cost per response token (extra prefill)
  u_min: float = 0.05  # examples need utility above this
  token_cap: int = 1024  # sum of (req + resp) tokens of the chosen examples
  decay: float = 0.999  # per-second decay of the eviction score
  ema: float = 0.2  # utility_ema <- (1 - ema) utility_ema + ema u, on each use
  init_utility: float = 0.5  # utility_ema of a new entry
  active: int = 4096  # rows in use (<= capacity): the cache-size knob of a vmapped sweep
  replay_min: float = 0.5  # replay an entry only when its replay score exceeds this
  replay_use_weight: float = 0.5  # weight of min(uses, use_scale) / use_scale in the score
  use_scale: float = 4.0
  q_replay: float = 0.8  # probability that a re-answer is good (the large tier's quality)


@flax.struct.dataclass
class Cache:
  """The table; leading axis M on every row field."""

  emb: jnp.ndarray  # [M, D] float: unit-norm request embedding
  req_len: jnp.ndarray  # [M] i32: request tokens
  resp_len: jnp.ndarray  # [M] i32: response tokens
  quality: jnp.ndarray  # [M] float: quality of the stored response in [0, 1]
  uses: jnp.ndarray  # [M] i32: times used as an example since insert / last replay
  last_use: jnp.ndarray  # [M] float: time of insert or last use (s)
  utility_ema: jnp.ndarray  # [M] float: running mean of the entry's example utility
  valid: jnp.ndarray  # [M] bool: row holds an entry
  src: jnp.ndarray  # [M] i32: id of the underlying question (simulation ground truth)
  n_insert: jnp.ndarray  # i32: inserts so far
  n_evict: jnp.ndarray  # i32: evictions so far
  n_replay: jnp.ndarray  # i32: re-answered entries so far


class Request(NamedTuple):
  """One request of a stream (a stream stacks these with a leading axis N)."""

  emb: jnp.ndarray  # [D] float, unit norm
  req_len: jnp.ndarray  # i32
  resp_len: jnp.ndarray  # i32: tokens of the response that would be inserted
  quality: jnp.ndarray  # float: quality of that response
  t: jnp.ndarray  # float: arrival time (s)
  src: jnp.ndarray  # i32: question id
  use_examples: jnp.ndarray  # bool: choose examples for this request
  insert: jnp.ndarray  # bool: insert the response (it came from the large tier)
  idle: jnp.ndarray  # bool: the large tier is idle after this request: replay
  replay_u: jnp.ndarray  # [n_replay] float uniforms deciding whether re-answers are good


class StepOut(NamedTuple):
  """What one request step did."""

  ids: jnp.ndarray  # [top_k] i32 retrieved rows, best first, -1 where fewer are valid
  sims: jnp.ndarray  # [top_k] float cosine similarities, -inf where ids == -1
  chosen: jnp.ndarray  # [k_max] i32 rows used as examples, -1 padding
  n_chosen: jnp.ndarray  # i32
  ex_tokens: jnp.ndarray  # i32: sum of req + resp tokens of the chosen examples
  slot: jnp.ndarray  # i32: row written by the insert, -1 when none
  evicted: jnp.ndarray  # i32: row whose entry was evicted for it, -1 when none
  replayed: jnp.ndarray  # [n_replay] i32 rows re-answered, -1 padding
  replay_tokens: jnp.ndarray  # i32: tokens the re-answers cost the large tier


def _float():
  return jnp.zeros(()).dtype  # float64 under x64, else float32


def init(config: CacheConfig, dtype=jnp.float32) -> Cache:
  """An empty cache; `dtype` is the embedding dtype (similarities are computed in it)."""
  m, f = config.capacity, _float()
  return Cache(
    emb=jnp.zeros((m, config.dim), dtype),
    req_len=jnp.zeros(m, jnp.int32),
    resp_len=jnp.zeros(m, jnp.int32),
    quality=jnp.zeros(m, f),
    uses=jnp.zeros(m, jnp.int32),
    last_use=jnp.zeros(m, f),
    utility_ema=jnp.zeros(m, f),
    valid=jnp.zeros(m, bool),
    src=jnp.full(m, -1, jnp.int32),
    n_insert=jnp.zeros((), jnp.int32),
    n_evict=jnp.zeros((), jnp.int32),
    n_replay=jnp.zeros((), jnp.int32),
  )


def _usable(cache: Cache, params: CacheParams):
  return cache.valid & (jnp.arange(cache.valid.shape[0]) < params.active)


def retrieve(cache: Cache, params: CacheParams, config: CacheConfig, q):
  """(ids [top_k] i32, sims [top_k]) of the nearest valid entries to q [D]; -1 / -inf pad."""
  sims = cache.emb @ q.astype(cache.emb.dtype)
  ok = _usable(cache, params)
  sims, ids = jax.lax.top_k(jnp.where(ok, sims, -jnp.inf), config.top_k)
  found = jnp.isfinite(sims)
  return jnp.where(found, ids, -1).astype(jnp.int32), sims


def example_utility(cache: Cache, params: CacheParams, ids, sims):
  """u = max(sim, 0)^gamma quality cap(tier) - lambda_tok resp_len per candidate; -inf at -1."""
  row = jnp.maximum(ids, 0)
  s = jnp.maximum(sims, 0.0).astype(_float())
  u = s**params.gamma * cache.quality[row] * params.tier_cap
  u = u - params.lambda_tok * cache.resp_len[row]
  return jnp.where(ids >= 0, u, -jnp.inf)


def select_examples(cache: Cache, params: CacheParams, config: CacheConfig, ids, sims, allow=True):
  """Greedy choice by utility: walk candidates in descending u (ties: retrieval order), take
  one when u > u_min, fewer than k_max are taken and the token sum stays <= token_cap.

  Returns (chosen [k_max] i32 rows or -1, u of those [k_max], n_chosen i32, tokens i32).
  """
  u = example_utility(cache, params, ids, sims)
  order = jnp.argsort(-u, stable=True)
  row = jnp.maximum(ids, 0)
  cost = (cache.req_len[row] + cache.resp_len[row]).astype(jnp.int32)

  def take(carry, j):
    n, tok, chosen, cu = carry
    ok = allow & (ids[j] >= 0) & (u[j] > params.u_min) & (n < config.k_max)
    ok = ok & (tok + cost[j] <= params.token_cap)
    pos = jnp.where(ok, n, config.k_max)  # out of range: dropped
    chosen = chosen.at[pos].set(ids[j], mode="drop")
    cu = cu.at[pos].set(u[j], mode="drop")
    return (n + ok.astype(jnp.int32), tok + jnp.where(ok, cost[j], 0), chosen, cu), None

  init_carry = (
    jnp.zeros((), jnp.int32),
    jnp.zeros((), jnp.int32),
    jnp.full(config.k_max, -1, jnp.int32),
    jnp.zeros(config.k_max, u.dtype),
  )
  (n, tok, chosen, cu), _ = jax.lax.scan(take, init_carry, order)
  return chosen, cu, n, tok


def mark_used(cache: Cache, params: CacheParams, chosen, u_chosen, t):
  """uses += 1, last_use = t, utility_ema moves toward u for every chosen row (-1 skipped)."""
  m = cache.valid.shape[0]
  rows = jnp.where(chosen >= 0, chosen, m)
  old = cache.utility_ema[jnp.minimum(rows, m - 1)]
  new = (1.0 - params.ema) * old + params.ema * u_chosen
  return cache.replace(
    uses=cache.uses.at[rows].add(1, mode="drop"),
    last_use=cache.last_use.at[rows].set(t, mode="drop"),
    utility_ema=cache.utility_ema.at[rows].set(new, mode="drop"),
  )


def evict_score(cache: Cache, params: CacheParams, t):
  """[M] utility_ema decay^(t - last_use); +inf on rows that are not usable."""
  score = cache.utility_ema * params.decay ** (t - cache.last_use)
  return jnp.where(_usable(cache, params), score, jnp.inf)


def insert(cache: Cache, params: CacheParams, req: Request):
  """Writes `req` into the first free usable row, or over the arg-min of `evict_score` when
  all `active` rows are full (ties: lowest row). No-op unless `req.insert`.

  Returns (cache, slot or -1, evicted row or -1).
  """
  m = cache.valid.shape[0]
  idx = jnp.arange(m)
  free = (~cache.valid) & (idx < params.active)
  has_free = jnp.any(free)
  victim = jnp.argmin(evict_score(cache, params, req.t))
  slot = jnp.where(has_free, jnp.argmax(free), victim).astype(jnp.int32)
  do = req.insert & (params.active > 0)
  evicted = jnp.where(do & ~has_free, slot, -1).astype(jnp.int32)
  row = jnp.where(do, slot, m)  # out of range: every write below is dropped
  c = cache.replace(
    emb=cache.emb.at[row].set(req.emb.astype(cache.emb.dtype), mode="drop"),
    req_len=cache.req_len.at[row].set(req.req_len, mode="drop"),
    resp_len=cache.resp_len.at[row].set(req.resp_len, mode="drop"),
    quality=cache.quality.at[row].set(req.quality, mode="drop"),
    uses=cache.uses.at[row].set(0, mode="drop"),
    last_use=cache.last_use.at[row].set(req.t, mode="drop"),
    utility_ema=cache.utility_ema.at[row].set(params.init_utility, mode="drop"),
    valid=cache.valid.at[row].set(True, mode="drop"),
    src=cache.src.at[row].set(req.src, mode="drop"),
    n_insert=cache.n_insert + do.astype(jnp.int32),
    n_evict=cache.n_evict + (evicted >= 0).astype(jnp.int32),
  )
  return c, jnp.where(do, slot, -1).astype(jnp.int32), evicted


def replay_score(cache: Cache, params: CacheParams):
  """[M] (1 - quality) + w min(uses, use_scale) / use_scale; -inf on unusable rows [R]."""
  use = jnp.minimum(cache.uses, params.use_scale) / params.use_scale
  score = (1.0 - cache.quality) + params.replay_use_weight * use
  return jnp.where(_usable(cache, params), score, -jnp.inf)


def replay(cache: Cache, params: CacheParams, config: CacheConfig, idle, u):
  """Offline replay [R, after the paper's cost-aware replay]: when `idle`, re-answer the
  n_replay rows of highest `replay_score` above replay_min. A re-answer is good (quality 1)
  when u < q_replay, else 0; the better response is kept, uses restart at 0, and each
  re-answer costs the large tier req_len + resp_len tokens.

  Returns (cache, rows [n_replay] i32 or -1, tokens i32).
  """
  m = cache.valid.shape[0]
  score, rows = jax.lax.top_k(replay_score(cache, params), config.n_replay)
  do = idle & (score > params.replay_min)
  new_q = (u < params.q_replay).astype(cache.quality.dtype)
  tgt = jnp.where(do, rows, m)
  keep = jnp.maximum(cache.quality[rows], new_q)
  tokens = jnp.sum(jnp.where(do, cache.req_len[rows] + cache.resp_len[rows], 0))
  c = cache.replace(
    quality=cache.quality.at[tgt].set(keep, mode="drop"),
    uses=cache.uses.at[tgt].set(0, mode="drop"),
    n_replay=cache.n_replay + jnp.sum(do).astype(jnp.int32),
  )
  return c, jnp.where(do, rows, -1).astype(jnp.int32), tokens.astype(jnp.int32)


def step(config: CacheConfig, params: CacheParams, cache: Cache, req: Request):
  """One request: retrieve, choose examples (if asked), mark them used, insert, replay."""
  ids, sims = retrieve(cache, params, config, req.emb)
  chosen, cu, n, tok = select_examples(cache, params, config, ids, sims, req.use_examples)
  cache = mark_used(cache, params, chosen, cu, req.t)
  cache, slot, evicted = insert(cache, params, req)
  cache, rep, rep_tok = replay(cache, params, config, req.idle, req.replay_u)
  return cache, StepOut(ids, sims, chosen, n, tok, slot, evicted, rep, rep_tok)


def _scan(config, params, cache, stream):
  return jax.lax.scan(functools.partial(step, config, params), cache, stream)


@functools.partial(jax.jit, static_argnums=0)
def process_stream(config: CacheConfig, params: CacheParams, cache: Cache, stream: Request):
  """Scans `step` over a stream (Request fields with leading axis N): (final cache, StepOut
  with leading axis N)."""
  return _scan(config, params, cache, stream)


@functools.partial(jax.jit, static_argnums=0)
def sweep(config: CacheConfig, params: CacheParams, cache: Cache, stream: Request):
  """`process_stream` vmapped over stacked `params` (leading axis K: e.g. `active` or
  `u_min`); cache and stream are shared. Returns (caches, outs) with leading axis K."""
  return jax.vmap(_scan, in_axes=(None, 0, None, None))(config, params, cache, stream)


def random_params(rng: np.random.Generator, config: CacheConfig, p_empty: float = 0.0):
  """Host-side random `CacheParams` for tests: every scoring and replay knob drawn over its
  useful range; `active` rows in [1, capacity], or 0 (an unused cache) with chance p_empty."""
  active = int(rng.integers(1, config.capacity + 1))
  return CacheParams(
    gamma=float(rng.choice([1.0, 2.0, 3.0])),
    tier_cap=float(rng.uniform(0.5, 1.5)),
    lambda_tok=float(rng.choice([0.0, 1e-4, 1e-3])),
    u_min=float(rng.uniform(0.0, 0.2)),
    token_cap=int(rng.choice([200, 500, 1024])),
    decay=float(rng.uniform(0.9, 1.0)),
    ema=float(rng.uniform(0.1, 0.5)),
    init_utility=float(rng.uniform(0.1, 0.6)),
    active=0 if rng.random() < p_empty else active,
    replay_min=float(rng.uniform(0.2, 0.8)),
    replay_use_weight=float(rng.uniform(0.0, 1.0)),
    use_scale=float(rng.choice([2.0, 4.0])),
    q_replay=float(rng.uniform(0.5, 0.95)),
  )


def random_stream(
  rng: np.random.Generator,
  config: CacheConfig,
  n: int,
  *,
  n_topics: int = 12,
  noise: float = 0.4,
  p_examples: float = 0.6,
  p_insert: float = 0.7,
  p_idle: float = 0.2,
  rate: float = 5.0,
  dtype=np.float64,
) -> Request:
  """A host-side random stream for tests and benchmarks: topics are random unit vectors, each
  request a topic plus Gaussian noise (so similarities spread over [0, 1]); lengths, quality
  and the per-request flags are random. Fields are numpy arrays with leading axis n."""
  d = config.dim
  topics = rng.standard_normal((n_topics, d))
  topic = rng.integers(0, n_topics, n)
  emb = topics[topic] + noise * rng.standard_normal((n, d))
  emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(dtype)
  return Request(
    emb=emb,
    req_len=rng.integers(10, 300, n).astype(np.int32),
    resp_len=rng.integers(5, 400, n).astype(np.int32),
    quality=rng.choice([0.0, 0.5, 1.0], n).astype(np.float64),
    t=np.cumsum(rng.exponential(1.0 / rate, n)),
    src=topic.astype(np.int32),
    use_examples=rng.random(n) < p_examples,
    insert=rng.random(n) < p_insert,
    idle=rng.random(n) < p_idle,
    replay_u=rng.random((n, config.n_replay)),
  )
