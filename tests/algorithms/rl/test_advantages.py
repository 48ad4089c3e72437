"""algorithms/rl/advantages.py: spec §1.1 numbers, a loop-based numpy reference, jit, checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.algorithms.rl import advantages as adv
from jaxsys.lib.registry import ADVANTAGES

ATOL = 1e-5
NAMES = ("grpo", "drgrpo", "rloo")


# ------------------------------------------------------------------------------------------------
# Plain-numpy versions of the spec's formulas, one group and one response at a time.


def np_grpo(r, mask, eps=1e-6, ddof=1):
  out = np.zeros(r.shape)
  num_prompts, group_size = r.shape
  for i in range(num_prompts):
    if not mask[i]:
      continue
    mean = sum(r[i]) / group_size
    std = (sum((x - mean) ** 2 for x in r[i]) / (group_size - ddof)) ** 0.5
    for j in range(group_size):
      out[i, j] = (r[i, j] - mean) / (std + eps)
  return out


def np_drgrpo(r, mask):
  out = np.zeros(r.shape)
  for i in range(r.shape[0]):
    if mask[i]:
      out[i] = r[i] - r[i].mean()
  return out


def np_rloo(r, mask):
  out = np.zeros(r.shape)
  num_prompts, group_size = r.shape
  for i in range(num_prompts):
    if not mask[i]:
      continue
    for j in range(group_size):
      others = [r[i, k] for k in range(group_size) if k != j]
      out[i, j] = r[i, j] - sum(others) / len(others)
  return out


NP_REFS = {"grpo": np_grpo, "drgrpo": np_drgrpo, "rloo": np_rloo}


def _random_batch(seed, num_prompts=7, group_size=5, binary=False):
  rng = np.random.default_rng(seed)
  if binary:
    r = rng.integers(0, 2, (num_prompts, group_size)).astype(np.float32)
  else:
    r = rng.normal(size=(num_prompts, group_size)).astype(np.float32)
  r[1] = 0.7  # a zero-variance real group
  mask = rng.random(num_prompts) < 0.7
  mask[0], mask[1], mask[-1] = True, True, False  # a padding group at the end
  r[-1] = np.nan  # whatever a padding group holds must not matter
  return r, mask


# ------------------------------------------------------------------------------------------------
# Spec numbers.


def test_spec_example_ddof1():
  a = np.asarray(adv.grpo(np.array([[1.0, 0.0, 0.0, 1.0]]), np.array([True])))
  np.testing.assert_allclose(a, [[0.866025, -0.866025, -0.866025, 0.866025]], atol=1e-5)


def test_spec_example_ddof0():
  a = np.asarray(adv.grpo(np.array([[1.0, 0.0, 0.0, 1.0]]), np.array([True]), std_ddof=0))
  np.testing.assert_allclose(a, [[1.0, -1.0, -1.0, 1.0]], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("value", [1.0, 0.0, 0.1, 1 / 3])
def test_zero_variance_group_is_exactly_zero(name, value):
  # 0.1 and 1/3 are not exact in binary: the computed mean differs from the rewards by rounding.
  r = np.full((2, 3), value, np.float32)
  a = np.asarray(ADVANTAGES.get(name)(r, np.array([True, True])))
  assert (a == 0.0).all()


# ------------------------------------------------------------------------------------------------
# Reference comparison.


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", NAMES)
def test_matches_numpy(name, seed):
  r, mask = _random_batch(seed, binary=seed % 2 == 1)
  got = np.asarray(ADVANTAGES.get(name)(r, mask))
  want = NP_REFS[name](np.where(mask[:, None], r, 0.0).astype(np.float64), mask)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-5)
  assert (got[~mask] == 0).all()


@pytest.mark.parametrize("ddof", [0, 1])
def test_grpo_ddof_matches_numpy(ddof):
  r, mask = _random_batch(11, group_size=8)
  got = np.asarray(adv.grpo(r, mask, std_ddof=ddof, eps=1e-3))
  want = np_grpo(np.where(mask[:, None], r, 0.0).astype(np.float64), mask, eps=1e-3, ddof=ddof)
  np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-5)


def test_rloo_is_scaled_drgrpo():
  r, mask = _random_batch(3, group_size=6)
  np.testing.assert_allclose(
    np.asarray(adv.rloo(r, mask)), 6 / 5 * np.asarray(adv.drgrpo(r, mask)), atol=ATOL
  )


def test_group_sums_are_zero():
  r, mask = _random_batch(5)
  for name in NAMES:
    a = np.asarray(ADVANTAGES.get(name)(r, mask))
    np.testing.assert_allclose(a.sum(axis=1), 0.0, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Transformations, dtypes, registry.


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager(name):
  r, mask = _random_batch(2)  # NaN padding: not checked under jit, and must not leak either
  fn = ADVANTAGES.get(name)
  np.testing.assert_allclose(
    np.asarray(jax.jit(fn)(r, mask)), np.asarray(fn(r, mask)), atol=1e-6, rtol=1e-6
  )


def test_vmap_over_batches():
  rs = np.stack([_random_batch(s)[0] for s in range(3)])
  mask = np.array([True] * 6 + [False])
  got = jax.vmap(adv.grpo, in_axes=(0, None))(rs, mask)
  for k in range(3):
    np.testing.assert_allclose(np.asarray(got[k]), np.asarray(adv.grpo(rs[k], mask)), atol=1e-6)


def test_int_and_bool_rewards_promote_to_float32():
  r = np.array([[1, 0, 0, 1]])
  a_int = adv.grpo(r, np.array([True]))
  a_bool = adv.grpo(r.astype(bool), np.array([True]))
  assert a_int.dtype == jnp.float32 and a_bool.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(a_int), np.asarray(a_bool))


def test_float64_rewards_keep_dtype():
  a = adv.grpo(jnp.asarray([[1.0, 0.0, 0.0, 1.0]], jnp.float64), np.array([True]))
  assert a.dtype == jnp.float64
  np.testing.assert_allclose(np.asarray(a), np_grpo(np.array([[1.0, 0, 0, 1]]), [True]), atol=1e-12)


def test_registry_names():
  for name in NAMES:
    assert name in ADVANTAGES
  assert ADVANTAGES.get("grpo") is adv.grpo


# ------------------------------------------------------------------------------------------------
# Validation.


@pytest.mark.parametrize("name", NAMES)
def test_group_of_one_raises(name):
  with pytest.raises(ValueError, match="G >= 2"):
    ADVANTAGES.get(name)(np.ones((3, 1)), np.ones(3, bool))


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match=r"\[P, G\]"):
    adv.grpo(np.ones(4), np.ones(1, bool))
  with pytest.raises(ValueError, match="group_mask"):
    adv.grpo(np.ones((3, 4)), np.ones(4, bool))


def test_bad_ddof_raises():
  with pytest.raises(ValueError, match="std_ddof"):
    adv.grpo(np.ones((3, 4)), np.ones(3, bool), std_ddof=2)


def test_nan_in_real_group_raises_but_not_in_padding():
  r = np.ones((2, 4))
  r[1, 2] = np.nan
  with pytest.raises(ValueError, match="finite"):
    adv.grpo(r, np.array([True, True]))
  a = np.asarray(adv.grpo(r, np.array([True, False])))
  assert np.isfinite(a).all()
