"""Batch execution-time models of one engine iteration (jittable, vmappable over coefficients).

Formulas: docs/llm_serving_semantics.md ("Batch features and time models") and
../shared/papers/serving.md section 1.5. Two models read the same `TimeCoef`:

- "linear": DistServe/HyGen linear/quadratic form in milliseconds, with a second decode row for
  large decode batches (DistServe fits its decode rows piecewise at batch size 95);
- "roofline": max(compute, memory) of a dense fp16 decoder plus fixed overheads (BLIS defaults).

`batch_time` is pure jnp and elementwise in the `Features` fields, so it also takes arrays of
features (one batch per element) and runs under `jax.vmap` over a stacked `TimeCoef`.
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp


class Features(NamedTuple):
  """Batch features of one iteration (scalars; float64 inside jit)."""

  n_p: jnp.ndarray  # prefill chunks in the batch
  n_d: jnp.ndarray  # decode requests in the batch
  s_p: jnp.ndarray  # sum of prefill chunk lengths c_i
  q: jnp.ndarray  # sum of c_i^2
  a: jnp.ndarray  # sum of c_i * (k_i + c_i), k_i = context before the chunk
  k: jnp.ndarray  # sum of (k_i + c_i): KV tokens the prefills read and write
  s_d: jnp.ndarray  # sum of decode contexts d_j


@flax.struct.dataclass
class TimeCoef:
  """Coefficients of both models; the static `time_model` name picks which are read."""

  # linear/quadratic model, milliseconds (DistServe/HyGen form)
  a_p: float = 0.0  # prefill intercept
  b_p: float = 0.0  # per prefill token
  c_q: float = 0.0  # per sum of squared chunk lengths
  c_s: float = 0.0  # per (sum of chunk lengths)^2
  c_a: float = 0.0  # per attention term A
  e_p: float = 0.0  # per prefill chunk
  a_d: float = 0.0  # decode-only intercept, small batches
  b_d: float = 0.0  # per decode context token, small batches
  c_d: float = 0.0  # per decode request, small batches
  a_d2: float = 0.0  # decode-only intercept, batches of >= bs_threshold decodes
  b_d2: float = 0.0  # per decode context token, large batches
  c_d2: float = 0.0  # per decode request, large batches
  bs_threshold: float = 1e9  # decode batch size where the second decode row starts
  # roofline model, SI units
  n_params: float = 0.0  # P, parameters
  n_layers: float = 0.0  # L
  d_model: float = 0.0  # d, hidden width
  d_kv: float = 0.0  # KV width per layer (heads_kv * head_dim)
  flops: float = 0.0  # F, peak dense fp16/bf16 FLOP/s
  bandwidth: float = 0.0  # BW, bytes/s
  mfu_p: float = 0.65  # model FLOP utilisation of prefill
  mfu_d: float = 0.12  # model FLOP utilisation of decode
  eta: float = 0.72  # achieved fraction of bandwidth
  o_layer: float = 20e-6  # per-layer overhead (s)
  o_iter: float = 0.5e-3  # per-iteration overhead (s)


TIME_MODELS = ("linear", "roofline")


def _linear_ms(coef: TimeCoef, f: Features):
  """Linear/quadratic model in milliseconds (same shape as the feature fields)."""
  has_p = f.n_p > 0
  has_d = f.n_d > 0
  big = f.n_d >= coef.bs_threshold
  a_d = jnp.where(big, coef.a_d2, coef.a_d)
  b_d = jnp.where(big, coef.b_d2, coef.b_d)
  c_d = jnp.where(big, coef.c_d2, coef.c_d)
  # DistServe fits prefill-only and decode-only batches; a mixed batch keeps the prefill
  # intercept and adds the decode variable terms [R, serving.md 1.5].
  intercept = jnp.where(has_p, coef.a_p, jnp.where(has_d, a_d, 0.0))
  prefill = coef.b_p * f.s_p + coef.c_q * f.q + coef.c_s * f.s_p**2 + coef.c_a * f.a
  prefill = prefill + coef.e_p * f.n_p
  decode = b_d * f.s_d + c_d * f.n_d
  return intercept + prefill + decode


def _roofline_s(coef: TimeCoef, f: Features):
  """Roofline model in seconds (same shape as the feature fields)."""
  p, n_layers, d = coef.n_params, coef.n_layers, coef.d_model
  flops_p = 2.0 * p * f.s_p + 4.0 * n_layers * d * f.a
  flops_d = 2.0 * p * f.n_d + 4.0 * n_layers * d * f.s_d
  bytes_ = 2.0 * p + 4.0 * n_layers * coef.d_kv * (f.k + f.s_d)
  compute = flops_p / (coef.flops * coef.mfu_p) + flops_d / (coef.flops * coef.mfu_d)
  memory = bytes_ / (coef.bandwidth * coef.eta)
  return jnp.maximum(compute, memory) + n_layers * coef.o_layer + coef.o_iter


def batch_time(time_model: str, coef: TimeCoef, f: Features) -> jnp.ndarray:
  """Duration of one iteration in seconds.

  Args:
    time_model: "linear" (coefficients in ms) or "roofline" (SI units); static under jit.
    coef: the coefficients (a pytree; vmap over a stacked TimeCoef gives one time per set).
    f: batch features; scalars, or arrays of equal shape for many batches at once.

  Returns:
    Seconds, float64 under x64, shaped like the feature fields; exactly 0 for an empty batch
    (n_p == 0 and n_d == 0).
  """
  if time_model == "linear":
    t = _linear_ms(coef, f) * 1e-3
  elif time_model == "roofline":
    t = _roofline_s(coef, f)
  else:
    raise ValueError(f"unknown time_model {time_model!r}: use one of {TIME_MODELS}")
  empty = (f.n_p <= 0) & (f.n_d <= 0)
  return jnp.where(empty, jnp.zeros_like(t), t)


# Spec sheets (dense bf16 FLOP/s, bytes/s) and model shapes (P, L, d, d_kv): serving.md 1.5.
A100_80G = dict(flops=312e12, bandwidth=2.039e12)
H100_SXM = dict(flops=989e12, bandwidth=3.35e12)
SHAPES = {
  "llama31_8b": dict(n_params=8.03e9, n_layers=32, d_model=4096, d_kv=1024),
  "llama2_7b": dict(n_params=6.74e9, n_layers=32, d_model=4096, d_kv=4096),
  "llama31_70b": dict(n_params=70.6e9, n_layers=80, d_model=8192, d_kv=1024),
  "opt13b": dict(n_params=12.9e9, n_layers=40, d_model=5120, d_kv=5120),
  # [R] OPT-66B (Zhang et al. 2022, table 1): 64 layers, width 9216, full multi-head KV.
  "opt66b": dict(n_params=65.7e9, n_layers=64, d_model=9216, d_kv=9216),
}

# DistServe's measured rows (LLMServe/DistServe profiler-a100-80g.distserve.json), ms.
_OPT13B_LINEAR = dict(
  a_p=16.457,
  b_p=0.09265,
  c_q=6.475e-6,
  a_d=19.935,
  b_d=6.269e-4,
  c_d=0.03851,
  a_d2=7.166,
  b_d2=5.798e-4,
  c_d2=0.1583,
  bs_threshold=95.0,
)
_OPT66B_LINEAR = dict(
  a_p=39.144,
  b_p=0.24930,
  c_q=2.043e-5,
  a_d=48.288,
  b_d=9.424e-4,
  c_d=0.12755,
  a_d2=28.728,
  b_d2=4.745e-4,
  c_d2=0.29618,
  bs_threshold=95.0,
)

# Linear presets also carry the model shape (and the GPU's spec sheet), so that
# `kv_blocks_capacity` works on them; the linear model never reads those fields. OPT-66B runs
# with tensor parallelism 2: its roofline fields describe one GPU and are not a TP2 model.
PRESETS: dict[str, TimeCoef] = {
  "opt13b_a100_tp1": TimeCoef(**_OPT13B_LINEAR, **SHAPES["opt13b"], **A100_80G),
  "opt66b_a100_tp2": TimeCoef(**_OPT66B_LINEAR, **SHAPES["opt66b"], **A100_80G),
  "llama31_8b_a100": TimeCoef(**SHAPES["llama31_8b"], **A100_80G),
  "llama31_8b_h100": TimeCoef(**SHAPES["llama31_8b"], **H100_SXM),
  "llama2_7b_a100": TimeCoef(**SHAPES["llama2_7b"], **A100_80G),
  # One H100's spec sheet: 141 GB of weights need TP >= 2 in practice; scale flops and
  # bandwidth by the TP degree (and pass the group's memory to kv_blocks_capacity) for that.
  "llama31_70b_h100": TimeCoef(**SHAPES["llama31_70b"], **H100_SXM),
  "opt13b_a100_roofline": TimeCoef(**SHAPES["opt13b"], **A100_80G),
}

# Which model each preset is meant for (a linear preset's roofline fields are shape only).
PRESET_MODEL = {
  name: ("linear" if name in ("opt13b_a100_tp1", "opt66b_a100_tp2") else "roofline")
  for name in PRESETS
}


def get_preset(name: str) -> TimeCoef:
  """The preset `TimeCoef` called `name`; KeyError listing the known names otherwise."""
  try:
    return PRESETS[name]
  except KeyError:
    raise KeyError(f"unknown time preset {name!r}; known: {sorted(PRESETS)}") from None


@functools.partial(
  jax.jit,
  static_argnames=("n", "max_seqs", "token_budget", "max_ctx", "max_prefills", "p_decode_only"),
)
def random_features(
  key: jax.Array,
  n: int,
  max_seqs: int = 128,
  token_budget: int = 512,
  max_ctx: int = 4096,
  max_prefills: int = 4,
  p_decode_only: float = 0.4,
) -> Features:
  """`n` random non-empty batches of a chunked-prefill engine, as arrays of shape [n].

  [R] Distribution used to fit and check the linear model: with probability `p_decode_only`
  a decode-only batch, else 1..max_prefills prefill chunks sharing a uniform fraction of what
  the decodes leave of the token budget; decode counts uniform in [0, max_seqs - n_p] (>= 1
  when decode only); contexts uniform in [1, max_ctx]; half of the chunks start a prompt
  (k = 0), the others continue one (k uniform in [0, max_ctx - c]).
  """
  # one uniform draw split into columns: every extra RNG call costs compile time on CPU
  sizes = (1, 1, 1, max_seqs, max_prefills, 1, max_prefills, max_prefills)
  u = jax.random.uniform(key, (n, sum(sizes)), jnp.float64)
  u_kind, u_np, u_nd, u_ctx, u_share, u_fill, u_cont, u_k = jnp.split(
    u, list(itertools.accumulate(sizes[:-1])), axis=1
  )
  decode_only = u_kind[:, 0] < p_decode_only
  n_p = jnp.where(decode_only, 0.0, 1.0 + jnp.floor(u_np[:, 0] * max_prefills))
  n_d = jnp.floor(u_nd[:, 0] * (max_seqs + 1))
  n_d = jnp.clip(n_d, jnp.where(decode_only, 1.0, 0.0), max_seqs - n_p)
  ctx = 1.0 + jnp.floor(u_ctx * max_ctx)
  s_d = jnp.sum(jnp.where(jnp.arange(max_seqs)[None, :] < n_d[:, None], ctx, 0.0), axis=1)
  # prefill chunks share a uniform fraction of the budget the decodes leave (each chunk >= 1),
  # so that S_p spans the whole range: a fit on always-full batches extrapolates badly to the
  # last, short chunk of a prompt
  left = jnp.maximum(token_budget - n_d, n_p)
  live = jnp.arange(max_prefills)[None, :] < n_p[:, None]
  share = jnp.where(live, 0.05 + u_share, 0.0)
  share = share / jnp.maximum(jnp.sum(share, axis=1, keepdims=True), 1e-12)
  c = jnp.where(live, jnp.maximum(jnp.floor(share * (u_fill * left[:, None])), 1.0), 0.0)
  k_room = jnp.maximum(max_ctx - c, 0.0)
  k = jnp.where(live & (u_cont < 0.5), jnp.floor(u_k * k_room), 0.0)
  return Features(
    n_p=n_p,
    n_d=n_d,
    s_p=jnp.sum(c, axis=1),
    q=jnp.sum(c * c, axis=1),
    a=jnp.sum(c * (k + c), axis=1),
    k=jnp.sum(k + c, axis=1),
    s_d=s_d,
  )


def _linear_columns(f: Features, threshold):
  """Design matrix [n, 12] of the linear form; columns in `_LINEAR_FIELDS` order (ms units)."""
  has_p = (f.n_p > 0).astype(jnp.float64)
  has_d = ((f.n_p <= 0) & (f.n_d > 0)).astype(jnp.float64)
  big = (f.n_d >= threshold).astype(jnp.float64)
  cols = [
    has_p,
    has_d * (1 - big),
    has_d * big,
    f.s_p,
    f.q,
    f.s_p**2,
    f.a,
    f.n_p,
    f.s_d * (1 - big),
    f.n_d * (1 - big),
    f.s_d * big,
    f.n_d * big,
  ]
  return jnp.stack([jnp.asarray(x, jnp.float64) for x in cols], axis=1)


_LINEAR_FIELDS = (
  "a_p",
  "a_d",
  "a_d2",
  "b_p",
  "c_q",
  "c_s",
  "c_a",
  "e_p",
  "b_d",
  "c_d",
  "b_d2",
  "c_d2",
)


def fit_linear(coef: TimeCoef, key: jax.Array, n: int = 4096, **batch_kw) -> TimeCoef:
  """Least-squares fit of the linear model to the roofline model `coef` [R, serving.md 1.5].

  Fits on `n` batches from `random_features(key, n, **batch_kw)`, minimising the squared
  relative error (rows weighted by 1 / roofline time, so short decode steps count as much as
  long prefills). The decode rows split at the weight-read/compute crossover of a decode-only
  batch, `bs_threshold = round(F mfu_d / (BW eta))` decodes (26 for Llama-3.1-8B on an A100).

  Returns:
    `coef` with its linear fields (ms) replaced by the fit; the roofline fields are kept, so
    `kv_blocks_capacity` still works on the result.
  """
  return _fit_linear(coef, random_features(key, n, **batch_kw))


@jax.jit
def _fit_linear(coef: TimeCoef, f: Features) -> TimeCoef:
  target_ms = batch_time("roofline", coef, f) * 1e3
  threshold = jnp.round(coef.flops * coef.mfu_d / (coef.bandwidth * coef.eta))
  x = _linear_columns(f, threshold) / target_ms[:, None]
  scale = jnp.maximum(jnp.linalg.norm(x, axis=0), 1e-30)  # column scaling for conditioning
  sol, *_ = jnp.linalg.lstsq(x / scale, jnp.ones_like(target_ms))
  sol = sol / scale
  fitted = {name: sol[i] for i, name in enumerate(_LINEAR_FIELDS)}
  return coef.replace(bs_threshold=threshold, **fitted)


def kv_blocks_capacity(coef: TimeCoef, mem_bytes: float, block_size: int = 16) -> int:
  """KV-cache blocks that fit next to the fp16 weights: our block form of vidur's planner.

  `floor((0.9 mem - 2P) / (block_size * 4 L d_kv))` (10% margin, K and V in fp16). Llama-3.1-8B
  on an A100-80G (mem 80e9): about 26,700 blocks; Llama-2-7B: about 7,000.

  Returns:
    A Python int >= 1; ValueError when the weights leave no room.
  """
  per_block = block_size * 4.0 * float(coef.n_layers) * float(coef.d_kv)
  if per_block <= 0:
    raise ValueError(f"kv_blocks_capacity needs n_layers and d_kv > 0, got {coef}")
  free = 0.9 * float(mem_bytes) - 2.0 * float(coef.n_params)
  blocks = int(free // per_block)
  if blocks < 1:
    raise ValueError(
      f"no KV room: 0.9 * {mem_bytes:.3g} B of memory minus {2 * float(coef.n_params):.3g} B of "
      f"weights leaves {free:.3g} B, less than one block of {per_block:.3g} B"
    )
  return blocks
