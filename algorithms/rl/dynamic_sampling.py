"""DAPO dynamic sampling: which rollout groups carry a learning signal (spec rl_greso.md §2, §3.1).

A group of G responses to one prompt is *informative* when its rewards are not all equal: a
group-relative advantage (GRPO, RLOO, ...) is then non-zero somewhere. Dynamic sampling keeps
whole informative groups and rolls out more prompts until a training batch is full; GRESO uses
the same per-group outcome to decide which prompts to skip next time.

  keep = informative(rewards)                       # [P] bool, max - min > tol
  easy, hard = group_outcomes(rewards)              # [P] bool: all correct / none correct
  zero_var_ratio = 1 - keep.mean()

Conventions (spec §2, §3.1, §4; [R] marks our decisions):
  * `informative` is `max - min > tol` with tol = 0, the GRESO code's max == min test; for binary
    rewards it equals DAPO's `std > 0` on accuracy.
  * Easy/hard are defined once, for both skipping and the adaptive probabilities, and for any G
    [R]: a response is correct when its reward is >= `correct_threshold` (0.95, the threshold of
    the GRESO code's correct count); easy = every response correct, hard = none correct. The GRESO
    code instead uses group-mean thresholds (0.98 / 0.11) under its 1 / 0.1 / 0 format reward.
  * Every zero-variance group is easy or hard; with non-binary rewards the converse can fail
    (rewards [0.1, 0, 0.1] are hard yet informative), which is why GRESO and DS use separate tests.
  * Non-finite rewards are rejected when the array is concrete; under jit a NaN group is neither
    informative nor easy nor hard.

Both functions are pure and jittable; numpy rewards give numpy results without compiling anything
(the host-side batch filler calls them on every rollout round, whose size varies). Padding rows
are the caller's business: mask the outputs.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxsys.lib import checks

__all__ = ["group_outcomes", "informative"]


def _check_rewards(rewards) -> jax.Array:
  """Checks a [P, G] reward array (shape always, values when concrete); numpy stays numpy."""
  if not isinstance(rewards, jax.Array):
    rewards = np.asarray(rewards)
  if rewards.ndim != 2:
    raise ValueError(f"rewards must be [P, G], got shape {tuple(rewards.shape)}")
  if rewards.shape[1] < 1:
    raise ValueError(f"rewards need at least one response per group, got shape {rewards.shape}")
  if rewards.dtype == bool:
    rewards = rewards.astype(np.float32)
  checks.finite(rewards, "rewards")
  return rewards


def informative(rewards, tol: float = 0.0) -> jax.Array:
  """Which groups have unequal rewards (spec §2): `max_j r_ij - min_j r_ij > tol`.

  Args:
    rewards: [P, G] rewards (float, int or bool) of G responses to each of P prompts.
    tol: Python float >= 0; a spread of at most `tol` counts as zero variance.

  Returns:
    [P] bool, True where the group is informative (would get a non-zero GRPO advantage).
  """
  tol = checks.number(tol, "tol", minimum=0.0)
  rewards = _check_rewards(rewards)
  spread = rewards.max(axis=1) - rewards.min(axis=1)
  return spread > tol


def group_outcomes(rewards, correct_threshold: float = 0.95) -> tuple[jax.Array, jax.Array]:
  """Easy and hard groups (spec §3.1, "easy/hard defined once") [R].

  Args:
    rewards: [P, G] rewards of G responses to each of P prompts.
    correct_threshold: Python float; a response is correct iff its reward >= this.

  Returns:
    (easy [P] bool, hard [P] bool): easy = every response correct, hard = no response correct.
    They never both hold (G >= 1); a group that is neither is "mixed".
  """
  correct_threshold = checks.number(correct_threshold, "correct_threshold")
  rewards = _check_rewards(rewards)
  correct = rewards >= correct_threshold
  return correct.all(axis=1), ~correct.any(axis=1)
