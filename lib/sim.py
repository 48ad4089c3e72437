"""Simulation driver: `rollout` scans an environment under a policy; `sweep` vmaps rollouts.

The scan runs in chunks of `chunk_steps` iterations; between chunks the host checks whether
every request has finished (and logs progress). Iterations after the end are no-ops: nothing is
runnable and no arrival is pending, so the clock stands still. In a vmapped sweep the lanes stay
in lock step and the sweep ends when the slowest lane does.

Policies with a re-plan period (`policy.plan_every` > 0) get `plan` before every act whose step
(engine iteration) is a multiple of it. When each scan step is one iteration, the period is a
static inner scan, so re-planning costs nothing on other steps, also under vmap (where a
`lax.cond` would run both branches on every step). When one scan step may cover several
iterations (`env.config.macro_steps` > 1), the plan runs under a `lax.cond` on the step count,
and the action's `horizon` is capped so that no scan step runs past a re-plan point.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

try:
  from jaxsys.lib import sharding as sharding_lib
except ImportError:
  sharding_lib = None


def _macro(env):
  return getattr(env.config, "macro_steps", 1) > 1


def advance(env, policy, env_params, policy_params, workload, carry):
  """One scan step: re-plan if the step is a re-plan point (under a cond), act, step the env."""
  every = policy.plan_every
  due = carry[0].step % every == 0 if every > 0 else None
  return _act_and_step(env, policy, env_params, policy_params, workload, carry, due)


def _act_and_step(env, policy, env_params, policy_params, workload, carry, plan_due=None):
  state, pstate = carry
  obs = env.observe(state)
  if plan_due is not None:  # dynamic re-plan points (macro-steps)
    period = policy.plan_every
    pstate = jax.lax.cond(
      plan_due, lambda p: policy.plan(p, obs, policy_params), lambda p: p, pstate
    )
  key = jax.random.fold_in(state.key, state.step)
  action, pstate = policy.act(key, pstate, obs, policy_params)
  if plan_due is not None:
    action = action._replace(
      horizon=jnp.minimum(action.horizon, period - state.step % period).astype(jnp.int32)
    )
  return env.step(key, state, action, env_params, workload), pstate


def _chunk(env, policy, length, state, pstate, env_params, policy_params, workload):
  """`length` scan steps: re-plan periods (static positions) or single steps (dynamic)."""
  args = (env, policy, env_params, policy_params, workload)
  every = policy.plan_every

  def period(carry, _):
    state, pstate = carry
    pstate = policy.plan(pstate, env.observe(state), policy_params)
    one = lambda c, _: (_act_and_step(*args, c), None)  # noqa: E731
    return jax.lax.scan(one, (state, pstate), None, length=every)[0], None

  def dynamic(carry, _):
    return advance(*args, carry), None

  if every > 0 and not _macro(env):
    body, length = period, max(1, length // every)
  else:
    body = dynamic
  return jax.lax.scan(body, (state, pstate), None, length=length)[0]


def _init(env, policy, key, env_params, policy_params, workload):
  state = env.init(key, env_params, workload)
  return state, policy.init(policy_params, env.observe(state))


@functools.lru_cache(maxsize=64)
def _compiled(env, policy, chunk_steps, batched, workload_axis, mesh, params_axes=(0, 0)):
  """Jitted (init, chunk) for one env/policy pair; cached so repeated runs never retrace.

  `params_axes`: vmap in_axes of (env params, policy params), a pytree prefix with 0 on leaves
  that differ between lanes and None on leaves shared by all (see `_shared_switches`).
  """
  init = functools.partial(_init, env, policy)
  chunk = functools.partial(_chunk, env, policy, chunk_steps)
  if not batched:
    return jax.jit(init), jax.jit(chunk, donate_argnums=(0, 1))
  env_axes, policy_axes = params_axes
  init = jax.vmap(init, in_axes=(0, env_axes, policy_axes, workload_axis))
  chunk = jax.vmap(chunk, in_axes=(0, 0, env_axes, policy_axes, workload_axis))
  if mesh is None:
    return jax.jit(init), jax.jit(chunk, donate_argnums=(0, 1))
  lanes = sharding_lib.leading(mesh)
  shared = sharding_lib.replicated(mesh)
  by_axis = lambda axes: jax.tree.map(  # noqa: E731
    lambda a: shared if a is None else lanes, axes, is_leaf=lambda a: a is None
  )
  env_sh, policy_sh = by_axis(env_axes), by_axis(policy_axes)
  wl = lanes if workload_axis == 0 else shared
  init = jax.jit(init, in_shardings=(lanes, env_sh, policy_sh, wl), out_shardings=lanes)
  chunk = jax.jit(
    chunk,
    in_shardings=(lanes, lanes, env_sh, policy_sh, wl),
    out_shardings=lanes,
    donate_argnums=(0, 1),
  )
  return init, chunk


def _shared_switches(params):
  """(params with shared branch switches cut to one copy, vmap in_axes for params).

  A params class may name, in `branch_fields`, fields that only gate branches (say
  `noise_sigma`, whose `> 0` decides whether noise is drawn). When such a field is equal in every
  lane it enters the vmapped computation unbatched, so the `lax.cond` on it stays a real branch
  instead of running both sides in every lane. Other fields stay batched: the lanes' arithmetic
  then compiles the same however the lanes are split over devices.
  """
  axes = jax.tree.map(lambda _: 0, params)
  fields = getattr(type(params), "branch_fields", ())
  shared = {}
  for name in fields:
    host = np.asarray(getattr(params, name))
    if host.ndim == 1 and host.shape[0] > 0 and bool(np.all(host == host[0])):
      shared[name] = getattr(params, name)[0]
  if not shared:
    return params, axes
  return params.replace(**shared), axes.replace(**dict.fromkeys(shared))


def _run(init, chunk, args, n_total, max_steps, chunk_steps, log_every_s, label):
  key, env_params, policy_params, workload = args
  state, pstate = init(key, env_params, policy_params, workload)
  start = last_log = time.perf_counter()
  steps = 0
  while True:
    state, pstate = chunk(state, pstate, env_params, policy_params, workload)
    steps += chunk_steps
    finished = int(jnp.min(state.n_finished))
    now = time.perf_counter()
    if finished >= n_total:
      break
    if steps >= max_steps:
      logging.warning(
        "%s: stopped at %d steps with %d/%d finished", label, steps, finished, n_total
      )
      break
    if now - last_log > log_every_s:
      logging.info(
        "%s: %d steps, %d/%d requests finished, %.1f s",
        label,
        steps,
        finished,
        n_total,
        now - start,
      )
      last_log = now
  return state, pstate


def _simulate(
  env, policy, args, batched, workload_axis, mesh, max_steps, chunk_steps, log_every_s, axes=(0, 0)
):
  every = policy.plan_every
  if every > 0 and not _macro(env):  # whole re-plan periods per chunk
    chunk_steps = max(every, chunk_steps - chunk_steps % every)
  init, chunk = _compiled(env, policy, chunk_steps, batched, workload_axis, mesh, axes)
  label = "sweep" if batched else "rollout"
  return _run(init, chunk, args, args[-1].n_total, max_steps, chunk_steps, log_every_s, label)


def rollout(
  env,
  policy,
  env_params,
  policy_params,
  key,
  workload,
  *,
  max_steps: int = 50_000_000,
  chunk_steps: int = 4096,
  log_every_s: float = 30.0,
):
  """Runs one simulation until every request has finished. Returns (state, policy state)."""
  _check(env, workload)
  # On the device once: host arrays would be copied again at every chunk (O(n_total) each).
  args = jax.device_put((key, env_params, policy_params, workload))
  return _simulate(env, policy, args, False, None, None, max_steps, chunk_steps, log_every_s)


def sweep(
  env,
  policy,
  env_params,
  policy_params,
  keys,
  workload,
  *,
  workload_axis=None,
  mesh=None,
  max_steps: int = 50_000_000,
  chunk_steps: int = 1024,  # lanes that finish early idle to the end of the chunk
  log_every_s: float = 30.0,
):
  """Runs many configurations as one vmapped simulation.

  `env_params`, `policy_params` and `keys` carry a leading config axis; `workload` is shared
  (`workload_axis=None`) or stacked (`workload_axis=0`, same request count per lane). With a
  `mesh` (lib/sharding.make_mesh) the config axis is split over its devices; the result is the
  same as without one. Branch switches equal in every lane enter unbatched (`_shared_switches`).
  """
  _check(env, workload)
  env_params, env_axes = _shared_switches(env_params)
  policy_params, policy_axes = _shared_switches(policy_params)
  axes = (env_axes, policy_axes)
  if mesh is not None:
    lanes = sharding_lib.leading(mesh)
    shared = sharding_lib.replicated(mesh)
    keys = jax.device_put(keys, lanes)
    env_params, policy_params = (
      jax.tree.map(
        lambda a, x: jax.device_put(x, shared if a is None else lanes),
        ax,
        tree,
        is_leaf=lambda a: a is None,
      )
      for tree, ax in ((env_params, env_axes), (policy_params, policy_axes))
    )
    workload = jax.device_put(workload, lanes if workload_axis == 0 else shared)
  else:
    keys, env_params, policy_params, workload = jax.device_put(
      (keys, env_params, policy_params, workload)
    )
  args = (keys, env_params, policy_params, workload)
  return _simulate(
    env, policy, args, True, workload_axis, mesh, max_steps, chunk_steps, log_every_s, axes
  )


def _check(env, workload):
  """The env's host-side workload check, if it has one (init runs traced, where it cannot)."""
  check = getattr(env, "check", None)
  if check is not None:
    check(workload)


def stack(trees):
  """Stacks a list of equal-structure pytrees along a new leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)
