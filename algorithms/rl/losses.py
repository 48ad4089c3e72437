"""Token-level policy losses for GRPO/DAPO (spec rl_greso.md §1.2).

Objectives (maximised; the losses below are their negatives), with rho_it = pi_theta / pi_old of
token t of response o_i and A_i the group advantage of `advantages.py`:

  GRPO  J = E[ (1/G) sum_i (1/|o_i|) sum_t min(rho_it A_i, clip(rho_it, 1-eps, 1+eps) A_i)
               - beta D_KL(pi_theta || pi_ref) ]
  DAPO  J = E[ (1/sum_i |o_i|) sum_i sum_t min(rho_it A_i, clip(rho_it, 1-eps_lo, 1+eps_hi) A_i) ]
        subject to 0 < #correct < G (dynamic sampling), eps_lo = 0.2, eps_hi = 0.28.

GRPO's per-sequence mean is the "seq-mean-token-mean" aggregation, DAPO's global token mean is
"token-mean" (the default here, as in verl and GRESO).

  logp = token_logprobs(logits, tokens, temperature)                   # [B, T]
  loss, metrics = policy_loss(logp, old_logp, adv[:, None], mask)      # scalar, dict of scalars
  num, den = aggregate(per_token_loss, mask, "token-mean")             # value = num / den

Pieces:
  * `clipped_surrogate`: per-token L = max(-A rho, -A clip(rho, 1-eps_low, 1+eps_high)), then for
    A < 0 the dual clip min(L, -A c) (verl); log-ratio clamped to ±20 before exp.
  * `aggregate`: the four reduction modes of the spec table as (numerator, denominator) pairs, so
    accumulating micro-batches is exact: value = sum(num) / sum(den) [R]. Registered by name in
    `AGGREGATIONS`. `policy_loss(..., denominator=...)` takes a global denominator for the same
    purpose inside one jitted loss.
  * `kl_penalty`: k1, k2, k3 estimators of KL(pi_theta || pi_ref) per token (k3 = verl's
    "low_var_kl").
  * `entropy_from_logits`, `token_logprobs`: from [B, T, V] logits, in at least float32.
  * `overlong_penalty`: DAPO's soft length penalty on the reward (off by default in the recipes).
  * `policy_loss`: the sum of the above, registered in `jaxsys.lib.registry.LOSSES` as "clip".

Masks are 1 on response tokens and 0 on prompt and padding tokens; padding rows (all-zero mask)
count in neither numerator nor denominator of any mode. Padded positions are excluded with
`where`, so garbage there does not reach the loss value; it should still be finite for gradients.
Every function is pure and jittable; string arguments are static.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsys.lib.registry import LOSSES, Registry

__all__ = [
  "AGGREGATIONS",
  "KL_KINDS",
  "aggregate",
  "clipped_surrogate",
  "entropy_from_logits",
  "kl_penalty",
  "overlong_penalty",
  "policy_loss",
  "token_logprobs",
]

# Bound on |log pi_theta - log pi_old| (and on the reference log-ratio) before exp, as verl: keeps
# the ratio finite for tokens whose probability collapsed.
LOG_RATIO_BOUND = 20.0
# verl's clamp on the k3 estimate.
K3_BOUND = 10.0

KL_KINDS = ("k1", "k2", "k3")

AGGREGATIONS = Registry("aggregation")


# ------------------------------------------------------------------------------------------------
# Checks.


def _is_number(x) -> bool:
  return isinstance(x, int | float) and not isinstance(x, bool)


def _float(x) -> jax.Array:
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  return x


def _check_bt(x: jax.Array, name: str, shape: tuple[int, ...] | None = None) -> None:
  if x.ndim != 2:
    raise ValueError(f"{name} must be [B, T], got shape {tuple(x.shape)}")
  if shape is not None and x.shape != shape:
    raise ValueError(f"{name} must have shape {shape} (as logp), got {tuple(x.shape)}")


def _check_clip_params(eps_low, eps_high, dual_clip) -> None:
  if _is_number(eps_low) and not 0.0 <= eps_low < 1.0:
    raise ValueError(f"eps_low must be in [0, 1), got {eps_low!r}")
  if _is_number(eps_high) and not eps_high >= 0.0:
    raise ValueError(f"eps_high must be >= 0, got {eps_high!r}")
  if dual_clip is not None and _is_number(dual_clip) and not dual_clip > 1.0:
    # c <= 1 would cut below the clipped loss of a negative advantage itself (verl asserts c > 1).
    raise ValueError(f"dual_clip must be > 1 or None, got {dual_clip!r}")


def _broadcast_advantages(advantages, shape: tuple[int, int]) -> jax.Array:
  """[B], [B, 1] or [B, T] advantages -> broadcastable against [B, T]."""
  advantages = _float(advantages)
  if advantages.ndim == 1:
    advantages = advantages[:, None]
  if (
    advantages.ndim != 2
    or advantages.shape[0] != shape[0]
    or advantages.shape[1]
    not in (
      1,
      shape[1],
    )
  ):
    raise ValueError(
      f"advantages must be [B], [B, 1] or [B, T] with [B, T] = {list(shape)}, got shape "
      f"{tuple(advantages.shape)}"
    )
  return advantages


# ------------------------------------------------------------------------------------------------
# Per-token terms.


def clipped_surrogate(
  logp, old_logp, advantages, *, eps_low=0.2, eps_high=0.28, dual_clip=3.0
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Per-token clipped surrogate loss with decoupled clip bounds and dual clip.

  l = clip(logp - old_logp, -20, 20), rho = exp(l);
  L1 = -A rho, L2 = -A clip(rho, 1 - eps_low, 1 + eps_high), L = max(L1, L2);
  for A < 0 and c = dual_clip: L = min(L, -A c) (bounds the loss of a very large ratio).

  Where L2 > L1 the clipped branch is taken and the token's gradient wrt logp is zero; at ties
  the unclipped branch is taken, so gradients inside the trust region are exact.
  Examples (eps 0.2): A = +1, rho = 5 -> -1.2 (no gradient); A = +1, rho = 0.5 -> -0.5
  (gradient flows); A = -1, rho = 5 -> 5 without dual clip, 3 with c = 3.

  Args:
    logp: [B, T] log pi_theta of the sampled tokens.
    old_logp: [B, T] log pi_old (rollout policy), treated as a constant by the caller.
    advantages: [B], [B, 1] or [B, T] advantages.
    eps_low, eps_high: lower and upper clip widths (DAPO clip-higher: 0.2, 0.28).
    dual_clip: c > 1, or None to disable the dual clip.

  Returns:
    loss: [B, T] per-token loss (unmasked).
    info: dict of [B, T] arrays: 'clipped' bool (L2 > L1), 'dual_clipped' bool (the dual clip is
      active: A < 0 and -A c < max(L1, L2)), 'ratio' float (rho), 'log_ratio' float (the
      clamped l).
  """
  _check_clip_params(eps_low, eps_high, dual_clip)
  logp = _float(logp)
  _check_bt(logp, "logp")
  old_logp = _float(old_logp)
  _check_bt(old_logp, "old_logp", logp.shape)
  adv = _broadcast_advantages(advantages, logp.shape)

  log_ratio = jnp.clip(logp - old_logp, -LOG_RATIO_BOUND, LOG_RATIO_BOUND)
  ratio = jnp.exp(log_ratio)
  loss_unclipped = -adv * ratio
  loss_clipped = -adv * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  clipped = loss_clipped > loss_unclipped
  loss = jnp.where(clipped, loss_clipped, loss_unclipped)
  if dual_clip is None:
    dual_clipped = jnp.zeros(loss.shape, bool)
  else:
    loss_dual = -adv * dual_clip
    dual_clipped = jnp.broadcast_to((adv < 0) & (loss_dual < loss), loss.shape)
    loss = jnp.where(dual_clipped, loss_dual, loss)
  info = {"clipped": clipped, "dual_clipped": dual_clipped, "ratio": ratio, "log_ratio": log_ratio}
  return loss, info


def kl_penalty(logp, ref_logp, kind: str = "k3") -> jax.Array:
  """Per-token estimate of KL(pi_theta || pi_ref) from sampled-token log-probs (Schulman's k's).

  With delta = clip(logp - ref_logp, -20, 20):
    k1 = delta, k2 = delta^2 / 2, k3 = exp(-delta) - 1 + delta, clamped to [-10, 10].
  k3 is unbiased and non-negative (DeepSeekMath's GRPO KL, beta = 0.04). At delta = ln 2:
  k1 0.693147, k2 0.240227, k3 0.193147.

  Args:
    logp: [B, T] log pi_theta.
    ref_logp: [B, T] log pi_ref, same shape.
    kind: static, one of "k1", "k2", "k3".

  Returns:
    [B, T] per-token estimates (unmasked).
  """
  if kind not in KL_KINDS:
    raise ValueError(f"kind must be one of {KL_KINDS}, got {kind!r}")
  logp, ref_logp = _float(logp), _float(ref_logp)
  if logp.shape != ref_logp.shape:
    raise ValueError(
      f"logp and ref_logp must have the same shape, got {logp.shape} and {ref_logp.shape}"
    )
  delta = jnp.clip(logp - ref_logp, -LOG_RATIO_BOUND, LOG_RATIO_BOUND)
  if kind == "k1":
    return delta
  if kind == "k2":
    return 0.5 * delta * delta
  return jnp.clip(jnp.expm1(-delta) + delta, -K3_BOUND, K3_BOUND)


def _upcast(logits: jax.Array) -> jax.Array:
  # bf16 logits lose the small differences log-probs are made of: work in >= float32.
  return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


def _check_temperature(temperature) -> None:
  if _is_number(temperature) and not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature!r}")


def entropy_from_logits(logits, *, temperature=1.0) -> jax.Array:
  """Entropy of softmax(logits / temperature) over the last axis.

  H = -sum_v p_v log p_v, computed from log_softmax; vocabulary entries with logit -inf
  (masked tokens) contribute 0 and keep gradients finite.

  Args:
    logits: [B, T, V] (any leading shape) logits; bf16 is upcast to float32.
    temperature: the rollout temperature (spec: log-probs from logits / temperature).

  Returns:
    [B, T] entropies in nats (float32 or wider).
  """
  _check_temperature(temperature)
  logits = _upcast(jnp.asarray(logits))
  if logits.ndim < 1:
    raise ValueError(f"logits must be [..., V], got shape {tuple(logits.shape)}")
  logq = jax.nn.log_softmax(logits / temperature, axis=-1)
  q = jnp.exp(logq)
  # Double where: q log q -> 0 as q -> 0, and 0 * -inf must not reach the value or the gradient.
  safe_logq = jnp.where(q > 0, logq, 0.0)
  return -jnp.sum(q * safe_logq, axis=-1)


def token_logprobs(logits, tokens, temperature=1.0) -> jax.Array:
  """Log-probabilities of the sampled tokens under softmax(logits / temperature).

  Computed as z[token] - logsumexp(z), z = logits / temperature, which never materialises the
  [B, T, V] log-softmax.

  Args:
    logits: [B, T, V] logits (position t predicts tokens[:, t]); bf16 is upcast to float32.
    tokens: [B, T] int token ids.
    temperature: the rollout temperature, > 0.

  Returns:
    [B, T] log-probs (float32 or wider).
  """
  _check_temperature(temperature)
  logits, tokens = _upcast(jnp.asarray(logits)), jnp.asarray(tokens)
  if logits.ndim != 3 or tokens.shape != logits.shape[:2]:
    raise ValueError(
      f"logits must be [B, T, V] and tokens [B, T], got shapes {tuple(logits.shape)} and "
      f"{tuple(tokens.shape)}"
    )
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}")
  z = logits / temperature
  picked = jnp.take_along_axis(z, tokens[..., None], axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(z, axis=-1)


# ------------------------------------------------------------------------------------------------
# Aggregation: (numerator, denominator) pairs.


def _masked(loss: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.where(mask, loss, jnp.zeros((), loss.dtype))


def _num_seqs(mask: jax.Array, dtype) -> jax.Array:
  return jnp.sum(jnp.any(mask, axis=1)).astype(dtype)


@AGGREGATIONS.register("token-mean")
def _token_mean(loss, mask, max_len):
  """sum_{i,t} L m / sum_{i,t} m (DAPO, verl default, GRESO)."""
  del max_len
  return jnp.sum(_masked(loss, mask)), jnp.sum(mask).astype(loss.dtype)


@AGGREGATIONS.register("seq-mean-token-mean")
def _seq_mean_token_mean(loss, mask, max_len):
  """mean_i (sum_t L m / sum_t m) over rows with any mask (original GRPO)."""
  del max_len
  lengths = jnp.sum(mask, axis=1).astype(loss.dtype)
  per_seq = jnp.sum(_masked(loss, mask), axis=1) / jnp.maximum(lengths, 1)
  return jnp.sum(per_seq), _num_seqs(mask, loss.dtype)


@AGGREGATIONS.register("seq-mean-token-sum")
def _seq_mean_token_sum(loss, mask, max_len):
  """mean_i sum_t L m over rows with any mask."""
  del max_len
  return jnp.sum(_masked(loss, mask)), _num_seqs(mask, loss.dtype)


@AGGREGATIONS.register("seq-mean-token-sum-norm")
def _seq_mean_token_sum_norm(loss, mask, max_len):
  """sum_{i,t} L m / (N_seq T_max) (Dr.GRPO; verl divides by T_max only, a constant factor)."""
  return jnp.sum(_masked(loss, mask)), _num_seqs(mask, loss.dtype) * max_len


def aggregate(loss, mask, mode: str = "token-mean", *, max_len=None):
  """Reduces a per-token loss to a (numerator, denominator) pair; the value is num / den.

  | mode                      | value                                    |
  | token-mean (default)      | sum_{i,t} L m / sum_{i,t} m              |
  | seq-mean-token-mean       | mean_i (sum_t L m / sum_t m)             |
  | seq-mean-token-sum        | mean_i sum_t L m                         |
  | seq-mean-token-sum-norm   | sum_{i,t} L m / (N_seq T_max)            |

  Means over i run over rows with at least one mask entry (N_seq of them); padding rows enter
  neither part. Summing the pairs of micro-batches gives exactly the value of the whole batch
  [R]; for "seq-mean-token-sum-norm" pass the same `max_len` to every micro-batch.
  Example: per-token losses [2] and [1, 1, 1] give 1.25, 1.5, 2.5 and, with T_max = 4, 0.625.

  Args:
    loss: [B, T] per-token loss.
    mask: [B, T] bool or 0/1; True on tokens that count.
    mode: static, a name in `AGGREGATIONS`.
    max_len: T_max of "seq-mean-token-sum-norm" (the maximum response length); default T.

  Returns:
    (numerator, denominator), float scalars in the loss dtype. An empty batch gives den = 0.
  """
  loss = _float(loss)
  _check_bt(loss, "loss")
  mask = jnp.asarray(mask)
  _check_bt(mask, "mask", loss.shape)
  mask = mask.astype(bool)
  if mode not in AGGREGATIONS:
    raise ValueError(f"mode must be one of {AGGREGATIONS.names()}, got {mode!r}")
  if max_len is None:
    max_len = loss.shape[1]
  elif _is_number(max_len) and not max_len > 0:
    raise ValueError(f"max_len must be > 0, got {max_len!r}")
  return AGGREGATIONS.get(mode)(loss, mask, max_len)


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
  """num / den, and 0 for an empty batch (den = 0) instead of NaN."""
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), jnp.zeros((), num.dtype))


def _token_mean_value(x: jax.Array, mask: jax.Array) -> jax.Array:
  return _safe_div(*_token_mean(_float(x), mask, None))


# ------------------------------------------------------------------------------------------------
# The combined loss.


def policy_loss(
  logp,
  old_logp,
  advantages,
  mask,
  *,
  eps_low=0.2,
  eps_high=0.28,
  dual_clip=3.0,
  agg: str = "token-mean",
  max_len=None,
  ref_logp=None,
  kl_coef=0.0,
  kl_kind: str = "k3",
  entropy=None,
  entropy_coef=0.0,
  denominator=None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Clipped policy-gradient loss with optional KL penalty and entropy bonus.

  loss = agg(L_clip) + kl_coef agg(k) - entropy_coef agg(H), every term with the same
  aggregation and hence the same denominator (see `clipped_surrogate`, `kl_penalty`,
  `aggregate`). With `denominator` given (e.g. the token count of the whole mini-batch, known
  before it is split), each term is num / denominator, so losses and gradients of micro-batches
  add up exactly to those of the mini-batch [R]. An empty batch gives loss 0, not NaN.

  Args:
    logp: [B, T] log pi_theta of the sampled tokens (differentiated).
    old_logp: [B, T] log pi_old from the rollout policy.
    advantages: [B], [B, 1] or [B, T].
    mask: [B, T] bool or 0/1, True on response tokens.
    eps_low, eps_high, dual_clip: see `clipped_surrogate`.
    agg: static aggregation mode (`AGGREGATIONS`); max_len its T_max.
    ref_logp: [B, T] log pi_ref, or None (no KL term).
    kl_coef: KL weight (beta); > 0 needs ref_logp.
    kl_kind: static "k1", "k2" or "k3".
    entropy: [B, T] per-token entropies (e.g. `entropy_from_logits`), or None.
    entropy_coef: entropy-bonus weight; > 0 needs entropy.
    denominator: optional scalar replacing this batch's own denominator.

  Returns:
    loss: scalar.
    metrics: dict of scalars: 'loss/pg' (aggregated surrogate), 'loss/kl' (aggregated k, with
      ref_logp), 'loss/entropy' (aggregated H, with entropy), and token means over the mask of
      'loss/clipfrac' (L2 > L1), 'loss/clipfrac_lower' (dual clip active), 'loss/approx_kl'
      (-l with the clamped log-ratio l), 'loss/ratio_mean'; 'loss/ratio_max' is the max over
      masked tokens (0 if none).
  """
  if kl_kind not in KL_KINDS:
    raise ValueError(f"kl_kind must be one of {KL_KINDS}, got {kl_kind!r}")
  if _is_number(kl_coef) and kl_coef != 0 and ref_logp is None:
    raise ValueError(f"kl_coef = {kl_coef} needs ref_logp")
  if _is_number(entropy_coef) and entropy_coef != 0 and entropy is None:
    raise ValueError(f"entropy_coef = {entropy_coef} needs entropy")
  per_token, info = clipped_surrogate(
    logp, old_logp, advantages, eps_low=eps_low, eps_high=eps_high, dual_clip=dual_clip
  )
  mask = jnp.asarray(mask)
  _check_bt(mask, "mask", per_token.shape)
  mask = mask.astype(bool)

  def value(x):
    num, den = aggregate(x, mask, agg, max_len=max_len)
    if denominator is not None:
      den = jnp.asarray(denominator, num.dtype)
    return _safe_div(num, den)

  pg = value(per_token)
  loss = pg
  metrics = {"loss/pg": pg}
  if ref_logp is not None:
    _check_bt(jnp.asarray(ref_logp), "ref_logp", per_token.shape)
    kl = value(kl_penalty(logp, ref_logp, kl_kind))
    loss = loss + kl_coef * kl
    metrics["loss/kl"] = kl
  if entropy is not None:
    _check_bt(jnp.asarray(entropy), "entropy", per_token.shape)
    ent = value(_float(entropy))
    loss = loss - entropy_coef * ent
    metrics["loss/entropy"] = ent

  ratio_masked = jnp.where(mask, info["ratio"], -jnp.inf)
  metrics.update(
    {
      "loss/clipfrac": _token_mean_value(info["clipped"], mask),
      "loss/clipfrac_lower": _token_mean_value(info["dual_clipped"], mask),
      "loss/approx_kl": _token_mean_value(-info["log_ratio"], mask),
      "loss/ratio_mean": _token_mean_value(info["ratio"], mask),
      "loss/ratio_max": jnp.where(jnp.any(mask), jnp.max(ratio_masked), 0.0),
    }
  )
  return loss, metrics


LOSSES.register("clip", policy_loss)


# ------------------------------------------------------------------------------------------------
# Reward shaping.


def overlong_penalty(lengths, max_len, cache_len) -> jax.Array:
  """DAPO's soft overlong penalty, added to the reward of each response.

  R(|y|) = 0                                  if |y| <= L_max - L_cache
         = ((L_max - L_cache) - |y|) / L_cache if L_max - L_cache < |y| <= L_max
         = -1                                 if |y| > L_max

  Args:
    lengths: [B] response lengths |y| (int or float).
    max_len: L_max, the maximum response length.
    cache_len: L_cache in (0, L_max], the width of the linear ramp.

  Returns:
    [B] penalties in [-1, 0] (float32 or the lengths' float dtype).
  """
  if _is_number(max_len) and _is_number(cache_len) and not 0 < cache_len <= max_len:
    raise ValueError(f"need 0 < cache_len <= max_len, got cache_len {cache_len}, max_len {max_len}")
  lengths = _float(lengths)
  if lengths.ndim != 1:
    raise ValueError(f"lengths must be [B], got shape {tuple(lengths.shape)}")
  start = max_len - cache_len
  ramp = (start - lengths) / cache_len
  return jnp.where(lengths <= start, 0.0, jnp.where(lengths <= max_len, ramp, -1.0)).astype(
    lengths.dtype
  )
