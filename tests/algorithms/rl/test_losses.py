"""algorithms/rl/losses.py: spec §1.2 numbers, loop-based numpy references, micro-batches."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.algorithms.rl import losses
from jaxsys.lib.registry import LOSSES

ATOL, RTOL = 1e-5, 1e-5
MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
B, T, V = 6, 7, 11


# ------------------------------------------------------------------------------------------------
# Plain-numpy versions of the spec's formulas, token by token.


def np_surrogate(logp, old_logp, adv, eps_low, eps_high, dual_clip):
  """adv is [B, T]. Returns (loss, clipped, dual_clipped, ratio)."""
  shape = logp.shape
  loss, ratio = np.zeros(shape), np.zeros(shape)
  clipped, dual = np.zeros(shape, bool), np.zeros(shape, bool)
  for i in range(shape[0]):
    for t in range(shape[1]):
      a = adv[i, t]
      rho = math.exp(min(max(logp[i, t] - old_logp[i, t], -20.0), 20.0))
      l1 = -a * rho
      l2 = -a * min(max(rho, 1 - eps_low), 1 + eps_high)
      value = max(l1, l2)
      clipped[i, t] = l2 > l1
      if dual_clip is not None and a < 0 and -a * dual_clip < value:
        value = -a * dual_clip
        dual[i, t] = True
      loss[i, t], ratio[i, t] = value, rho
  return loss, clipped, dual, ratio


def np_aggregate(loss, mask, mode, max_len=None):
  """Returns the value (not the pair), from its definition in the spec table."""
  rows = [i for i in range(loss.shape[0]) if mask[i].any()]
  if mode == "token-mean":
    num = sum(loss[i, t] for i in rows for t in range(loss.shape[1]) if mask[i, t])
    return num / sum(int(mask[i, t]) for i in rows for t in range(loss.shape[1]))
  per_seq = []
  for i in rows:
    toks = [loss[i, t] for t in range(loss.shape[1]) if mask[i, t]]
    per_seq.append(sum(toks) / len(toks) if mode == "seq-mean-token-mean" else sum(toks))
  if mode == "seq-mean-token-sum-norm":
    return sum(per_seq) / (len(rows) * (max_len or loss.shape[1]))
  return sum(per_seq) / len(rows)


def np_kl(logp, ref_logp, kind):
  out = np.zeros(logp.shape)
  for idx in np.ndindex(logp.shape):
    d = min(max(logp[idx] - ref_logp[idx], -20.0), 20.0)
    if kind == "k1":
      out[idx] = d
    elif kind == "k2":
      out[idx] = d * d / 2
    else:
      out[idx] = min(max(math.exp(-d) - 1 + d, -10.0), 10.0)
  return out


def np_log_softmax(z):
  m = max(z)
  lse = m + math.log(sum(math.exp(v - m) for v in z))
  return [v - lse for v in z]


def np_entropy(logits, temperature=1.0):
  out = np.zeros(logits.shape[:-1])
  for idx in np.ndindex(out.shape):
    logq = np_log_softmax(logits[idx] / temperature)
    out[idx] = -sum(math.exp(v) * v for v in logq)
  return out


def np_token_logprobs(logits, tokens, temperature=1.0):
  out = np.zeros(tokens.shape)
  for idx in np.ndindex(tokens.shape):
    out[idx] = np_log_softmax(logits[idx] / temperature)[tokens[idx]]
  return out


def _random_inputs(seed, adv_shape="row"):
  rng = np.random.default_rng(seed)
  old = rng.normal(-2.0, 1.0, (B, T)).astype(np.float32)
  logp = (old + rng.normal(0.0, 0.4, (B, T))).astype(np.float32)
  logp[0, 0] = old[0, 0] + 30.0  # beyond the ±20 clamp
  if adv_shape == "row":
    adv = rng.normal(size=(B, 1)).astype(np.float32)
  else:
    adv = rng.normal(size=(B, T)).astype(np.float32)
  adv[1] = 0.0  # a zero-variance group
  lengths = rng.integers(1, T + 1, B)
  mask = np.arange(T)[None, :] < lengths[:, None]
  mask[2] = rng.random(T) < 0.5  # a ragged row
  mask[2, 3] = True
  mask[-1] = False  # a padding row
  return logp, old, adv, mask


# ------------------------------------------------------------------------------------------------
# Spec numbers.


def _surrogate_and_grad(ratio, a, **kwargs):
  def f(logp):
    loss, _ = losses.clipped_surrogate(logp, jnp.zeros((1, 1)), jnp.full((1, 1), a), **kwargs)
    return loss[0, 0]

  logp = jnp.full((1, 1), math.log(ratio))
  return float(f(logp)), float(jax.grad(f)(logp)[0, 0])


def test_clip_positive_advantage_large_ratio():
  value, grad = _surrogate_and_grad(5.0, 1.0, eps_low=0.2, eps_high=0.2)
  assert value == pytest.approx(-1.2, abs=1e-6)
  assert grad == 0.0


def test_clip_positive_advantage_small_ratio_keeps_gradient():
  value, grad = _surrogate_and_grad(0.5, 1.0, eps_low=0.2, eps_high=0.2)
  assert value == pytest.approx(-0.5, abs=1e-6)
  assert grad == pytest.approx(-0.5, abs=1e-6)  # d(-rho)/dlogp = -rho


def test_clip_negative_advantage_dual_clip():
  value, _ = _surrogate_and_grad(5.0, -1.0, eps_low=0.2, eps_high=0.2, dual_clip=None)
  assert value == pytest.approx(5.0, abs=1e-5)
  value, grad = _surrogate_and_grad(5.0, -1.0, eps_low=0.2, eps_high=0.2, dual_clip=3.0)
  assert value == pytest.approx(3.0, abs=1e-6)
  assert grad == 0.0


def test_clip_info_flags():
  logp = jnp.log(jnp.array([[5.0, 0.5, 5.0, 1.1]]))
  adv = jnp.array([[1.0, 1.0, -1.0, -1.0]])
  _, info = losses.clipped_surrogate(logp, jnp.zeros((1, 4)), adv, eps_low=0.2, eps_high=0.2)
  np.testing.assert_array_equal(np.asarray(info["clipped"]), [[True, False, False, False]])
  np.testing.assert_array_equal(np.asarray(info["dual_clipped"]), [[False, False, True, False]])
  np.testing.assert_allclose(np.asarray(info["ratio"]), [[5.0, 0.5, 5.0, 1.1]], rtol=1e-6)


def test_kl_at_ln2():
  logp, ref = jnp.full((1, 1), math.log(2.0)), jnp.zeros((1, 1))
  for kind, want in (("k1", 0.693147), ("k2", 0.240227), ("k3", 0.193147)):
    assert float(losses.kl_penalty(logp, ref, kind)[0, 0]) == pytest.approx(want, abs=1e-6)


def _aggregation_example():
  loss = np.array([[2.0, 9.0, 9.0], [1.0, 1.0, 1.0], [9.0, 9.0, 9.0]])
  mask = np.array([[1, 0, 0], [1, 1, 1], [0, 0, 0]], bool)  # the last row is padding
  return loss, mask


@pytest.mark.parametrize(
  ("mode", "want"),
  [
    ("token-mean", 1.25),
    ("seq-mean-token-mean", 1.5),
    ("seq-mean-token-sum", 2.5),
    ("seq-mean-token-sum-norm", 0.625),
  ],
)
def test_aggregation_example(mode, want):
  loss, mask = _aggregation_example()
  num, den = losses.aggregate(loss, mask, mode, max_len=4)
  assert float(num) / float(den) == pytest.approx(want, abs=1e-6)


def test_aggregation_norm_defaults_to_t():
  loss, mask = _aggregation_example()
  num, den = losses.aggregate(loss, mask, "seq-mean-token-sum-norm")
  assert float(num) / float(den) == pytest.approx(5.0 / (2 * 3), abs=1e-6)


# ------------------------------------------------------------------------------------------------
# Reference comparisons on random inputs.


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dual_clip", [3.0, None])
def test_surrogate_matches_numpy(seed, dual_clip):
  logp, old, adv, _ = _random_inputs(seed, "row" if seed % 2 else "token")
  loss, info = losses.clipped_surrogate(
    logp, old, adv, eps_low=0.2, eps_high=0.28, dual_clip=dual_clip
  )
  adv_bt = np.broadcast_to(adv, (B, T)).astype(np.float64)
  want, clipped, dual, ratio = np_surrogate(
    logp.astype(np.float64), old.astype(np.float64), adv_bt, 0.2, 0.28, dual_clip
  )
  np.testing.assert_allclose(np.asarray(loss), want, atol=ATOL, rtol=RTOL)
  np.testing.assert_allclose(np.asarray(info["ratio"]), ratio, rtol=RTOL)
  np.testing.assert_array_equal(np.asarray(info["clipped"]), clipped)
  np.testing.assert_array_equal(np.asarray(info["dual_clipped"]), dual)
  assert dual_clip is not None or not dual.any()


def test_surrogate_accepts_1d_advantages():
  logp, old, adv, _ = _random_inputs(0)
  a, _ = losses.clipped_surrogate(logp, old, adv[:, 0])
  b, _ = losses.clipped_surrogate(logp, old, adv)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", MODES)
def test_aggregate_matches_numpy(mode, seed):
  rng = np.random.default_rng(seed)
  loss = rng.normal(size=(B, T))
  _, _, _, mask = _random_inputs(seed)
  num, den = losses.aggregate(loss, mask, mode, max_len=T + 3)
  np.testing.assert_allclose(float(num) / float(den), np_aggregate(loss, mask, mode, T + 3), 1e-9)


@pytest.mark.parametrize("kind", losses.KL_KINDS)
def test_kl_matches_numpy(kind):
  rng = np.random.default_rng(7)
  logp, ref = rng.normal(-2, 1, (B, T)), rng.normal(-2, 1, (B, T))
  logp[0, 0], ref[0, 1] = 25.0, 25.0  # both clamps (delta and k3) are exercised
  np.testing.assert_allclose(
    np.asarray(losses.kl_penalty(logp, ref, kind)), np_kl(logp, ref, kind), atol=1e-12
  )
  if kind == "k3":
    assert float(losses.kl_penalty(logp, ref, kind)[0, 1]) == 10.0


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_entropy_and_logprobs_match_numpy(temperature):
  rng = np.random.default_rng(3)
  logits = rng.normal(0, 3, (2, 3, V)).astype(np.float32)
  tokens = rng.integers(0, V, (2, 3))
  got_h = losses.entropy_from_logits(logits, temperature=temperature)
  got_lp = losses.token_logprobs(logits, tokens, temperature)
  l64 = logits.astype(np.float64)
  np.testing.assert_allclose(np.asarray(got_h), np_entropy(l64, temperature), atol=ATOL)
  np.testing.assert_allclose(
    np.asarray(got_lp), np_token_logprobs(l64, tokens, temperature), atol=ATOL
  )
  assert got_h.dtype == jnp.float32 and got_lp.dtype == jnp.float32


def test_entropy_stable_for_large_and_masked_logits():
  logits = jnp.array([[[1000.0, 1000.0, -jnp.inf, -1000.0]]])
  h = losses.entropy_from_logits(logits)
  assert float(h[0, 0]) == pytest.approx(math.log(2.0), abs=1e-6)
  grad = jax.jit(jax.grad(lambda x: losses.entropy_from_logits(x).sum()))(logits)
  assert np.isfinite(np.asarray(grad)).all()
  lp = losses.token_logprobs(logits, jnp.array([[0]]))
  assert float(lp[0, 0]) == pytest.approx(-math.log(2.0), abs=1e-6)


def test_bf16_logits_are_upcast():
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, V)), jnp.bfloat16)
  assert losses.token_logprobs(logits, jnp.zeros((2, 3), int)).dtype == jnp.float32
  assert losses.entropy_from_logits(logits).dtype == jnp.float32


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", MODES)
def test_policy_loss_matches_numpy(mode, seed):
  logp, old, adv, mask = _random_inputs(seed)
  rng = np.random.default_rng(100 + seed)
  ref = (old + rng.normal(0, 0.3, (B, T))).astype(np.float32)
  ent = rng.random((B, T)).astype(np.float32)
  loss, metrics = losses.policy_loss(
    logp,
    old,
    adv,
    mask,
    eps_low=0.2,
    eps_high=0.28,
    dual_clip=3.0,
    agg=mode,
    max_len=T + 1,
    ref_logp=ref,
    kl_coef=0.04,
    entropy=ent,
    entropy_coef=0.01,
  )
  l64, o64, a64 = (x.astype(np.float64) for x in (logp, old, np.broadcast_to(adv, (B, T))))
  surr, clipped, dual, ratio = np_surrogate(l64, o64, a64, 0.2, 0.28, 3.0)
  pg = np_aggregate(surr, mask, mode, T + 1)
  kl = np_aggregate(np_kl(l64, ref.astype(np.float64), "k3"), mask, mode, T + 1)
  h = np_aggregate(ent.astype(np.float64), mask, mode, T + 1)
  np.testing.assert_allclose(float(loss), pg + 0.04 * kl - 0.01 * h, atol=ATOL, rtol=RTOL)
  np.testing.assert_allclose(float(metrics["loss/pg"]), pg, atol=ATOL, rtol=RTOL)
  np.testing.assert_allclose(float(metrics["loss/kl"]), kl, atol=ATOL, rtol=RTOL)
  np.testing.assert_allclose(float(metrics["loss/entropy"]), h, atol=ATOL, rtol=RTOL)

  def token_mean(x):
    return np_aggregate(x.astype(np.float64), mask, "token-mean")

  log_ratio = np.clip(l64 - o64, -20, 20)
  np.testing.assert_allclose(float(metrics["loss/clipfrac"]), token_mean(clipped), atol=ATOL)
  np.testing.assert_allclose(float(metrics["loss/clipfrac_lower"]), token_mean(dual), atol=ATOL)
  np.testing.assert_allclose(float(metrics["loss/approx_kl"]), token_mean(-log_ratio), atol=ATOL)
  np.testing.assert_allclose(float(metrics["loss/ratio_mean"]), token_mean(ratio), rtol=RTOL)
  np.testing.assert_allclose(float(metrics["loss/ratio_max"]), ratio[mask].max(), rtol=RTOL)


def test_policy_loss_without_optional_terms():
  logp, old, adv, mask = _random_inputs(0)
  loss, metrics = losses.policy_loss(logp, old, adv, mask)
  assert set(metrics) == {
    "loss/pg",
    "loss/clipfrac",
    "loss/clipfrac_lower",
    "loss/approx_kl",
    "loss/ratio_mean",
    "loss/ratio_max",
  }
  assert float(loss) == float(metrics["loss/pg"])


def test_on_policy_ratio_is_one_and_gradient_is_advantage_weighted():
  # pi_old = stop_gradient(pi_theta): rho = 1 and d loss / d logp_it = -A_i m_it / sum(m).
  logp, _, adv, mask = _random_inputs(4)
  on_policy_loss = jax.jit(
    jax.grad(lambda lp: losses.policy_loss(lp, jax.lax.stop_gradient(lp), adv, mask)[0])
  )
  grad = on_policy_loss(jnp.asarray(logp))
  want = -np.broadcast_to(adv, (B, T)) * mask / mask.sum()
  np.testing.assert_allclose(np.asarray(grad), want, atol=1e-6)
  _, metrics = losses.policy_loss(logp, logp, adv, mask)
  assert float(metrics["loss/ratio_max"]) == 1.0 and float(metrics["loss/clipfrac"]) == 0.0


def test_empty_batch_gives_zero_not_nan():
  logp, old, adv, _ = _random_inputs(0)
  loss, metrics = losses.policy_loss(logp, old, adv, np.zeros((B, T), bool))
  assert float(loss) == 0.0
  assert all(np.isfinite(float(v)) for v in metrics.values())


# ------------------------------------------------------------------------------------------------
# Micro-batch exactness, jit, registry.


@pytest.mark.parametrize("mode", MODES)
def test_aggregate_micro_batches_are_exact(mode):
  rng = np.random.default_rng(9)
  loss = rng.normal(size=(B, T))
  _, _, _, mask = _random_inputs(9)
  whole = losses.aggregate(loss, mask, mode, max_len=T)
  splits = (slice(0, 2), slice(2, None))
  halves = [losses.aggregate(loss[s], mask[s], mode, max_len=T) for s in splits]
  num, den = sum(float(h[0]) for h in halves), sum(float(h[1]) for h in halves)
  np.testing.assert_allclose(num / den, float(whole[0]) / float(whole[1]), rtol=1e-12)
  # A plain mean of the two parts' values would not be exact (they differ in size).
  if mode != "seq-mean-token-sum-norm":
    naive = np.mean([float(h[0]) / float(h[1]) for h in halves])
    assert abs(naive - num / den) > 1e-6


@functools.partial(jax.jit, static_argnames="mode")
@jax.value_and_grad
def _loss_with_denominator(lp, old, adv, mask, denominator, mode):
  return losses.policy_loss(
    lp, old, adv, mask, agg=mode, max_len=T, denominator=denominator, ref_logp=old, kl_coef=0.1
  )[0]


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_policy_loss_micro_batches_with_global_denominator(mode):
  logp, old, adv, mask = _random_inputs(5)
  logp = logp + 0.05  # so the KL term is not zero
  whole, whole_grad = _loss_with_denominator(logp, old, adv, mask, None, mode)
  _, den = losses.aggregate(np.zeros((B, T)), mask, mode, max_len=T)
  parts = [
    _loss_with_denominator(logp[s], old[s], adv[s], mask[s], den, mode)
    for s in (slice(0, 3), slice(3, None))
  ]
  np.testing.assert_allclose(float(parts[0][0] + parts[1][0]), float(whole), rtol=1e-6)
  np.testing.assert_allclose(
    np.concatenate([np.asarray(parts[0][1]), np.asarray(parts[1][1])]),
    np.asarray(whole_grad),
    atol=1e-7,
  )


def test_policy_loss_jit_equals_eager():
  logp, old, adv, mask = _random_inputs(6)
  ref = old + 0.1

  def f(lp, ol, a, m, r):
    return losses.policy_loss(
      lp, ol, a, m, agg="seq-mean-token-mean", ref_logp=r, kl_coef=0.1, dual_clip=3.0
    )

  eager = f(logp, old, adv, mask, ref)
  jitted = jax.jit(f)(logp, old, adv, mask, ref)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), eager, jitted)


def test_registries():
  assert LOSSES.get("clip") is losses.policy_loss
  assert losses.AGGREGATIONS.names() == sorted(MODES)


# ------------------------------------------------------------------------------------------------
# DAPO overlong penalty.


def test_overlong_penalty():
  got = losses.overlong_penalty(np.array([0, 12, 13, 14, 16, 17]), max_len=16, cache_len=4)
  np.testing.assert_allclose(np.asarray(got), [0.0, 0.0, -0.25, -0.5, -1.0, -1.0], atol=1e-7)


# ------------------------------------------------------------------------------------------------
# Validation.


def test_bad_inputs_raise():
  logp, old, adv, mask = _random_inputs(0)
  with pytest.raises(ValueError, match="mode"):
    losses.aggregate(logp, mask, "sum")
  with pytest.raises(ValueError, match="kind"):
    losses.kl_penalty(logp, old, "k4")
  with pytest.raises(ValueError, match="advantages"):
    losses.clipped_surrogate(logp, old, np.ones((B, 2)))
  with pytest.raises(ValueError, match="old_logp"):
    losses.clipped_surrogate(logp, old[:, :2], adv)
  with pytest.raises(ValueError, match="dual_clip"):
    losses.clipped_surrogate(logp, old, adv, dual_clip=1.0)
  with pytest.raises(ValueError, match="eps_low"):
    losses.clipped_surrogate(logp, old, adv, eps_low=1.0)
  with pytest.raises(ValueError, match="mask"):
    losses.policy_loss(logp, old, adv, mask[:, :2])
  with pytest.raises(ValueError, match="ref_logp"):
    losses.policy_loss(logp, old, adv, mask, kl_coef=0.1)
  with pytest.raises(ValueError, match="entropy"):
    losses.policy_loss(logp, old, adv, mask, entropy_coef=0.1)
  with pytest.raises(ValueError, match="temperature"):
    losses.token_logprobs(np.zeros((1, 1, V)), np.zeros((1, 1), int), 0.0)
  with pytest.raises(ValueError, match="cache_len"):
    losses.overlong_penalty(np.ones(2), max_len=4, cache_len=5)
