"""GRESO's selective-rollout rules written out in plain Python, as the official code keeps them.

An independent formulation of `greso.py` for tests (spec rl_greso.md §3): instead of two streak
counters per prompt it keeps every prompt's full trace of rollouts, a list of
(epoch, per-response correct flags), and walks the trace backwards to find the trailing run of
all-correct or all-wrong groups whenever a skip probability is needed. Probabilities are Python
floats (float64); the uniform draws are passed in as numpy arrays, so a test can feed it exactly
the draws `greso.select` made (`greso.uniforms(key, B)`) and compare decision by decision.

  ref = GresoReference(num_prompts, config)          # config: a greso.GresoConfig or look-alike
  keep, skipped_easy, skipped_hard = ref.select(prompt_ids, u)   # u: numpy [B] in [0, 1)
  ref.record_skips(skipped_easy, skipped_hard)
  ref.update(epoch, prompt_ids, rewards, valid, num_responses)
  ref.adapt(enabled)
  size, last_round = next_rollout_size(missing, zero_var_ratio, config, group_size)

No jax here; `config` is read by attribute only.
"""

from __future__ import annotations

import math

import numpy as np


class GresoReference:
  """Full-trace GRESO prompt selector with the spec's adapt rule and counters."""

  def __init__(self, num_prompts: int, config):
    self.config = config
    self.num_prompts = int(num_prompts)
    # traces[n]: every rollout of prompt n in order, as (epoch, tuple of per-response correct).
    self.traces: list[list[tuple[int, tuple[bool, ...]]]] = [[] for _ in range(self.num_prompts)]
    self.p_easy = float(config.p_easy0)
    self.p_hard = float(config.p_hard0)
    self.n_rolled = 0
    self.n_easy = 0
    self.n_hard = 0
    self.responses_total = 0
    self.skipped_easy_total = 0
    self.skipped_hard_total = 0

  # -- history ---------------------------------------------------------------------------------

  def _trailing(self, prompt: int, all_correct: bool) -> int:
    """Length of the run of all-correct (or all-wrong) groups at the end of prompt's trace."""
    run = 0
    for _, flags in reversed(self.traces[prompt]):
      if all_correct and all(flags):
        run += 1
      elif not all_correct and not any(flags):
        run += 1
      else:
        break
    return run

  def streaks(self, prompt: int) -> tuple[int, int]:
    """(easy streak, hard streak) of one prompt, derived from its trace."""
    return self._trailing(prompt, True), self._trailing(prompt, False)

  def skip_probability(self, prompt: int) -> float:
    easy, hard = self.streaks(prompt)
    if easy > 0:
      return 1.0 - max(self.p_easy**easy, self.config.floor)
    if hard > 0:
      return 1.0 - max(self.p_hard**hard, self.config.floor)
    return 0.0

  # -- decisions and records -------------------------------------------------------------------

  def select(self, prompt_ids, u) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skip prompt_ids[b] iff u[b] < its skip probability; returns (keep, easy, hard) bool [B]."""
    keep, skipped_easy, skipped_hard = [], [], []
    for prompt, draw in zip(prompt_ids, u, strict=True):
      prompt = int(prompt)
      skip = float(draw) < self.skip_probability(prompt)
      easy, hard = self.streaks(prompt)
      keep.append(not skip)
      skipped_easy.append(skip and easy > 0)
      skipped_hard.append(skip and hard > 0)
    return np.array(keep, bool), np.array(skipped_easy, bool), np.array(skipped_hard, bool)

  def record_skips(self, skipped_easy, skipped_hard) -> None:
    self.skipped_easy_total += int(sum(bool(s) for s in skipped_easy))
    self.skipped_hard_total += int(sum(bool(s) for s in skipped_hard))

  def update(self, epoch: int, prompt_ids, rewards, valid, num_responses: int) -> None:
    """Appends each valid row's group to its prompt's trace and counts it for this step."""
    for prompt, row, real in zip(prompt_ids, rewards, valid, strict=True):
      if not real:
        continue
      flags = tuple(float(r) >= self.config.correct_threshold for r in row)
      self.traces[int(prompt)].append((int(epoch), flags))
      self.n_rolled += 1
      self.n_easy += all(flags)
      self.n_hard += not any(flags)
    self.responses_total += int(num_responses)

  def adapt(self, enabled: bool) -> None:
    """Once per training step: move p_easy / p_hard towards the targets, reset the counters."""
    c = self.config
    if enabled and self.n_rolled > 0:
      easy_ratio = self.n_easy / self.n_rolled
      hard_ratio = self.n_hard / self.n_rolled
      if easy_ratio >= c.target_zero_variance / 3:
        self.p_easy = max(self.p_easy - c.delta_p, c.p_min)
      else:
        self.p_easy = min(self.p_easy + c.delta_p, c.p_max)
      if hard_ratio >= c.target_zero_variance * 2 / 3:
        self.p_hard = max(self.p_hard - c.delta_p, c.p_min)
      else:
        self.p_hard = min(self.p_hard + c.delta_p, c.p_max)
    self.n_rolled = self.n_easy = self.n_hard = 0


def next_rollout_size(missing_prompts: int, zero_var_ratio: float, config, group_size: int):
  """The code's adaptive round size, computed in responses as it does (spec §3.4).

  Returns (size, last_round): size = clamp(est, min_rollout, default_rollout), last_round =
  est <= default_rollout, with est = floor(missing responses / (1 - z) / G * beta) and the
  denominator floored at 0.01.
  """
  remainder = missing_prompts * group_size
  est = math.floor(remainder / max(1.0 - zero_var_ratio, 0.01) / group_size * config.beta + 1e-9)
  last_round = est <= config.default_rollout
  size = est
  if size > config.default_rollout:
    size = config.default_rollout
  if size < config.min_rollout:
    size = config.min_rollout
  return size, last_round
