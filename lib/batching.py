"""Branching that stays cheap under vmap.

Under `jax.vmap` a `lax.switch` on a batched index becomes a select: every lane runs every
branch. When the branches are ordered by what they can handle (branch k gives the right answer
for every input whose cheapest sufficient branch is k or lower), a batch can instead run the one
branch that suffices for its neediest lane. `switch_by_need` does that.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp


def switch_by_need(need, branches: Sequence[Callable], *operands):
  """`lax.switch(need, branches, *operands)`; under vmap, one branch for the whole batch.

  `branches` must be nested by capability: branch k is correct for every input whose `need`
  is at most k (so the last is correct everywhere) and gives the same result as the cheaper
  ones where they apply. A vmapped call then runs branch `max(need)` on every lane instead of
  all branches on every lane. The branches take and return pytrees of arrays; they must not
  close over traced values (pass those as `operands`).
  """
  branches = tuple(branches)

  @jax.custom_batching.custom_vmap
  def run(need, *operands):
    return jax.lax.switch(need, branches, *operands)

  @run.def_vmap
  def _batched(axis_size, in_batched, need, *operands):
    need_batched, *ops_batched = in_batched
    top = jnp.max(need) if need_batched else need
    axes = tuple(jax.tree.map(lambda b: 0 if b else None, ops_batched))
    vmapped = [
      functools.partial(lambda f, *ops: jax.vmap(f, in_axes=axes, axis_size=axis_size)(*ops), f)
      for f in branches
    ]
    out = jax.lax.switch(top, vmapped, *operands)
    return out, jax.tree.map(lambda _: True, out)

  return run(jnp.asarray(need, jnp.int32), *operands)
