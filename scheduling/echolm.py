"""EchoLM routing: in-context caching plus a load-aware router over two model tiers.

Spec: ../shared/papers/serving.md sections 5.3 and 5.5. Arms: large model, small model with
retrieved in-context examples, small model alone; a cache hit of a response cache is a fourth
outcome of the baselines. Policies (`KINDS`, static):

- "large_only", "small_only": route everything to one tier;
- "exact_cache": response cache keyed on the exact request (embedding similarity >= 1 - 1e-6);
- "semantic_cache": GPTCache-like, return the nearest cached response when sim >= tau;
- "routellm": RouteLLM-style, a logistic model on the embedding predicts the small model's
  success; requests scored below `strong_threshold` go large (the threshold is calibrated on a
  training set to a target share of strong calls, `calibrate_threshold`);
- "echolm_threshold": small+examples when the predicted quality >= q_target and the small
  tier's backlog with the request stays under queue_cap, else large if its backlog with the
  request stays under queue_cap, else the better small arm [R: the spec's last resort is
  "small"; we let it keep its examples];
- "echolm_linucb": LinUCB over the three arms with reward quality - beta latency / latency_norm.

Load coupling [R] (systems/llm_serving.py is used unchanged): `route` is one jitted `lax.scan`
over requests in arrival order that keeps a fluid backlog per tier, in seconds of work, drained
in real time; a request's work is prompt x prefill s/token + output x decode s/token of that
tier's roofline time model at a reference decode batch (`tier_rates`). The router reads the
backlogs, so it sees queueing and utilisation. The requests each tier receives (prompts
lengthened by the examples, re-answers of the offline replay added to the large tier) are then
simulated by the unchanged engine (launch/echolm.py), which gives TTFT, E2E and throughput.
Quality is drawn per request: Bernoulli(q), q from `QualityModel` shifted by the question's
difficulty.

  cfg = RouteConfig(kind="echolm_threshold", cache=context_cache.CacheConfig(dim=384))
  final, out = route(cfg, RouterParams(...), stream)     # out.arm: [N] in {0, 1, 2, 3}
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.systems import context_cache as cc
from jaxsys.systems import timing

LARGE, SMALL_EX, SMALL, HIT = 0, 1, 2, 3
ARMS = ("large", "small_ex", "small")
KINDS = (
  "large_only",
  "small_only",
  "exact_cache",
  "semantic_cache",
  "routellm",
  "echolm_threshold",
  "echolm_linucb",
)
N_FEATURES = 8  # LinUCB context width (see `features`)
# [R] synthetic small-tier quality when no SmolLM2 measurement is at hand: 0.45 alone, 0.71
# with two and 0.88 with four examples of similarity 0.95 (about the large tier), 0.60 with
# four of similarity 0.5: examples of near-duplicates close the gap, unrelated ones do not.
DEFAULT_QUALITY_W = (-0.2, -0.3, 0.0, 0.9)


def _logit(p):
  p = jnp.clip(p, 1e-6, 1 - 1e-6)
  return jnp.log(p) - jnp.log1p(-p)


@flax.struct.dataclass
class QualityModel:
  """q_small(k, s) = sigmoid(w . [1, k, s, k s]) with s the best cache similarity; q_large."""

  w: jnp.ndarray = flax.struct.field(default_factory=lambda: jnp.asarray(DEFAULT_QUALITY_W))
  q_large: float = 0.857  # GPT-4's GSM8K accuracy in routellm_gsm8k_correctness.csv [R]

  def small(self, k, sim):
    s = jnp.maximum(sim, 0.0)
    x = jnp.stack([jnp.ones_like(s), k * jnp.ones_like(s), s, k * s], -1)
    return jax.nn.sigmoid(x @ self.w)


def fit_logistic(x, y, l2: float = 1e-3, iters: int = 30) -> np.ndarray:
  """L2-regularised logistic regression by Newton steps (host numpy).

  x: [n, d] features (include a column of ones for an intercept); y: [n] in {0, 1}.
  Returns w [d] float64. ValueError on mismatched shapes or an empty set.
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
    raise ValueError(f"fit_logistic: need x [n, d] and y [n], n > 0; got {x.shape}, {y.shape}")
  w = np.zeros(x.shape[1])
  for _ in range(iters):
    p = 1.0 / (1.0 + np.exp(-(x @ w)))
    grad = x.T @ (p - y) + l2 * x.shape[0] * w
    hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * x.shape[0] * np.eye(x.shape[1])
    w = w - np.linalg.solve(hess, grad)
  return w


def fit_quality_model(k, sim, correct, q_large: float = 0.857, l2: float = 1e-3) -> QualityModel:
  """Fits q_small(k, sim) to measurements: k [n] examples used, sim [n] best similarity,
  correct [n] 0/1 (e.g. SmolLM2 with k retrieved examples, launch/echolm.py)."""
  k = np.asarray(k, np.float64)
  s = np.maximum(np.asarray(sim, np.float64), 0.0)
  x = np.stack([np.ones_like(s), k, s, k * s], 1)
  return QualityModel(w=jnp.asarray(fit_logistic(x, correct, l2)), q_large=q_large)


def tier_rates(coef: timing.TimeCoef, batch: int = 32, ctx: int = 512, chunk: int = 512):
  """(prefill s per token, decode s per token) of one replica under the roofline model: a
  `chunk`-token prefill alone, and a decode batch of `batch` requests at context `ctx`, per
  request [R: the reference batch of the fluid backlog]."""
  c = float(chunk)
  pre = timing.Features(1.0, 0.0, c, c * c, c * c, c, 0.0)
  dec = timing.Features(0.0, float(batch), 0.0, 0.0, 0.0, 0.0, float(batch * ctx))
  t_pre = float(timing.batch_time("roofline", coef, pre)) / c
  t_dec = float(timing.batch_time("roofline", coef, dec)) / batch
  return t_pre, t_dec


@flax.struct.dataclass
class RouterParams:
  """Numbers of one routing run (vmappable; a sweep stacks these)."""

  arrival_scale: float = 1.0  # arrival times are divided by it: the load knob
  q_target: float = 0.7  # threshold router: least predicted quality for small+examples
  queue_cap: float = 10.0  # threshold router: seconds of backlog a tier may hold
  tau: float = 0.8  # semantic cache threshold
  strong_threshold: float = 0.5  # routellm: large when the small-success score is below
  alpha_ucb: float = 0.3  # LinUCB exploration
  beta: float = 0.5  # LinUCB: weight of normalised latency in the reward
  latency_norm: float = 10.0  # seconds that count as latency 1
  idle_s: float = 0.5  # the large tier is idle (replay) when its backlog is below this
  replay: float = 1.0  # 1: offline replay on (EchoLM kinds only), 0: off
  hit_quality_other: float = 0.0  # quality of a cached response to a different question
  large_difficulty: float = 0.5  # how much question difficulty moves the large tier's logit
  # per-tier work rates (s per token), from `tier_rates`
  prefill_s: jnp.ndarray = flax.struct.field(default_factory=lambda: jnp.asarray([2e-4, 2.5e-5]))
  decode_s: jnp.ndarray = flax.struct.field(default_factory=lambda: jnp.asarray([5e-4, 2e-4]))
  quality: QualityModel = QualityModel()
  cache: cc.CacheParams = cc.CacheParams()


class RouteConfig(NamedTuple):
  """Static: the policy kind and the cache shapes."""

  kind: str = "echolm_threshold"
  cache: cc.CacheConfig = cc.CacheConfig()


class Stream(NamedTuple):
  """Requests in arrival order, leading axis N."""

  emb: np.ndarray  # [N, D] unit-norm embeddings
  prompt_len: np.ndarray  # [N] i32
  out_len: np.ndarray  # [N] i32
  arrival: np.ndarray  # [N] f64, before arrival_scale
  src: np.ndarray  # [N] i32 question id (ground truth for response-cache hits)
  difficulty: np.ndarray  # [N] f64 logit offset of the question (hidden from the routers)
  rl_score: np.ndarray  # [N] f64 RouteLLM score: predicted small-model success
  u_quality: np.ndarray  # [N] f64 uniforms for the Bernoulli quality draw
  u_replay: np.ndarray  # [N, n_replay] f64 uniforms for re-answers


class LinUCB(NamedTuple):
  a: jnp.ndarray  # [3, F, F] per-arm design matrices (identity at start)
  b: jnp.ndarray  # [3, F] per-arm reward-weighted features


class RouteState(NamedTuple):
  cache: cc.Cache
  backlog: jnp.ndarray  # [2] seconds of work queued at (large, small)
  t: jnp.ndarray  # time of the previous request
  lin: LinUCB


class RouteOut(NamedTuple):
  """Per request (leading axis N)."""

  arm: jnp.ndarray  # i32 LARGE, SMALL_EX, SMALL or HIT
  n_examples: jnp.ndarray  # i32 examples prepended
  ex_tokens: jnp.ndarray  # i32 tokens they add to the prompt
  sim_max: jnp.ndarray  # best cache similarity (0 when the cache is empty)
  q_pred: jnp.ndarray  # [3] predicted quality per arm
  p_good: jnp.ndarray  # true probability of a good answer
  good: jnp.ndarray  # bool, the Bernoulli draw
  backlog: jnp.ndarray  # [2] backlog (s) after this request's work and any replay
  latency_est: jnp.ndarray  # fluid latency estimate (s)
  replay_prompt: jnp.ndarray  # [n_replay] i32 prompt tokens of re-answers (0: none)
  replay_out: jnp.ndarray  # [n_replay] i32 output tokens of re-answers


def linucb_init(n_features: int = N_FEATURES) -> LinUCB:
  return LinUCB(jnp.tile(jnp.eye(n_features), (3, 1, 1)), jnp.zeros((3, n_features)))


def linucb_choose(lin: LinUCB, x, alpha):
  """Arm of the highest upper confidence bound theta_a . x + alpha sqrt(x A_a^-1 x)."""
  a_inv_x = jnp.linalg.solve(lin.a, jnp.broadcast_to(x, lin.b.shape)[..., None])[..., 0]
  theta_x = jnp.einsum("af,af->a", lin.b, a_inv_x)  # b^T A^-1 x = theta . x (A symmetric)
  width = jnp.sqrt(jnp.maximum(a_inv_x @ x, 0.0))
  return jnp.argmax(theta_x + alpha * width).astype(jnp.int32)


def linucb_update(lin: LinUCB, arm, x, reward) -> LinUCB:
  """A_arm += x x^T, b_arm += reward x (pure)."""
  return LinUCB(lin.a.at[arm].add(jnp.outer(x, x)), lin.b.at[arm].add(reward * x))


def features(sims, prompt_len, q_pred, backlog, latency_norm):
  """LinUCB context [N_FEATURES]: 1, max sim, mean top-k sim, log prompt / 8, predicted quality
  of small+examples and small, backlog of each tier / latency_norm."""
  ok = jnp.isfinite(sims)
  s = jnp.where(ok, sims, 0.0)
  mean = jnp.sum(s) / jnp.maximum(jnp.sum(ok), 1)
  return jnp.stack(
    [
      1.0,
      s[0],
      mean,
      jnp.log(prompt_len.astype(s.dtype)) / 8.0,
      q_pred[SMALL_EX],
      q_pred[SMALL],
      backlog[0] / latency_norm,
      backlog[1] / latency_norm,
    ]
  ).astype(s.dtype)


def _work(params, tier, prompt, out):
  return prompt * params.prefill_s[tier] + out * params.decode_s[tier]


def _step(config: RouteConfig, params: RouterParams, st: RouteState, req):
  kind, cp = config.kind, params.cache
  t = req["arrival"] / params.arrival_scale
  backlog = jnp.maximum(st.backlog - (t - st.t), 0.0)
  ids, sims = cc.retrieve(st.cache, cp, config.cache, req["emb"])
  sim_max = jnp.where(ids[0] >= 0, sims[0], 0.0)
  chosen, cu, n_ex, ex_tok = cc.select_examples(st.cache, cp, config.cache, ids, sims)
  qm = params.quality
  q_pred = jnp.stack(
    [qm.q_large * jnp.ones_like(sim_max), qm.small(n_ex, sim_max), qm.small(0, sim_max)]
  )
  prompt, out = req["prompt_len"], req["out_len"]
  work = jnp.stack(
    [
      _work(params, 0, prompt, out),
      _work(params, 1, prompt + ex_tok, out),
      _work(params, 1, prompt, out),
    ]
  )
  x = features(sims, prompt, q_pred, backlog, params.latency_norm)
  lin = st.lin
  exact = ids[0] >= 0
  if kind == "large_only":
    arm = jnp.int32(LARGE)
  elif kind == "small_only":
    arm = jnp.int32(SMALL)
  elif kind in ("exact_cache", "semantic_cache"):
    tau = 1.0 - 1e-6 if kind == "exact_cache" else params.tau
    arm = jnp.where(exact & (sims[0] >= tau), HIT, LARGE).astype(jnp.int32)
  elif kind == "routellm":
    arm = jnp.where(req["rl_score"] < params.strong_threshold, LARGE, SMALL).astype(jnp.int32)
  elif kind == "echolm_threshold":
    best_small = jnp.where(q_pred[SMALL_EX] >= q_pred[SMALL], SMALL_EX, SMALL)
    # a tier takes the request while its backlog, the request included, stays under the cap
    small_ok = backlog[1] + work[SMALL_EX] < params.queue_cap
    large_ok = backlog[0] + work[LARGE] < params.queue_cap
    arm = jnp.where(
      (q_pred[SMALL_EX] >= params.q_target) & small_ok,
      SMALL_EX,
      jnp.where(large_ok, LARGE, best_small),
    ).astype(jnp.int32)
  elif kind == "echolm_linucb":
    arm = linucb_choose(lin, x, params.alpha_ucb)
  else:
    raise ValueError(f"unknown routing kind {kind!r}; known: {KINDS}")
  tier = jnp.where(arm == LARGE, 0, 1)
  arm_c = jnp.minimum(arm, SMALL)
  own = work[arm_c]
  latency = jnp.where(arm == HIT, 0.0, backlog[tier] + own)
  # the true quality: the arm's model, shifted by the question's difficulty
  d = req["difficulty"]
  hit_row = jnp.maximum(ids[0], 0)
  same = st.cache.src[hit_row] == req["src"]
  p_hit = jnp.where(same, st.cache.quality[hit_row], params.hit_quality_other)
  p_large = jax.nn.sigmoid(_logit(qm.q_large) - params.large_difficulty * d)
  p_arm = jnp.stack(
    [
      p_large,
      jax.nn.sigmoid(_logit(q_pred[SMALL_EX]) - d),
      jax.nn.sigmoid(_logit(q_pred[SMALL]) - d),
      p_hit,
    ]
  )
  p_good = p_arm[arm]
  good = req["u_quality"] < p_good
  if kind == "echolm_linucb":
    reward = good.astype(x.dtype) - params.beta * latency / params.latency_norm
    lin = linucb_update(lin, arm, x, reward)
  backlog = backlog.at[tier].add(jnp.where(arm == HIT, 0.0, own))
  # cache bookkeeping: examples used, large responses inserted, replay when the large tier idles
  use = arm == SMALL_EX
  cache = cc.mark_used(st.cache, cp, jnp.where(use, chosen, -1), cu, t)
  n_ex = jnp.where(use, n_ex, 0)
  ex_tok = jnp.where(use, ex_tok, 0)
  quality = good.astype(cache.quality.dtype)
  creq = cc.Request(
    req["emb"], prompt, out, quality, t, req["src"], use, arm == LARGE, False, req["u_replay"]
  )
  cache, _, _ = cc.insert(cache, cp, creq)
  echo = kind.startswith("echolm")
  idle = (backlog[0] < params.idle_s) & (params.replay > 0) & echo
  before = cache
  cache, rows, _ = cc.replay(cache, cp, config.cache, idle, req["u_replay"])
  r = jnp.maximum(rows, 0)
  rp = jnp.where(rows >= 0, before.req_len[r], 0)
  ro = jnp.where(rows >= 0, before.resp_len[r], 0)
  backlog = backlog.at[0].add(jnp.sum(_work(params, 0, rp, ro)))
  out_row = RouteOut(arm, n_ex, ex_tok, sim_max, q_pred, p_good, good, backlog, latency, rp, ro)
  return RouteState(cache, backlog, t, lin), out_row


def _route(config, params, stream, cache0):
  st = RouteState(
    cache0,
    jnp.zeros(2, params.prefill_s.dtype),
    jnp.zeros((), jnp.asarray(stream.arrival).dtype),
    linucb_init(),
  )
  return jax.lax.scan(functools.partial(_step, config, params), st, stream._asdict())


def check(config: RouteConfig, stream: Stream) -> None:
  """Host-side input checks (ValueError): the kind, row counts, arrival order, lengths.

  Skipped for traced arrays (a caller's own jit): the checks need values."""
  if config.kind not in KINDS:
    raise ValueError(f"unknown routing kind {config.kind!r}; known: {KINDS}")
  if any(isinstance(x, jax.core.Tracer) for x in stream):
    return
  n = {len(np.asarray(x)) for x in stream}
  if len(n) != 1:
    raise ValueError(f"echolm: stream fields differ in length ({sorted(n)})")
  if np.any(np.diff(np.asarray(stream.arrival)) < 0):
    raise ValueError("echolm: stream.arrival must be in arrival order (non-decreasing)")
  if np.any(np.asarray(stream.prompt_len) < 1) or np.any(np.asarray(stream.out_len) < 0):
    raise ValueError("echolm: prompt_len must be >= 1 and out_len >= 0")


@functools.partial(jax.jit, static_argnums=0)
def _route_jit(config, params, stream, cache0):
  return _route(config, params, stream, cache0)


@functools.partial(jax.jit, static_argnums=0)
def _route_sweep_jit(config, params, stream, cache0):
  return jax.vmap(_route, in_axes=(None, 0, None, None))(config, params, stream, cache0)


def route(config: RouteConfig, params: RouterParams, stream: Stream, cache0: cc.Cache):
  """Routes a stream in arrival order (jitted, `config` static). Returns (final RouteState,
  RouteOut [N])."""
  check(config, stream)
  return _route_jit(config, params, stream, cache0)


def route_sweep(config: RouteConfig, params: RouterParams, stream: Stream, cache0: cc.Cache):
  """`route` vmapped over stacked params (leading axis K: thresholds, loads, ...)."""
  check(config, stream)
  return _route_sweep_jit(config, params, stream, cache0)


def calibrate_threshold(train_scores, strong_share):
  """RouteLLM calibration: the score below which `strong_share` of the training requests fall,
  so that about that share of calls goes to the strong model."""
  s = np.sort(np.asarray(train_scores, np.float64))
  if not 0.0 <= float(strong_share) <= 1.0:
    raise ValueError(f"strong_share must be in [0, 1], got {strong_share}")
  if strong_share <= 0.0:
    return float(s[0] - 1.0)
  if strong_share >= 1.0:
    return float(s[-1] + 1.0)
  return float(np.quantile(s, strong_share))


def routellm_fit(emb, small_good, l2: float = 1e-2) -> np.ndarray:
  """The RouteLLM-style scorer: logistic regression on [emb, 1] predicting the small model's
  success. Returns w [D + 1]; score = sigmoid([emb, 1] . w) (`routellm_score`)."""
  e = np.asarray(emb, np.float64)
  return fit_logistic(np.concatenate([e, np.ones((len(e), 1))], 1), small_good, l2)


def routellm_score(w, emb) -> np.ndarray:
  e = np.asarray(emb, np.float64)
  return 1.0 / (1.0 + np.exp(-(np.concatenate([e, np.ones((len(e), 1))], 1) @ np.asarray(w))))
