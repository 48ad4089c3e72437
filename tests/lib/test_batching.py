import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.lib.batching import switch_by_need

# Nested branches for "sum of the positive entries": exact when none / at most one / any are
# positive, the same answer wherever a cheaper branch applies.
BRANCHES = (
  lambda x: jnp.zeros((), x.dtype),
  lambda x: jnp.max(jnp.maximum(x, 0)),
  lambda x: jnp.sum(jnp.maximum(x, 0)),
)


def need(x):
  n_pos = jnp.sum(x > 0)
  return jnp.where(n_pos == 0, 0, jnp.where(n_pos == 1, 1, 2))


def summed(x):
  return switch_by_need(need(x), BRANCHES, x)


def test_unbatched_is_a_switch():
  for x in ([-1.0, -2.0], [3.0, -2.0], [3.0, 2.0]):
    x = jnp.asarray(x)
    assert summed(x) == jnp.sum(jnp.maximum(x, 0))


def test_vmapped_lanes_of_mixed_need_get_their_own_answer():
  xs = jnp.asarray([[-1.0, -2.0], [3.0, -2.0], [3.0, 2.0], [0.0, 5.0]])
  got = jax.jit(jax.vmap(summed))(xs)
  np.testing.assert_array_equal(got, jnp.sum(jnp.maximum(xs, 0), axis=1))


def test_vmapped_batch_runs_the_branch_of_its_neediest_lane():
  # Branches that are not nested expose which one ran: every lane gets the neediest lane's.
  tags = tuple(lambda x, k=k: jnp.full((), k, x.dtype) for k in range(3))
  xs = jnp.asarray([[-1.0, -2.0], [3.0, -2.0]])
  got = jax.vmap(lambda x: switch_by_need(need(x), tags, x))(xs)
  np.testing.assert_array_equal(got, [1.0, 1.0])
  # Unbatched operands and a batched need; and a shared (unbatched) need.
  got = jax.vmap(lambda n: switch_by_need(n, tags, jnp.zeros(2)))(jnp.asarray([0, 2]))
  np.testing.assert_array_equal(got, [2.0, 2.0])
  got = jax.vmap(lambda x: switch_by_need(1, tags, x))(xs)
  np.testing.assert_array_equal(got, [1.0, 1.0])
