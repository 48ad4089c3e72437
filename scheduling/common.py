"""Pieces every serving policy uses: the Policy contract, visibility, the length bound.

A policy is a NamedTuple of pure functions (optax style). `plan` runs before `act` at every
step divisible by `plan_every` (0: never); the driver (lib/sim.py) calls it at those static
positions when each scan step is one iteration, so a costly re-plan (Tempo sorts there) is paid
once per period even inside a vmapped sweep.

`act` may be called once for a whole stretch of iterations (macro-steps, systems/llm_serving):
its action then stands for every iteration of a stretch in which only token counters move. A
policy whose own state would change its action sooner says so with `Action.horizon`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax.numpy as jnp

from jaxsys.systems import llm_serving as ls


class Policy(NamedTuple):
  init: Callable[[Any, ls.Obs], Any]  # (params, obs) -> policy state
  plan: Callable[[Any, ls.Obs, Any], Any]  # (pstate, obs, params) -> pstate
  act: Callable[[Any, Any, ls.Obs, Any], tuple[ls.Action, Any]]  # (key, pstate, obs, params)
  plan_every: int = 0  # iterations between re-plans; 0 = `plan` never runs


def no_plan(pstate, obs, params):
  del obs, params
  return pstate


def stateless(priority_fn, fixed_order: bool = False) -> Policy:
  """A policy that only orders the table: `priority_fn(obs, params) -> float64[n_slots]`.

  `fixed_order`: the priorities do not change while only token counters move (see
  `Action.fixed_order`); a queue order qualifies, anything read from progress or the clock not.
  """

  def act(key, pstate, obs, params):
    del key
    action = ask_all(obs, priority_fn(obs, params))
    return action._replace(fixed_order=jnp.asarray(fixed_order)), pstate

  return Policy(init=lambda params, obs: (), plan=no_plan, act=act)


def visible(slots):
  """Requests the scheduler knows about (not EMPTY; BLOCKED ones already look EMPTY)."""
  return (
    (slots.status == ls.WAITING) | (slots.status == ls.RUNNING) | (slots.status == ls.PREEMPTED)
  )


def queue_pos(slots):
  """seq relative to the oldest visible request: small integers, exact in float32."""
  vis = visible(slots)
  oldest = jnp.min(jnp.where(vis, slots.seq, jnp.iinfo(jnp.int32).max))
  return jnp.where(vis, slots.seq - oldest, 0).astype(jnp.float64)


def ask_all(obs: ls.Obs, priority, preempt=None) -> ls.Action:
  """Ask for the whole remaining prefill target (or one decode token) of every runnable slot."""
  sl = obs.slots
  ok = ls.runnable(sl, obs.t)
  if preempt is None:
    preempt = jnp.zeros_like(ok)
  else:
    ok = ok & ~preempt
  return ls.Action(
    grant=jnp.where(ok, ls.remaining(sl), 0).astype(jnp.int32),
    priority=priority.astype(jnp.float32),
    preempt=preempt,
    horizon=jnp.asarray(ls.NO_LIMIT, jnp.int32),
    fixed_order=jnp.asarray(False),
  )


@flax.struct.dataclass
class LengthBound:
  """Conservative output-length bound UB [R, after Tempo's quantile forest; serving.md 2.4].

  Table mode: UB = table[bucket(prompt), generated // mark_every], refined as tokens arrive.
  Given mode (`use_lengths`): UB = lengths[wid]: true lengths for the oracle, noisy ones for
  ablations. Either way UB >= generated + 1.
  """

  edges: jnp.ndarray  # f32[n_buckets - 1]: prompt-length bucket edges (log spaced)
  table: jnp.ndarray  # f32[n_buckets, n_marks]: quantile of the output length per cell
  lengths: jnp.ndarray  # i32[n_total] (given mode) or i32[1] (unused)
  mark_every: int = flax.struct.field(pytree_node=False, default=50)
  use_lengths: bool = flax.struct.field(pytree_node=False, default=False)

  @classmethod
  def from_table(cls, edges, table, mark_every=50):
    return cls(
      jnp.asarray(edges, jnp.float32),
      jnp.asarray(table, jnp.float32),
      jnp.zeros((1,), jnp.int32),
      mark_every,
      False,
    )

  @classmethod
  def from_lengths(cls, lengths):
    return cls(
      jnp.zeros((1,), jnp.float32),
      jnp.zeros((1, 1), jnp.float32),
      jnp.asarray(lengths, jnp.int32),
      50,
      True,
    )


def upper_bound(bound: LengthBound, slots):
  """UB per slot, float64."""
  g = slots.generated
  if bound.use_lengths:
    ub = bound.lengths[jnp.maximum(slots.wid, 0)].astype(jnp.float64)
  else:
    bucket = jnp.searchsorted(bound.edges, slots.prompt_len.astype(jnp.float32), side="right")
    mark = jnp.minimum(g // bound.mark_every, bound.table.shape[1] - 1)
    ub = bound.table[bucket, mark].astype(jnp.float64)
  return jnp.maximum(ub, (g + 1).astype(jnp.float64))
