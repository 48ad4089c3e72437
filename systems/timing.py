"""Batch execution-time models of one engine iteration (jittable, vmappable over coefficients).

Formulas: docs/llm_serving_semantics.md ("Batch features and time models") and
../shared/papers/serving.md section 1.5.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.struct
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
