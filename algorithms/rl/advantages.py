"""Group-relative advantages for GRPO-style RL (spec rl_greso.md §1.1).

Each of P prompts has G sampled responses with scalar outcome rewards `r[P, G]`; an advantage
compares every response with the other responses of its own group, so no value network is needed.
The scalar advantage is later broadcast over the response tokens (outcome reward on the last token).

  A = grpo(rewards, group_mask)            # [P, G]: (r - mean) / (std + eps), std with ddof 1
  A = ADVANTAGES.get("rloo")(rewards, group_mask)

Estimators (all registered in `jaxsys.lib.registry.ADVANTAGES`, all callable as
`fn(rewards, group_mask)`):

  grpo    A_ij = (r_ij - mean_k r_ik) / (std_k r_ik + eps)      DeepSeekMath GRPO, verl, tunix
  drgrpo  A_ij = r_ij - mean_k r_ik                             Dr.GRPO (no std normalisation)
  rloo    A_ij = r_ij - mean_{k != j} r_ik                      leave-one-out baseline

Conventions (spec §1.1; [R] marks our decisions):
  * Padding groups (`group_mask` False) get advantage 0 whatever their rewards hold, so the
    static-shape batches of the host loop can carry dummy groups.
  * A zero-variance group (all rewards equal) gets exactly 0 from every estimator: the formulas
    give 0 mathematically, and we select 0 explicitly so float rounding of the mean (e.g. three
    rewards of 0.1) cannot leave a tiny non-zero advantage [R].
  * G >= 2 is required; verl returns r itself for a singleton group, we raise instead [R].
  * Integer or bool rewards are promoted to float32; float rewards keep their dtype.

All functions are pure and jittable; shapes and static arguments are checked always, reward
values (non-finite entries in real groups) only when the arrays are concrete.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.lib.registry import ADVANTAGES

__all__ = ["drgrpo", "grpo", "rloo"]


def _prepare(rewards, group_mask) -> tuple[jax.Array, jax.Array]:
  """Checks shapes and returns (rewards [P, G] float with padding zeroed, group_mask [P] bool)."""
  rewards = jnp.asarray(rewards)
  if not jnp.issubdtype(rewards.dtype, jnp.floating):
    rewards = rewards.astype(jnp.float32)
  if rewards.ndim != 2:
    raise ValueError(f"rewards must be [P, G], got shape {tuple(rewards.shape)}")
  num_prompts, group_size = rewards.shape
  if group_size < 2:
    raise ValueError(
      f"group-relative advantages need G >= 2 responses per prompt, got G = {group_size}"
    )
  group_mask = jnp.asarray(group_mask)
  if group_mask.shape != (num_prompts,):
    raise ValueError(
      f"group_mask must be [P] = [{num_prompts}], got shape {tuple(group_mask.shape)}"
    )
  group_mask = group_mask.astype(bool)
  if not isinstance(rewards, jax.core.Tracer) and not isinstance(group_mask, jax.core.Tracer):
    values, real = np.asarray(rewards), np.asarray(group_mask)
    bad = ~np.isfinite(values) & real[:, None]
    if bad.any():
      first = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(
        f"rewards of real groups must be finite; {int(bad.sum())} are not "
        f"(first at index {first}: {values[first]})"
      )
  # Zero the padding rows so whatever they hold (NaN included) cannot reach the arithmetic.
  rewards = jnp.where(group_mask[:, None], rewards, jnp.zeros((), rewards.dtype))
  return rewards, group_mask


def _finish(adv: jax.Array, rewards: jax.Array, group_mask: jax.Array) -> jax.Array:
  """Exact zeros for padding and zero-variance groups."""
  constant = jnp.max(rewards, axis=1) == jnp.min(rewards, axis=1)
  keep = group_mask & ~constant
  return jnp.where(keep[:, None], adv, jnp.zeros((), adv.dtype))


def grpo(rewards, group_mask, *, eps: float = 1e-6, std_ddof: int = 1) -> jax.Array:
  """GRPO advantages, standardised within each group.

  A_ij = (r_ij - mean_i) / (std_i + eps), mean_i and std_i over the G responses of prompt i.
  verl and tunix use the unbiased std (ddof 1, torch's default); ddof 0 gives the population std.

  Args:
    rewards: [P, G] rewards (float; int/bool promoted to float32).
    group_mask: [P] bool, False for padding groups.
    eps: added to the std (not to the variance), as verl does.
    std_ddof: static 0 or 1; delta degrees of freedom of the std.

  Returns:
    [P, G] advantages in the rewards' float dtype; 0 for padding and zero-variance groups.
    Example: r = [1, 0, 0, 1] gives ±0.866025 with ddof 1 and ±1.0 (up to eps) with ddof 0.
  """
  if isinstance(std_ddof, bool) or std_ddof not in (0, 1):
    raise ValueError(f"std_ddof must be 0 or 1, got {std_ddof!r}")
  if isinstance(eps, int | float) and not eps >= 0:
    raise ValueError(f"eps must be >= 0, got {eps!r}")
  rewards, group_mask = _prepare(rewards, group_mask)
  group_size = rewards.shape[1]
  mean = jnp.mean(rewards, axis=1, keepdims=True)
  centred = rewards - mean
  std = jnp.sqrt(jnp.sum(centred * centred, axis=1, keepdims=True) / (group_size - std_ddof))
  return _finish(centred / (std + eps), rewards, group_mask)


def drgrpo(rewards, group_mask) -> jax.Array:
  """Dr.GRPO advantages: A_ij = r_ij - mean_i (no std normalisation).

  Args:
    rewards: [P, G] rewards.
    group_mask: [P] bool, False for padding groups.

  Returns:
    [P, G] advantages; 0 for padding and zero-variance groups.
  """
  rewards, group_mask = _prepare(rewards, group_mask)
  return _finish(rewards - jnp.mean(rewards, axis=1, keepdims=True), rewards, group_mask)


def rloo(rewards, group_mask) -> jax.Array:
  """RLOO advantages: A_ij = r_ij - mean_{k != j} r_ik, the leave-one-out baseline.

  Equals G / (G - 1) times the Dr.GRPO advantage; written from the group sum so it costs O(G).

  Args:
    rewards: [P, G] rewards.
    group_mask: [P] bool, False for padding groups.

  Returns:
    [P, G] advantages; 0 for padding and zero-variance groups.
  """
  rewards, group_mask = _prepare(rewards, group_mask)
  group_size = rewards.shape[1]
  others = (jnp.sum(rewards, axis=1, keepdims=True) - rewards) / (group_size - 1)
  return _finish(rewards - others, rewards, group_mask)


ADVANTAGES.register("grpo", grpo)
ADVANTAGES.register("drgrpo", drgrpo)
ADVANTAGES.register("rloo", rloo)
