"""Plain-Python twin of systems/context_cache.py (lists and loops, numpy only for the dot).

Written from the rules in serving.md 5.2 and the docstrings of context_cache, not from its code:
the property test (tests/systems/test_context_cache.py) checks that both give the same
retrieved rows, examples, evictions, replays and final table on random streams.

  ref = ReferenceCache(config, params)
  outs = [ref.step(request_i) for request_i in requests]   # dicts, one per request
"""

from __future__ import annotations

import math

import numpy as np


class ReferenceCache:
  """The cache table as Python lists; `params` is a CacheParams (read as plain numbers)."""

  def __init__(self, config, params):
    self.config = config
    self.p = {k: float(np.asarray(getattr(params, k))) for k in params.__dataclass_fields__}
    self.active = int(self.p["active"])
    m = config.capacity
    self.emb = [np.zeros(config.dim) for _ in range(m)]
    self.req_len = [0] * m
    self.resp_len = [0] * m
    self.quality = [0.0] * m
    self.uses = [0] * m
    self.last_use = [0.0] * m
    self.utility_ema = [0.0] * m
    self.valid = [False] * m
    self.src = [-1] * m
    self.n_insert = self.n_evict = self.n_replay = 0

  def _usable(self, i):
    return self.valid[i] and i < self.active

  def retrieve(self, q):
    sims = [(float(np.dot(self.emb[i], q)), i) for i in range(len(self.valid)) if self._usable(i)]
    sims.sort(key=lambda x: (-x[0], x[1]))
    top = sims[: self.config.top_k]
    ids = [i for _, i in top] + [-1] * (self.config.top_k - len(top))
    vals = [s for s, _ in top] + [-math.inf] * (self.config.top_k - len(top))
    return ids, vals

  def utility(self, i, sim):
    p = self.p
    return (
      max(sim, 0.0) ** p["gamma"] * self.quality[i] * p["tier_cap"]
      - p["lambda_tok"] * self.resp_len[i]
    )

  def select(self, ids, sims, allow):
    cands = [
      (self.utility(i, s), j, i) for j, (i, s) in enumerate(zip(ids, sims, strict=True)) if i >= 0
    ]
    cands.sort(key=lambda x: (-x[0], x[1]))
    chosen, us, tokens = [], [], 0
    if allow:
      for u, _, i in cands:
        cost = self.req_len[i] + self.resp_len[i]
        if u > self.p["u_min"] and len(chosen) < self.config.k_max:
          if tokens + cost <= self.p["token_cap"]:
            chosen.append(i)
            us.append(u)
            tokens += cost
    return chosen, us, tokens

  def mark_used(self, chosen, us, t):
    for i, u in zip(chosen, us, strict=True):
      self.uses[i] += 1
      self.last_use[i] = t
      self.utility_ema[i] = (1.0 - self.p["ema"]) * self.utility_ema[i] + self.p["ema"] * u

  def insert(self, req):
    if not req["insert"] or self.active <= 0:
      return -1, -1
    free = [i for i in range(min(self.active, len(self.valid))) if not self.valid[i]]
    evicted = -1
    if free:
      slot = free[0]
    else:
      t = req["t"]
      best, slot = math.inf, 0
      for i in range(len(self.valid)):
        if not self._usable(i):
          continue
        score = self.utility_ema[i] * self.p["decay"] ** (t - self.last_use[i])
        if score < best:
          best, slot = score, i
      evicted = slot
      self.n_evict += 1
    self.emb[slot] = np.asarray(req["emb"], np.float64)
    self.req_len[slot] = int(req["req_len"])
    self.resp_len[slot] = int(req["resp_len"])
    self.quality[slot] = float(req["quality"])
    self.uses[slot] = 0
    self.last_use[slot] = float(req["t"])
    self.utility_ema[slot] = self.p["init_utility"]
    self.valid[slot] = True
    self.src[slot] = int(req["src"])
    self.n_insert += 1
    return slot, evicted

  def replay(self, idle, u):
    p = self.p
    scored = []
    for i in range(len(self.valid)):
      if self._usable(i):
        use = min(self.uses[i], p["use_scale"]) / p["use_scale"]
        scored.append(((1.0 - self.quality[i]) + p["replay_use_weight"] * use, i))
    scored.sort(key=lambda x: (-x[0], x[1]))
    rows, tokens = [], 0
    for r in range(self.config.n_replay):
      if r >= len(scored) or not idle or scored[r][0] <= p["replay_min"]:
        rows.append(-1)
        continue
      i = scored[r][1]
      good = 1.0 if u[r] < p["q_replay"] else 0.0
      tokens += self.req_len[i] + self.resp_len[i]
      self.quality[i] = max(self.quality[i], good)
      self.uses[i] = 0
      self.n_replay += 1
      rows.append(i)
    return rows, tokens

  def step(self, req):
    """req: dict of one request's fields (context_cache.Request names). Returns a dict."""
    ids, sims = self.retrieve(np.asarray(req["emb"], np.float64))
    chosen, us, tokens = self.select(ids, sims, bool(req["use_examples"]))
    self.mark_used(chosen, us, float(req["t"]))
    slot, evicted = self.insert(req)
    rows, rep_tokens = self.replay(bool(req["idle"]), list(req["replay_u"]))
    return dict(
      ids=ids,
      sims=sims,
      chosen=chosen + [-1] * (self.config.k_max - len(chosen)),
      n_chosen=len(chosen),
      ex_tokens=tokens,
      slot=slot,
      evicted=evicted,
      replayed=rows,
      replay_tokens=rep_tokens,
    )

  def state(self):
    """The table as a dict of numpy arrays (context_cache.Cache field names)."""
    return dict(
      emb=np.stack(self.emb),
      req_len=np.asarray(self.req_len),
      resp_len=np.asarray(self.resp_len),
      quality=np.asarray(self.quality),
      uses=np.asarray(self.uses),
      last_use=np.asarray(self.last_use),
      utility_ema=np.asarray(self.utility_ema),
      valid=np.asarray(self.valid),
      src=np.asarray(self.src),
      n_insert=self.n_insert,
      n_evict=self.n_evict,
      n_replay=self.n_replay,
    )


def process_stream(config, params, stream):
  """Runs a stream (context_cache.Request of numpy arrays, leading axis N) through a fresh
  reference cache. Returns (final state dict, list of per-request dicts)."""
  ref = ReferenceCache(config, params)
  n = len(stream.t)
  outs = []
  for i in range(n):
    outs.append(ref.step({f: getattr(stream, f)[i] for f in stream._fields}))
  return ref.state(), outs


def sweep(config, params_list, stream):
  """The reference for context_cache.sweep: one fresh run per CacheParams in `params_list`."""
  return [process_stream(config, p, stream) for p in params_list]
