"""GRESO selective rollout: skip prompts whose recent groups carried no learning signal.

GRESO (Zheng et al. 2025, spec rl_greso.md §3) keeps, for every prompt of a fixed pool of N, how
many of its most recent rollout groups in a row were all-correct (easy) or all-wrong (hard). Before
rolling out a prompt it skips it with probability `1 - max(p^streak, floor)`, where p is one of two
exploration probabilities that adapt once per training step towards a target share of
zero-variance groups. The host loop (batch filler) drives these pure functions:

  config = GresoConfig(chunk=8, default_rollout=48, min_rollout=8)
  state = init(num_prompts, config)
  # pre-rollout filter, one chunk of prompt ids at a time:
  keep, skipped_easy, skipped_hard = select(state, chunk_ids, key, config)
  state = record_skips(state, skipped_easy, skipped_hard)
  # after rolling out the kept prompts (padded to a static batch, `valid` marks real rows):
  state = update(state, prompt_ids, rewards, valid, config, num_responses)
  size, last_round = next_rollout_size(missing, zero_var_ratio, config, group_size)  # host ints
  # once per training step, after the batch is full:
  state = adapt(state, enabled=epoch > 0, config=config)

Decisions that are ours ([R]) or that differ from the official code ([C]), spec §3-§4:
  * Compact state [R]: the code keeps each prompt's full reward trace; only its trailing easy and
    hard streaks are ever used, so we keep those two int32 arrays. `greso_reference.py` keeps the
    full trace and the tests check that both give the same decisions.
  * Easy/hard are defined once, by correctness (`dynamic_sampling.group_outcomes`), for any G [R].
  * Randomness: `select` draws `u = uniform(key, (B,), float32)` (see `uniforms`) and skips row b
    iff `u[b] < P_skip(b)`. The key is the caller's; GresoState holds none, so the loop derives
    one per chunk (e.g. `fold_in(fold_in(fold_in(key, step), round), chunk)`) and checkpoints its
    own key [R]. float32 draws are the same with and without `jax_enable_x64`.
  * `adapt` with `n_rolled = 0` changes nothing (the code would divide by zero) [R]; the ratio
    tests `n/n_rolled >= target` are evaluated in float32.
  * `next_rollout_size` divides by `max(1 - z, 0.01)` (the code raises ZeroDivisionError at z = 1)
    and adds 1e-9 before the floor so that a value that is an integer in exact arithmetic is not
    rounded down by float error [R].
  * Duplicate prompt ids within one `update` batch happen when the pre-filter wraps the pool
    into a new epoch within one round: rows are applied in order, as the code's trace appends
    them (the streak counts both copies), and the step counters count every copy.
  * Prompt ids must lie in [0, N): checked when the arrays are concrete; under jit an
    out-of-range id reads streak 0 in `select` (never skipped) and is dropped by `update`'s
    scatter (but still counted in the step counters if valid).
  * Counters are int32: `responses_total` wraps after 2^31 responses (the paper used 13M).

All array functions are pure and jittable with `config` static (GresoConfig is a frozen,
hashable dataclass); shapes and static arguments are always checked, array values only when
concrete. `adapt`'s `enabled` and `update`'s `num_responses` may be traced.
"""

from __future__ import annotations

import dataclasses
import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.algorithms.rl import dynamic_sampling
from jaxsys.lib import checks

__all__ = [
  "GresoConfig",
  "GresoState",
  "adapt",
  "init",
  "next_rollout_size",
  "record_skips",
  "select",
  "skip_probability",
  "uniforms",
  "update",
]


@dataclasses.dataclass(frozen=True)
class GresoConfig:
  """GRESO hyperparameters (spec §3.5; defaults are the laptop column, p's and alpha the paper's).

  Frozen and hashable, so it can be a static argument of `jax.jit`.
  """

  p_easy0: float = 0.5  # initial base exploration probability of easy prompts
  p_hard0: float = 0.5  # initial base exploration probability of hard prompts
  target_zero_variance: float = 0.25  # alpha; targets alpha/3 (easy) and 2 alpha/3 (hard)
  delta_p: float = 0.01  # step of the adaptive p's, once per training step
  p_min: float = 0.05  # lower bound of p_easy and p_hard
  p_max: float = 0.95  # upper bound of p_easy and p_hard
  floor: float = 0.01  # minimum keep probability: P_skip <= 1 - floor
  chunk: int = 8  # prompts drawn from the pool per pre-filter call (code: train_batch_size)
  default_rollout: int = 48  # B_default, prompts in a full rollout round (sampling_batch_size)
  min_rollout: int = 8  # B_min, smallest adaptive rollout round (code: 64)
  beta: float = 1.25  # safety factor of the adaptive rollout size
  correct_threshold: float = 0.95  # a response is correct iff reward >= this

  def __post_init__(self):
    for name in ("p_easy0", "p_hard0", "target_zero_variance", "delta_p", "p_min", "p_max"):
      checks.number(getattr(self, name), name)
    for name in ("floor", "beta", "correct_threshold"):
      checks.number(getattr(self, name), name)
    for name in ("chunk", "default_rollout", "min_rollout"):
      checks.count(getattr(self, name), name, minimum=1)
    if not 0.0 < self.p_min <= self.p_max <= 1.0:
      raise ValueError(
        f"need 0 < p_min <= p_max <= 1, got p_min = {self.p_min}, p_max = {self.p_max}"
      )
    for name in ("p_easy0", "p_hard0"):
      value = getattr(self, name)
      if not self.p_min <= value <= self.p_max:
        raise ValueError(
          f"{name} must lie in [p_min, p_max] = [{self.p_min}, {self.p_max}], got {value}"
        )
    if not 0.0 <= self.target_zero_variance <= 1.0:
      raise ValueError(f"target_zero_variance must lie in [0, 1], got {self.target_zero_variance}")
    if self.delta_p < 0.0:
      raise ValueError(f"delta_p must be >= 0, got {self.delta_p}")
    if not 0.0 < self.floor <= 1.0:
      raise ValueError(
        f"floor must lie in (0, 1] (a prompt keeps at least this chance of being rolled out), "
        f"got {self.floor}"
      )
    if self.min_rollout > self.default_rollout:
      raise ValueError(
        f"min_rollout ({self.min_rollout}) must be <= default_rollout ({self.default_rollout})"
      )
    if self.beta <= 0.0:
      raise ValueError(f"beta must be > 0, got {self.beta}")


@flax.struct.dataclass
class GresoState:
  """Per-prompt streaks, exploration probabilities and counters of one GRESO run."""

  easy_streak: jax.Array  # int32[N]: latest rollouts of prompt n in a row that were all-correct
  hard_streak: jax.Array  # int32[N]: latest rollouts in a row all-wrong (never both streaks > 0)
  p_easy: jax.Array  # float32[]: base exploration probability of easy prompts, in [p_min, p_max]
  p_hard: jax.Array  # float32[]: base exploration probability of hard prompts, in [p_min, p_max]
  n_rolled: jax.Array  # int32[]: prompts rolled out in this step (all rounds); reset by adapt
  n_easy: jax.Array  # int32[]: of those, groups that were easy; reset by adapt
  n_hard: jax.Array  # int32[]: of those, groups that were hard; reset by adapt
  responses_total: jax.Array  # int32[]: responses generated since init (GRESO's "# rollouts")
  skipped_easy_total: jax.Array  # int32[]: prompts skipped by the pre-filter for an easy streak
  skipped_hard_total: jax.Array  # int32[]: prompts skipped by the pre-filter for a hard streak

  @property
  def num_prompts(self) -> int:
    """N, the size of the prompt pool."""
    return self.easy_streak.shape[0]


# ------------------------------------------------------------------------------------------------
# Checks: shapes and Python arguments always (they are static under jit), values when concrete.


def _check_config(config) -> None:
  if not isinstance(config, GresoConfig):
    raise ValueError(f"config must be a GresoConfig, got {type(config).__name__}")


def _is_concrete(*xs) -> bool:
  return not any(isinstance(x, jax.core.Tracer) for x in xs)


def _check_ids(state: GresoState, prompt_ids, valid=None) -> jax.Array:
  """Checks a [B] integer id vector; ids of valid rows must lie in [0, N) when concrete."""
  prompt_ids = jnp.asarray(prompt_ids)
  if prompt_ids.ndim != 1:
    raise ValueError(f"prompt_ids must be [B], got shape {tuple(prompt_ids.shape)}")
  if not jnp.issubdtype(prompt_ids.dtype, jnp.integer):
    raise ValueError(f"prompt_ids must be integers, got dtype {prompt_ids.dtype}")
  if _is_concrete(prompt_ids, valid):
    ids = np.asarray(prompt_ids)
    real = np.ones(ids.shape, bool) if valid is None else np.asarray(valid)
    bad = real & ((ids < 0) | (ids >= state.num_prompts))
    if bad.any():
      first = int(np.argmax(bad))
      raise ValueError(
        f"prompt_ids must lie in [0, N) = [0, {state.num_prompts}); row {first} holds {ids[first]}"
      )
  return prompt_ids


# ------------------------------------------------------------------------------------------------
# State.


def init(num_prompts: int, config: GresoConfig) -> GresoState:
  """A fresh state: no prompt has a history (nothing is skipped), p's at p_easy0 / p_hard0.

  Args:
    num_prompts: N, the size of the fixed prompt pool (static).
    config: GresoConfig.

  Returns:
    GresoState with [N] zero streaks and zero counters.
  """
  _check_config(config)
  num_prompts = checks.count(num_prompts, "num_prompts", minimum=1)
  zero = jnp.zeros((), jnp.int32)
  return GresoState(
    easy_streak=jnp.zeros((num_prompts,), jnp.int32),
    hard_streak=jnp.zeros((num_prompts,), jnp.int32),
    p_easy=jnp.asarray(config.p_easy0, jnp.float32),
    p_hard=jnp.asarray(config.p_hard0, jnp.float32),
    n_rolled=zero,
    n_easy=zero,
    n_hard=zero,
    responses_total=zero,
    skipped_easy_total=zero,
    skipped_hard_total=zero,
  )


def _gather(streak: jax.Array, prompt_ids: jax.Array) -> jax.Array:
  # Out-of-range ids (possible only under jit) read 0: no history, never skipped.
  return jnp.take(streak, prompt_ids, mode="fill", fill_value=0)


def skip_probability(state: GresoState, prompt_ids, config: GresoConfig) -> jax.Array:
  """P_skip of each prompt (spec §3.2).

    P_skip = 1 - max(p_easy^easy_streak, floor)   if easy_streak > 0
           = 1 - max(p_hard^hard_streak, floor)   if hard_streak > 0
           = 0                                    otherwise (never rolled out, or last group mixed)

  Args:
    state: GresoState.
    prompt_ids: [B] int prompt ids in [0, N).
    config: GresoConfig (static).

  Returns:
    float32[B] skip probabilities in [0, 1 - floor].
  """
  _check_config(config)
  prompt_ids = _check_ids(state, prompt_ids)
  easy = _gather(state.easy_streak, prompt_ids)
  hard = _gather(state.hard_streak, prompt_ids)
  floor = jnp.float32(config.floor)
  skip_easy = 1.0 - jnp.maximum(jnp.power(state.p_easy, easy.astype(jnp.float32)), floor)
  skip_hard = 1.0 - jnp.maximum(jnp.power(state.p_hard, hard.astype(jnp.float32)), floor)
  zero = jnp.zeros((), jnp.float32)
  return jnp.where(easy > 0, skip_easy, jnp.where(hard > 0, skip_hard, zero))


def uniforms(key: jax.Array, batch_size: int) -> jax.Array:
  """The float32[batch_size] uniform draws in [0, 1) that `select` compares with P_skip."""
  return jax.random.uniform(key, (batch_size,), jnp.float32)


def select(
  state: GresoState, prompt_ids, key: jax.Array, config: GresoConfig
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The pre-rollout filter (spec §3.2): skip prompt b iff `uniforms(key, B)[b] < P_skip(b)`.

  Args:
    state: GresoState.
    prompt_ids: [B] int prompt ids in [0, N) (one chunk pulled from the pool).
    key: typed key, consumed; one independent uniform per row.
    config: GresoConfig (static).

  Returns:
    (keep [B] bool, skipped_easy [B] bool, skipped_hard [B] bool); every row is exactly one of
    kept, skipped for an easy streak, skipped for a hard streak.
  """
  checks.typed_key(key)
  prob = skip_probability(state, prompt_ids, config)
  prompt_ids = jnp.asarray(prompt_ids)
  skip = uniforms(key, prompt_ids.shape[0]) < prob
  easy = _gather(state.easy_streak, prompt_ids) > 0
  return ~skip, skip & easy, skip & ~easy


def _streaks_after(state, prompt_ids, real, easy, hard):
  """Streaks of each row's prompt after applying rows 0..b in order, and which rows are last.

  A prompt can appear twice in one round when the pre-filter wraps the pool into a new epoch.
  The [B, B] comparison gives every row the run of same-kind outcomes ending at it among the
  rows with its id (extended by the stored streak when the run reaches back to the first copy),
  the answer a sequential replay of the full trace gives. B is a rollout round (<= a few
  hundred), so B^2 is small next to the rollout itself.
  """
  rows = jnp.arange(prompt_ids.shape[0])
  same = (prompt_ids[:, None] == prompt_ids[None, :]) & real[:, None] & real[None, :]  # [b, c]
  upto = same & (rows[None, :] <= rows[:, None])  # copies c at or before row b
  last = real & ~jnp.any(same & (rows[None, :] > rows[:, None]), axis=1)

  def run(kind, stored):
    breaks = upto & ~kind[None, :]
    last_break = jnp.max(jnp.where(breaks, rows[None, :], -1), axis=1)
    length = jnp.sum(upto & (rows[None, :] > last_break[:, None]), axis=1, dtype=jnp.int32)
    old = _gather(stored, prompt_ids)
    return jnp.where(last_break < 0, old + length, length).astype(jnp.int32)

  return run(easy, state.easy_streak), run(hard, state.hard_streak), last


def update(
  state: GresoState, prompt_ids, rewards, valid, config: GresoConfig, num_responses
) -> GresoState:
  """Records one rollout round (spec §3.1): streaks by scatter, step counters, response total.

  For each valid row: easy group -> easy_streak + 1, hard_streak = 0; hard group -> hard_streak
  + 1, easy_streak = 0; mixed group -> both 0. Invalid rows (padding of a static-shape batch)
  leave the streaks and counters untouched. Record every rolled-out group, before any dynamic-
  sampling filter or slicing (spec §3.4: dropped groups count too).

  Args:
    state: GresoState.
    prompt_ids: [B] int prompt ids; valid rows must lie in [0, N); repeats apply in row order.
    rewards: [B, G] rewards (see `dynamic_sampling.group_outcomes`).
    valid: [B] bool, False for padding rows.
    config: GresoConfig (static).
    num_responses: int or int32 scalar (may be traced) added to `responses_total`; the caller
      counts only real responses (usually valid.sum() * G).

  Returns:
    The updated GresoState.
  """
  _check_config(config)
  rewards = jnp.asarray(rewards)
  valid = jnp.asarray(valid)
  if jnp.ndim(prompt_ids) != 1:
    raise ValueError(f"prompt_ids must be [B], got shape {tuple(jnp.shape(prompt_ids))}")
  batch = jnp.shape(prompt_ids)[0]
  if valid.shape != (batch,) or valid.dtype != jnp.bool_:
    raise ValueError(f"valid must be bool [B] = [{batch}], got {valid.dtype}{list(valid.shape)}")
  prompt_ids = _check_ids(state, prompt_ids, valid)
  if rewards.ndim != 2 or rewards.shape[0] != batch:
    raise ValueError(f"rewards must be [B, G] with B = {batch}, got shape {tuple(rewards.shape)}")
  num_responses = jnp.asarray(num_responses)
  if num_responses.shape != () or not jnp.issubdtype(num_responses.dtype, jnp.integer):
    raise ValueError(f"num_responses must be an integer scalar, got {num_responses!r}")
  # Padding rows may hold anything (NaN included): zero them before the concrete-value check.
  rewards = jnp.where(valid[:, None], rewards, jnp.zeros((), rewards.dtype))
  easy, hard = dynamic_sampling.group_outcomes(rewards, config.correct_threshold)

  in_range = (prompt_ids >= 0) & (prompt_ids < state.num_prompts)
  new_easy, new_hard, last = _streaks_after(state, prompt_ids, valid & in_range, easy, hard)
  # Only the last copy of each id writes; the others scatter to index N, which "drop" discards.
  target = jnp.where(last, prompt_ids, state.num_prompts)

  def count(mask):
    return jnp.sum(mask & valid, dtype=jnp.int32)

  return state.replace(
    easy_streak=state.easy_streak.at[target].set(new_easy, mode="drop"),
    hard_streak=state.hard_streak.at[target].set(new_hard, mode="drop"),
    n_rolled=state.n_rolled + count(jnp.ones((batch,), bool)),
    n_easy=state.n_easy + count(easy),
    n_hard=state.n_hard + count(hard),
    responses_total=state.responses_total + num_responses.astype(jnp.int32),
  )


def record_skips(state: GresoState, skipped_easy, skipped_hard) -> GresoState:
  """Adds one `select` call's skips to the cumulative totals.

  Args:
    state: GresoState.
    skipped_easy: [B] bool from `select`.
    skipped_hard: [B] bool from `select`.

  Returns:
    GresoState with skipped_easy_total / skipped_hard_total increased.
  """
  skipped_easy, skipped_hard = jnp.asarray(skipped_easy), jnp.asarray(skipped_hard)
  if skipped_easy.ndim != 1 or skipped_hard.shape != skipped_easy.shape:
    raise ValueError(
      f"skipped_easy and skipped_hard must both be [B], got shapes {skipped_easy.shape} and "
      f"{skipped_hard.shape}"
    )
  return state.replace(
    skipped_easy_total=state.skipped_easy_total + jnp.sum(skipped_easy, dtype=jnp.int32),
    skipped_hard_total=state.skipped_hard_total + jnp.sum(skipped_hard, dtype=jnp.int32),
  )


def adapt(state: GresoState, enabled, config: GresoConfig) -> GresoState:
  """Adapts p_easy / p_hard once per training step (spec §3.3), then resets the step counters.

    p_easy <- clip(p_easy - dp, p_min, p_max) if n_easy / n_rolled >= alpha/3   else + dp
    p_hard <- clip(p_hard - dp, p_min, p_max) if n_hard / n_rolled >= 2 alpha/3 else + dp

  Lower p means a faster-decaying keep probability, i.e. more skipping. Nothing changes when
  `enabled` is False (the code enables it from the second dataloader epoch) or n_rolled = 0 [R].

  Args:
    state: GresoState.
    enabled: bool scalar, may be traced.
    config: GresoConfig (static).

  Returns:
    GresoState with new p's and n_rolled = n_easy = n_hard = 0.
  """
  _check_config(config)
  enabled = jnp.asarray(enabled)
  if enabled.shape != () or enabled.dtype != jnp.bool_:
    raise ValueError(f"enabled must be a bool scalar, got {enabled!r}")
  rolled = jnp.maximum(state.n_rolled, 1).astype(jnp.float32)
  alpha = config.target_zero_variance
  step = jnp.float32(config.delta_p)

  def moved(p, count, target):
    too_many = count.astype(jnp.float32) / rolled >= jnp.float32(target)
    return jnp.clip(jnp.where(too_many, p - step, p + step), config.p_min, config.p_max).astype(
      jnp.float32
    )

  active = enabled & (state.n_rolled > 0)
  zero = jnp.zeros((), jnp.int32)
  return state.replace(
    p_easy=jnp.where(active, moved(state.p_easy, state.n_easy, alpha / 3), state.p_easy),
    p_hard=jnp.where(active, moved(state.p_hard, state.n_hard, 2 * alpha / 3), state.p_hard),
    n_rolled=zero,
    n_easy=zero,
    n_hard=zero,
  )


# ------------------------------------------------------------------------------------------------
# Host side.


def next_rollout_size(
  missing_prompts: int, zero_var_ratio: float, config: GresoConfig, group_size: int
) -> tuple[int, bool]:
  """Prompts to roll out in the next round of a step that is still short (spec §3.4).

    est = floor(beta * missing * G / G / max(1 - z, 0.01))    (the code counts responses)
    size = clamp(est, min_rollout, default_rollout); last_round = est <= default_rollout

  After a last round the step trains even if the batch is still short.

  Args:
    missing_prompts: Python int >= 1, informative groups still needed (B_train - |buffer|).
    zero_var_ratio: Python float in [0, 1], the zero-variance share of the latest round.
    config: GresoConfig (default_rollout, min_rollout, beta).
    group_size: Python int >= 1, G.

  Returns:
    (size, last_round): a Python int in [min_rollout, default_rollout] and a Python bool.
  """
  _check_config(config)
  missing_prompts = checks.count(missing_prompts, "missing_prompts", minimum=1)
  group_size = checks.count(group_size, "group_size", minimum=1)
  checks.number(zero_var_ratio, "zero_var_ratio")
  if not 0.0 <= zero_var_ratio <= 1.0:
    raise ValueError(f"zero_var_ratio must lie in [0, 1], got {zero_var_ratio}")
  missing_responses = missing_prompts * group_size
  denominator = max(1.0 - float(zero_var_ratio), 0.01)
  est = math.floor(config.beta * missing_responses / group_size / denominator + 1e-9)
  size = min(max(est, config.min_rollout), config.default_rollout)
  return int(size), bool(est <= config.default_rollout)
