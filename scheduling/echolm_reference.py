"""Plain-Python twin of scheduling/echolm.py `route`: one request at a time, float64, loops only.

  out = echolm_reference.route(config, params, stream, cache0)   # dict of numpy arrays
  out["arm"]          # [N] i32 LARGE, SMALL_EX, SMALL or HIT, as echolm.route's RouteOut.arm

Written from the rules (serving.md 5.2-5.5 and echolm's module docstring), not from the scan:
the in-context cache is systems/context_cache_reference.py's `ReferenceCache`, the fluid
backlogs are two floats, LinUCB keeps per-arm matrices and solves for theta. It is the oracle of
tests/scheduling/test_echolm_reference.py.

Randomness: `route` draws nothing. Both the scan and this twin read the uniforms the stream
carries: `u_quality[i]` decides the Bernoulli quality draw (good iff u < p_good) and
`u_replay[i, r]` whether the r-th re-answer of request i's replay step is good (u < q_replay).
"""

from __future__ import annotations

import math

import numpy as np

from jaxsys.scheduling.echolm import HIT, KINDS, LARGE, N_FEATURES, SMALL, SMALL_EX
from jaxsys.systems import context_cache_reference as ccr

OUT_FIELDS = (
  "arm",
  "n_examples",
  "ex_tokens",
  "sim_max",
  "q_pred",
  "p_good",
  "good",
  "backlog",
  "latency_est",
  "replay_prompt",
  "replay_out",
)
_ROUTER_SCALARS = (
  "arrival_scale",
  "q_target",
  "queue_cap",
  "tau",
  "strong_threshold",
  "alpha_ucb",
  "beta",
  "latency_norm",
  "idle_s",
  "replay",
  "hit_quality_other",
  "large_difficulty",
)


def _sigmoid(x: float) -> float:
  if x >= 0:
    return 1.0 / (1.0 + math.exp(-x))
  e = math.exp(x)
  return e / (1.0 + e)


def _logit(p: float) -> float:
  p = min(max(p, 1e-6), 1.0 - 1e-6)
  return math.log(p) - math.log1p(-p)


def _reference_cache(config, params, cache0):
  """A ReferenceCache holding the rows and counters of a context_cache.Cache."""
  ref = ccr.ReferenceCache(config, params)
  c = {f: np.asarray(getattr(cache0, f)) for f in cache0.__dataclass_fields__}
  ref.emb = [row.astype(np.float64) for row in c["emb"]]
  for name, cast in (
    ("req_len", int),
    ("resp_len", int),
    ("quality", float),
    ("uses", int),
    ("last_use", float),
    ("utility_ema", float),
    ("valid", bool),
    ("src", int),
  ):
    setattr(ref, name, [cast(v) for v in c[name]])
  ref.n_insert, ref.n_evict, ref.n_replay = (int(c[k]) for k in ("n_insert", "n_evict", "n_replay"))
  return ref


class _LinUCB:
  """Per arm: A = I + sum x x^T and b = sum reward x over the requests it served."""

  def __init__(self, n_arms=3, n_features=N_FEATURES):
    self.a = [np.eye(n_features) for _ in range(n_arms)]
    self.b = [np.zeros(n_features) for _ in range(n_arms)]

  def choose(self, x, alpha):
    best, best_ucb = 0, -math.inf
    for arm in range(len(self.a)):
      theta = np.linalg.solve(self.a[arm], self.b[arm])
      width = math.sqrt(max(float(x @ np.linalg.solve(self.a[arm], x)), 0.0))
      ucb = float(theta @ x) + alpha * width
      if ucb > best_ucb:  # strict: the first arm wins a tie
        best, best_ucb = arm, ucb
    return best

  def update(self, arm, x, reward):
    self.a[arm] = self.a[arm] + np.outer(x, x)
    self.b[arm] = self.b[arm] + reward * x


def route(config, params, stream, cache0) -> dict:
  """Routes `stream` (echolm.Stream, leading axis N) like `echolm.route(config, params, ...)`.

  config: echolm.RouteConfig; params: echolm.RouterParams (one run, not stacked); cache0: a
  context_cache.Cache (read, not modified). Returns a dict of numpy arrays: the RouteOut fields
  (`OUT_FIELDS`, same shapes, leading axis N) plus
    chosen [N, k_max] i32  cache rows prepended as examples (-1 padding; all -1 unless SMALL_EX)
    seen [N, 2] f64        backlog (s) of (large, small) at arrival, after draining
    work_in [N, 2] f64     seconds of work each tier received at the request (replay included)
    final_backlog [2], final_t, lin_a [3, F, F], lin_b [3, F]   the final router state
    cache                  final table: dict of arrays with context_cache.Cache field names,
                           counters n_insert, n_evict, n_replay included
  ValueError on an unknown kind or inconsistent stream shapes.
  """
  kind, ccfg = config.kind, config.cache
  if kind not in KINDS:
    raise ValueError(f"unknown routing kind {kind!r}; known: {KINDS}")
  n = len(np.asarray(stream.arrival))
  for name in stream._fields:
    if len(np.asarray(getattr(stream, name))) != n:
      raise ValueError(f"stream.{name} has {len(getattr(stream, name))} rows, arrival has {n}")
  p = {k: float(np.asarray(getattr(params, k))) for k in _ROUTER_SCALARS}
  prefill = [float(v) for v in np.asarray(params.prefill_s, np.float64)]
  decode = [float(v) for v in np.asarray(params.decode_s, np.float64)]
  w = [float(v) for v in np.asarray(params.quality.w, np.float64)]
  q_large = float(np.asarray(params.quality.q_large))
  echo = kind.startswith("echolm")

  def work(tier, prompt, out):
    return prompt * prefill[tier] + out * decode[tier]

  def q_small(k, sim):
    s = max(sim, 0.0)
    return _sigmoid(w[0] + w[1] * k + w[2] * s + w[3] * k * s)

  cache = _reference_cache(ccfg, params.cache, cache0)
  lin = _LinUCB()
  backlog, t_prev = [0.0, 0.0], 0.0
  rows = {f: [] for f in OUT_FIELDS + ("chosen", "seen", "work_in")}
  for i in range(n):
    emb = np.asarray(stream.emb[i], np.float64)
    prompt, out = int(stream.prompt_len[i]), int(stream.out_len[i])
    src, d = int(stream.src[i]), float(stream.difficulty[i])
    t = float(stream.arrival[i]) / p["arrival_scale"]
    # fluid queues: each tier works off its backlog in real time
    backlog = [max(b - (t - t_prev), 0.0) for b in backlog]
    t_prev = t
    seen = list(backlog)

    ids, sims = cache.retrieve(emb)
    found = ids[0] >= 0
    sim_max = sims[0] if found else 0.0
    chosen, us, ex_tok = cache.select(ids, sims, True)
    q_pred = [q_large, q_small(len(chosen), sim_max), q_small(0, sim_max)]
    own = [
      work(0, prompt, out),
      work(1, prompt + ex_tok, out),
      work(1, prompt, out),
    ]

    finite = [s for s in sims if math.isfinite(s)]
    x = np.asarray(
      [
        1.0,
        sims[0] if found else 0.0,
        sum(finite) / max(len(finite), 1),
        math.log(prompt) / 8.0,
        q_pred[SMALL_EX],
        q_pred[SMALL],
        backlog[0] / p["latency_norm"],
        backlog[1] / p["latency_norm"],
      ]
    )

    if kind == "large_only":
      arm = LARGE
    elif kind == "small_only":
      arm = SMALL
    elif kind in ("exact_cache", "semantic_cache"):
      tau = 1.0 - 1e-6 if kind == "exact_cache" else p["tau"]
      arm = HIT if found and sims[0] >= tau else LARGE
    elif kind == "routellm":
      arm = LARGE if float(stream.rl_score[i]) < p["strong_threshold"] else SMALL
    elif kind == "echolm_threshold":
      # either queue must have room for this request's work under the cap
      if q_pred[SMALL_EX] >= p["q_target"] and backlog[1] + own[SMALL_EX] < p["queue_cap"]:
        arm = SMALL_EX
      elif backlog[0] + own[LARGE] < p["queue_cap"]:
        arm = LARGE
      else:
        arm = SMALL_EX if q_pred[SMALL_EX] >= q_pred[SMALL] else SMALL
    else:
      arm = lin.choose(x, p["alpha_ucb"])

    # the true chance of a good answer: the arm's model shifted by the question's difficulty
    if arm == HIT:
      r = ids[0]
      p_good = cache.quality[r] if cache.src[r] == src else p["hit_quality_other"]
      latency = 0.0
    else:
      if arm == LARGE:
        p_good = _sigmoid(_logit(q_large) - p["large_difficulty"] * d)
      else:
        p_good = _sigmoid(_logit(q_pred[arm]) - d)
      tier = 0 if arm == LARGE else 1
      latency = backlog[tier] + own[arm]
      backlog[tier] += own[arm]
    good = float(stream.u_quality[i]) < p_good
    if kind == "echolm_linucb":
      lin.update(arm, x, float(good) - p["beta"] * latency / p["latency_norm"])

    if arm != SMALL_EX:
      chosen, us, ex_tok = [], [], 0
    cache.mark_used(chosen, us, t)
    cache.insert(
      dict(
        emb=emb,
        req_len=prompt,
        resp_len=out,
        quality=float(good),
        t=t,
        src=src,
        insert=arm == LARGE,
      )
    )
    # offline replay: re-answers run on the large tier when it is idle after this request
    idle = echo and p["replay"] > 0 and backlog[0] < p["idle_s"]
    replayed, _ = cache.replay(idle, list(np.asarray(stream.u_replay[i], np.float64)))
    rp = [cache.req_len[r] if r >= 0 else 0 for r in replayed]
    ro = [cache.resp_len[r] if r >= 0 else 0 for r in replayed]
    replay_work = sum(work(0, a, b) for a, b in zip(rp, ro, strict=True))
    backlog[0] += replay_work

    work_in = [replay_work, 0.0]
    if arm != HIT:
      work_in[0 if arm == LARGE else 1] += own[arm]
    for name, v in (
      ("arm", arm),
      ("n_examples", len(chosen)),
      ("ex_tokens", ex_tok),
      ("sim_max", sim_max),
      ("q_pred", q_pred),
      ("p_good", p_good),
      ("good", good),
      ("backlog", list(backlog)),  # after this request and its replay (as RouteOut.backlog)
      ("latency_est", latency),
      ("replay_prompt", rp),
      ("replay_out", ro),
      ("chosen", chosen + [-1] * (ccfg.k_max - len(chosen))),
      ("seen", seen),
      ("work_in", work_in),
    ):
      rows[name].append(v)

  ints = ("arm", "n_examples", "ex_tokens", "replay_prompt", "replay_out", "chosen")
  width = dict(q_pred=(3,), backlog=(2,), seen=(2,), work_in=(2,), chosen=(ccfg.k_max,))
  width.update(replay_prompt=(ccfg.n_replay,), replay_out=(ccfg.n_replay,))
  res = {}
  for name, v in rows.items():
    dtype = np.int32 if name in ints else bool if name == "good" else np.float64
    res[name] = np.asarray(v, dtype).reshape((n, *width.get(name, ())))
  res["final_backlog"] = np.asarray(backlog)
  res["final_t"] = np.float64(t_prev)
  res["lin_a"] = np.stack(lin.a)
  res["lin_b"] = np.stack(lin.b)
  res["cache"] = cache.state()
  return res
