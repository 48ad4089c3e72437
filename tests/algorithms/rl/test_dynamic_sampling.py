"""algorithms/rl/dynamic_sampling.py: informative groups and easy/hard outcomes (spec §2, §3.1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsys.algorithms.rl import dynamic_sampling as ds


def test_informative_examples():
  rewards = np.array(
    [
      [1.0, 0.0, 0.0, 1.0],  # mixed
      [1.0, 1.0, 1.0, 1.0],  # all correct
      [0.0, 0.0, 0.0, 0.0],  # all wrong
      [0.1, 0.1, 0.1, 0.1],  # constant partial credit
      [0.1, 0.0, 0.1, 0.1],  # GRESO's format reward: zero-mean-ish but not constant
    ],
    np.float32,
  )
  np.testing.assert_array_equal(ds.informative(rewards), [True, False, False, False, True])
  # A spread of 0.1 is not above tol = 0.1 (strict), but is above 0.05.
  np.testing.assert_array_equal(ds.informative(rewards, tol=0.1)[4], False)
  np.testing.assert_array_equal(ds.informative(rewards, tol=0.05)[4], True)


def test_informative_accepts_bool_and_int():
  rewards = np.array([[True, False], [True, True]])
  np.testing.assert_array_equal(ds.informative(rewards), [True, False])
  np.testing.assert_array_equal(ds.informative(rewards.astype(np.int32)), [True, False])


def test_group_outcomes_examples():
  rewards = np.array(
    [
      [1.0, 1.0, 1.0, 1.0],
      [0.0, 0.0, 0.0, 0.0],
      [1.0, 0.0, 1.0, 1.0],
      [0.1, 0.1, 0.1, 0.1],  # boxed but wrong everywhere: hard (none >= 0.95)
      [0.96, 1.0, 0.95, 1.0],  # >= threshold counts as correct
      [0.5, 0.5, 0.5, 0.5],  # partial credit below the threshold: hard
      [0.1, 0.0, 0.1, 0.0],  # hard, yet informative for dynamic sampling
    ],
    np.float32,
  )
  easy, hard = ds.group_outcomes(rewards)
  np.testing.assert_array_equal(easy, [True, False, False, False, True, False, False])
  np.testing.assert_array_equal(hard, [False, True, False, True, False, True, True])
  np.testing.assert_array_equal(ds.informative(rewards)[6], True)
  easy, hard = ds.group_outcomes(rewards, correct_threshold=0.5)
  np.testing.assert_array_equal(easy[5], True)
  np.testing.assert_array_equal(hard[5], False)


def test_group_outcomes_any_group_size():
  # The code's mean <= 0.11 test calls 1 correct of 10 "hard"; the correctness definition does not.
  rewards = np.zeros((2, 10), np.float32)
  rewards[0, 3] = 1.0
  easy, hard = ds.group_outcomes(rewards)
  np.testing.assert_array_equal(easy, [False, False])
  np.testing.assert_array_equal(hard, [False, True])


def test_jit_matches_eager():
  rewards = jnp.asarray(np.random.default_rng(0).integers(0, 2, (16, 8)), jnp.float32)
  f = jax.jit(ds.informative, static_argnames="tol")
  g = jax.jit(ds.group_outcomes, static_argnames="correct_threshold")
  np.testing.assert_array_equal(f(rewards), ds.informative(rewards))
  for a, b in zip(g(rewards), ds.group_outcomes(rewards), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
  "call, message",
  [
    (lambda: ds.informative(np.zeros(4)), "must be \\[P, G\\]"),
    (lambda: ds.informative(np.zeros((2, 0))), "at least one response"),
    (lambda: ds.informative(np.array([[0.0, np.nan]])), "must be finite"),
    (lambda: ds.informative(np.zeros((2, 2)), tol=-1.0), "tol must be >= 0"),
    (lambda: ds.informative(np.zeros((2, 2)), tol=True), "tol must be a Python number"),
    (lambda: ds.group_outcomes(np.zeros((2, 2)), correct_threshold=np.inf), "must be finite"),
    (lambda: ds.group_outcomes(np.zeros((2, 2, 2))), "must be \\[P, G\\]"),
  ],
)
def test_errors(call, message):
  with pytest.raises(ValueError, match=message):
    call()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=5, max_size=5))
def test_binary_properties(rows):
  rewards = np.array(rows, np.float32)
  keep = np.asarray(ds.informative(rewards))
  easy, hard = (np.asarray(x) for x in ds.group_outcomes(rewards))
  # Equal to DAPO's population-std test on binary rewards.
  np.testing.assert_array_equal(keep, rewards.std(axis=1) > 0)
  assert not (easy & hard).any()
  # With binary rewards, zero variance means exactly easy or hard.
  np.testing.assert_array_equal(~keep, easy | hard)
