"""Filling one training batch: plain GRPO, DAPO dynamic sampling, or GRESO selective rollout.

  filler = BatchFiller(FillConfig(mode="greso", train_groups=32), sampler, pool, seed=0)
  groups, fill_state, stats = filler.fill(policy, fill_state, key)

The host loop of spec section 3.4 around pure pieces: `greso.select/update/adapt` (jitted, fixed
shapes) decide which prompts to roll out, `dynamic_sampling.informative` which groups to keep.

- "grpo": roll out `train_groups` prompts; every group trains (zero-variance ones have zero
  advantage but still count in the token-mean denominator).
- "ds": roll out `gen_groups` prompts per round and keep the informative groups until
  `train_groups` are buffered or `max_rounds` rounds ran (then train on the partial batch:
  verl's crash on an unfillable batch becomes a logged short batch [R]).
- "greso": before each round, pull chunks of `greso.chunk` prompts and skip each with its
  streak-based probability until `target` survive; roll them out, record every group's outcome
  in the streaks (before filtering), keep the informative ones; the next round's size comes from
  the observed zero-variance ratio; after the batch, adapt p_easy / p_hard (from the second
  epoch on).

Prompts come from the pool in a fresh permutation per epoch (`FillState.epoch`, `.position`);
skipped prompts are consumed, so GRESO's epochs pass faster, as in the official code. Groups
beyond `train_groups` are dropped and counted as wasted (no carry-over, the code's behaviour).
"""

from __future__ import annotations

import dataclasses
import functools
import time

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.algorithms.rl import dynamic_sampling, greso
from jaxsys.algorithms.rl.rollout import Groups, Sampler, concat

MODES = ("grpo", "ds", "greso")


@dataclasses.dataclass(frozen=True)
class FillConfig:
  """Batch-filling settings (spec 2, 3.4, 3.5 laptop column)."""

  mode: str = "greso"
  train_groups: int = 32  # B_train prompts per optimizer step
  gen_groups: int = 48  # DS generation batch (prompts per round)
  max_rounds: int = 16  # rollout rounds per step before training on a partial batch
  data_multiple: int = 1  # GRESO survivors are rounded down to a multiple (data-parallel size)
  greso: greso.GresoConfig = greso.GresoConfig()

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"mode={self.mode!r}; use one of {MODES}")
    for name in ("train_groups", "gen_groups", "max_rounds", "data_multiple"):
      if getattr(self, name) < 1:
        raise ValueError(f"FillConfig.{name}={getattr(self, name)}: must be >= 1")


@flax.struct.dataclass
class FillState:
  """What the filler carries across steps (checkpointed with the run)."""

  epoch: jax.Array  # [] int32 passes over the pool started
  position: jax.Array  # [] int32 next index into this epoch's permutation
  greso: greso.GresoState  # streaks, p_easy / p_hard, counters (unused by grpo / ds)


def init_fill_state(num_prompts: int, config: FillConfig) -> FillState:
  return FillState(
    epoch=jnp.zeros((), jnp.int32),
    position=jnp.zeros((), jnp.int32),
    greso=greso.init(num_prompts, config.greso),
  )


@functools.partial(jax.jit, static_argnames="config")
def _select(state, prompt_ids, key, config):
  return greso.select(state, prompt_ids, key, config)


@functools.partial(jax.jit, static_argnames="config")
def _update(state, prompt_ids, rewards, valid, num_responses, config):
  return greso.update(state, prompt_ids, rewards, valid, config, num_responses)


@functools.partial(jax.jit, static_argnames="config")
def _adapt(state, enabled, config):
  return greso.adapt(state, enabled, config)


class BatchFiller:
  """Fills training batches for one mode; holds no state between calls (FillState does)."""

  def __init__(self, config: FillConfig, sampler: Sampler, pool, *, seed: int):
    self.config = config
    self.sampler = sampler
    self.pool = pool
    self.seed = seed
    self.num_prompts = len(pool.prompts)
    self.levels = np.asarray(getattr(pool, "levels", np.zeros(self.num_prompts)), np.int32)
    # greso.update sees a fixed number of rows: a round's survivors reach at most
    # target + chunk - 1 (chunks are pulled whole)
    self.update_rows = config.greso.default_rollout + config.greso.chunk

  # -- the prompt stream -------------------------------------------------------------------------

  def _permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(self.num_prompts)

  def _take(self, epoch: int, position: int, count: int):
    """`count` prompt ids from the stream; (ids, epoch, position) after them."""
    ids = []
    while len(ids) < count:
      if position == self.num_prompts:
        epoch, position = epoch + 1, 0
      perm = self._permutation(epoch)
      step = min(count - len(ids), self.num_prompts - position)
      ids.extend(perm[position : position + step])
      position += step
    return np.asarray(ids, np.int32), epoch, position

  # -- one batch ---------------------------------------------------------------------------------

  def fill(self, policy, state: FillState, key) -> tuple[Groups, FillState, dict]:
    """Rolls out until the batch is full (or the mode stops); returns (groups, state, stats).

    `groups` holds at most `train_groups` groups; `stats` are the spec section 6 metrics of
    the rollout side.
    """
    start = time.perf_counter()
    cfg, g = self.config, self.sampler.group_size
    epoch, position = int(state.epoch), int(state.position)
    gstate = state.greso
    buffer: list[Groups] = []
    rolled: list[Groups] = []
    rollout_s = 0.0
    skipped_easy = skipped_hard = selected = 0
    skipped_levels = np.zeros(int(self.levels.max(initial=0)) + 1, np.int64)
    target, last_round, rounds = self._first_target(), False, 0
    while True:
      round_key = jax.random.fold_in(key, rounds)
      if cfg.mode == "greso":
        ids, epoch, position, gstate, counts = self._prefilter(
          gstate, epoch, position, target, round_key
        )
        skipped_easy += counts[0]
        skipped_hard += counts[1]
        selected += len(ids)
        skipped_levels += counts[2]
      else:
        ids, epoch, position = self._take(epoch, position, target)
      t0 = time.perf_counter()
      groups = self.sampler.rollout(policy, ids, self.pool, jax.random.fold_in(round_key, 1))
      rollout_s += time.perf_counter() - t0
      rolled.append(groups)
      informative = np.asarray(dynamic_sampling.informative(groups.rewards))
      if cfg.mode == "greso" and len(groups):
        gstate = self._record(gstate, groups)
      buffer.append(groups if cfg.mode == "grpo" else groups.take(np.flatnonzero(informative)))
      rounds += 1
      buffered = sum(len(b) for b in buffer)
      if cfg.mode == "grpo" or buffered >= cfg.train_groups or rounds >= cfg.max_rounds:
        break
      if cfg.mode == "greso":
        if last_round:
          break
        zero_var = 1.0 - float(np.mean(informative)) if len(groups) else 1.0
        target, last_round = greso.next_rollout_size(
          cfg.train_groups - buffered, zero_var, cfg.greso, g
        )
    if cfg.mode == "greso":
      gstate = _adapt(gstate, jnp.asarray(epoch > 0), cfg.greso)
    kept = concat(buffer, g, self.sampler.max_new_tokens)
    all_rolled = concat(rolled, g, self.sampler.max_new_tokens)
    batch = kept.take(slice(0, cfg.train_groups))
    new_state = FillState(
      epoch=jnp.asarray(epoch, jnp.int32), position=jnp.asarray(position, jnp.int32), greso=gstate
    )
    stats = self._stats(all_rolled, batch, len(kept), rounds, rollout_s, start)
    stats.update(
      {
        "greso/skipped_easy": skipped_easy,
        "greso/skipped_hard": skipped_hard,
        "greso/skip_rate": (skipped_easy + skipped_hard)
        / max(skipped_easy + skipped_hard + selected, 1),
        "greso/p_easy": float(gstate.p_easy),
        "greso/p_hard": float(gstate.p_hard),
        "data/epoch": epoch,
        "data/pool_position": position,
      }
    )
    if cfg.mode == "greso":
      for level in np.flatnonzero(skipped_levels):
        stats[f"greso/skipped_level{level}"] = int(skipped_levels[level])
    return batch, new_state, stats

  def _first_target(self) -> int:
    cfg = self.config
    return {"grpo": cfg.train_groups, "ds": cfg.gen_groups, "greso": cfg.greso.default_rollout}[
      cfg.mode
    ]

  def _prefilter(self, gstate, epoch, position, target, key):
    """Pulls chunks and skips prompts until `target` survive (spec 3.4, inner loop)."""
    cfg = self.config
    survivors, skipped_easy, skipped_hard = [], 0, 0
    skipped_levels = np.zeros(int(self.levels.max(initial=0)) + 1, np.int64)
    pulls, cap = 0, 10 * self.num_prompts  # quirk 8: a hard cap on pulls per round
    while len(survivors) < target:
      chunk, epoch, position = self._take(epoch, position, cfg.greso.chunk)
      if pulls * cfg.greso.chunk >= cap:  # take the chunk unfiltered
        survivors.extend(chunk)
        continue
      keep, easy, hard = (
        np.asarray(a) for a in _select(gstate, chunk, jax.random.fold_in(key, pulls), cfg.greso)
      )
      gstate = greso.record_skips(gstate, easy, hard)
      skipped_easy += int(easy.sum())
      skipped_hard += int(hard.sum())
      np.add.at(skipped_levels, self.levels[chunk[easy | hard]], 1)
      survivors.extend(chunk[keep])
      pulls += 1
    keep_count = len(survivors) - len(survivors) % cfg.data_multiple
    ids = np.asarray(survivors[:keep_count], np.int32)
    return ids, epoch, position, gstate, (skipped_easy, skipped_hard, skipped_levels)

  def _record(self, gstate, groups: Groups):
    """Streaks and step counters for every rolled-out group, in fixed-size calls."""
    rows = self.update_rows
    for start in range(0, len(groups), rows):
      part = groups.take(slice(start, start + rows))
      n = len(part)
      ids = np.zeros(rows, np.int32)
      rewards = np.zeros((rows, self.sampler.group_size), np.float32)
      ids[:n], rewards[:n] = part.prompt_ids, part.rewards
      valid = np.arange(rows) < n
      gstate = _update(gstate, ids, rewards, valid, n * self.sampler.group_size, self.config.greso)
    return gstate

  def _stats(self, rolled: Groups, batch: Groups, buffered: int, rounds, rollout_s, start):
    g = self.sampler.group_size
    n = max(len(rolled), 1)
    informative = np.asarray(dynamic_sampling.informative(rolled.rewards)) if len(rolled) else []
    easy, hard = (
      (np.asarray(a) for a in dynamic_sampling.group_outcomes(rolled.rewards))
      if len(rolled)
      else ([], [])
    )
    return {
      "rollout/responses": len(rolled) * g,
      "rollout/prompts": len(rolled),
      "rollout/rounds": rounds,
      "rollout/wasted": max(buffered - self.config.train_groups, 0) * g,
      "batch/zero_var_ratio": 1.0 - float(np.sum(informative)) / n,
      "batch/effective_ratio": float(np.sum(informative)) / n,
      "batch/easy_ratio": float(np.sum(easy)) / n,
      "batch/hard_ratio": float(np.sum(hard)) / n,
      "batch/fill_ratio": len(batch) / self.config.train_groups,
      "reward/mean": float(rolled.rewards.mean()) if len(rolled) else 0.0,
      "time/rollout_s": rollout_s,
      "time/fill_s": time.perf_counter() - start,
    }
