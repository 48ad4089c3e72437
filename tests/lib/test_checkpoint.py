"""lib/checkpoint.py: round trips (typed keys, flax.struct), restore-or-init, resume, keep."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.lib import checkpoint


@flax.struct.dataclass
class State:
  key: jax.Array  # typed PRNG key, ()
  keys: jax.Array  # typed PRNG keys, (3,)
  params: dict  # name -> float32 array
  step: jax.Array  # int64 ()
  size: int = flax.struct.field(pytree_node=False, default=4)  # static


def _init(seed=0):
  return State(
    key=jax.random.key(seed),
    keys=jax.random.split(jax.random.key(seed + 1), 3),
    params={"w": jnp.zeros((2, 3), jnp.float32), "b": jnp.arange(3, dtype=jnp.float64)},
    step=jnp.array(0, jnp.int64),
  )


def _advance(s):
  key, sub = jax.random.split(s.key)
  return s.replace(
    key=key,
    params=jax.tree.map(lambda p: p + jax.random.uniform(sub, p.shape, p.dtype), s.params),
    step=s.step + 1,
  )


def _assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  assert a.size == b.size
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert x.dtype == y.dtype and x.shape == y.shape
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_restore_or_init_when_empty(tmp_path):
  with checkpoint.Checkpointer(str(tmp_path / "ckpt")) as ckpt:
    state, step = ckpt.restore_or_init(_init)
    assert step == 0 and ckpt.latest_step() is None
    _assert_same(state, _init())


def test_round_trip_typed_keys_and_struct(tmp_path):
  state = _advance(_advance(_init(3)))
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    assert ckpt.save(2, state)
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    restored, step = ckpt.restore_or_init(lambda: _init(0))
  assert step == 2
  _assert_same(restored, state)
  assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
  # the restored key is usable and continues the same stream
  np.testing.assert_array_equal(
    jax.random.uniform(restored.key, (4,)), jax.random.uniform(state.key, (4,))
  )


def test_resume_latest_and_keep(tmp_path):
  directory = str(tmp_path / "ckpt")
  ckpt = checkpoint.Checkpointer(directory, save_every=2, keep=2)
  state, start = ckpt.restore_or_init(_init)
  saved, states = [], {}
  for step in range(start, 7):
    state = _advance(state)
    states[step + 1] = state
    saved.append(ckpt.save(step + 1, state))
  assert saved == [False, True, False, True, False, True, False]
  ckpt.wait()
  assert ckpt.all_steps() == [4, 6]  # keep=2 dropped step 2
  assert ckpt.save(7, state, force=True)  # force ignores the interval
  ckpt.close()

  ckpt = checkpoint.Checkpointer(directory, save_every=2, keep=2)
  resumed, step = ckpt.restore_or_init(_init)
  assert step == 7 and int(resumed.step) == 7
  _assert_same(resumed, state)
  _assert_same(ckpt.restore(jax.eval_shape(_init), step=6), states[6])
  assert not ckpt.save(7, resumed, force=True)  # already saved: skipped
  ckpt.close()


def test_restore_missing_raises(tmp_path):
  with (
    checkpoint.Checkpointer(str(tmp_path)) as ckpt,
    pytest.raises(FileNotFoundError, match="no checkpoint"),
  ):
    ckpt.restore(_init())


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="save_every=0"):
    checkpoint.Checkpointer(str(tmp_path), save_every=0)
  with pytest.raises(ValueError, match="keep=0"):
    checkpoint.Checkpointer(str(tmp_path), keep=0)


def test_restore_keeps_init_shardings(tmp_path):
  from jaxsys.lib import sharding

  mesh = sharding.make_mesh()
  init = jax.jit(
    lambda: {"x": jnp.arange(16.0), "keys": jax.random.split(jax.random.key(0), 16)},
    out_shardings=sharding.leading(mesh),
  )
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    ckpt.save(1, jax.tree.map(lambda x: x, init()))
    ckpt.wait()
    restored, step = ckpt.restore_or_init(init)
  assert step == 1
  for leaf in jax.tree.leaves(restored):
    assert leaf.sharding == sharding.leading(mesh)
    assert len(leaf.sharding.device_set) == jax.device_count()
