"""lib/sharding.py: a jitted, vmapped sweep split over 8 fake CPU devices (tests/conftest.py)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxsys.lib import sharding


def _one_config(key, rate, table):
  """A small scan with a gather and a scatter, like a simulator lane."""
  x = jax.random.uniform(key, (16,), jnp.float64) * rate
  order = jnp.argsort(x)

  def body(acc, i):
    acc = acc.at[order[i % 16]].add(table[i % 4] * rate)
    return acc, jnp.max(acc)

  acc, peaks = jax.lax.scan(body, jnp.zeros(16), jnp.arange(32))
  return {"acc": acc, "peak": peaks.sum() + x[order[0]], "n": jnp.sum(x > 0.5)}


def _inputs(lanes=16):
  keys = jax.random.split(jax.random.key(0), lanes)
  rates = jnp.linspace(0.1, 2.0, lanes)
  return keys, rates, jnp.arange(4.0)


def test_eight_fake_devices():
  assert jax.device_count() == 8, "tests/conftest.py should force 8 host devices"
  assert jnp.zeros(()).dtype == jnp.float64, "tests/conftest.py should enable x64"


def test_mesh_defaults():
  mesh = sharding.make_mesh()
  assert mesh.axis_names == ("config",)
  assert mesh.shape == {"config": 8}
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
  mesh2 = sharding.make_mesh(("config", "model"), (4, 2))
  assert mesh2.shape == {"config": 4, "model": 2}
  with pytest.raises(ValueError, match=r"mesh shape \(3, 2\) needs 6 devices, have 8"):
    sharding.make_mesh(("config", "model"), (3, 2))
  with pytest.raises(ValueError, match="does not match axis_names"):
    sharding.make_mesh(("config",), (4, 2))


def test_sharded_sweep_equals_unsharded():
  keys, rates, table = _inputs()
  sweep = jax.vmap(_one_config, in_axes=(0, 0, None))
  expected = jax.jit(sweep)(keys, rates, table)

  mesh = sharding.make_mesh()
  lanes, shared = sharding.leading(mesh), sharding.replicated(mesh)
  assert lanes.spec == P("config") and shared.spec == P()
  run = jax.jit(sweep, in_shardings=(lanes, lanes, shared), out_shardings=lanes)
  keys_s, rates_s = sharding.shard_leading((keys, rates), mesh)
  assert len(keys_s.sharding.device_set) == 8
  out = run(keys_s, rates_s, sharding.replicate(table, mesh))

  chex.assert_trees_all_close(out, expected, rtol=1e-12)
  for leaf in jax.tree.leaves(out):
    assert leaf.sharding.spec == P("config")
    assert len(leaf.sharding.device_set) == 8
    assert len(leaf.addressable_shards) == 8
    assert leaf.addressable_shards[0].data.shape[0] == 2  # 16 lanes / 8 devices


def test_sharded_sweep_under_set_mesh():
  keys, rates, table = _inputs()
  sweep = jax.vmap(_one_config, in_axes=(0, 0, None))
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    out = jax.jit(sweep)(*sharding.shard_leading((keys, rates), mesh), table)
  expected = jax.jit(sweep)(keys, rates, table)
  np.testing.assert_allclose(out["acc"], expected["acc"], rtol=1e-12)
  assert len(out["acc"].sharding.device_set) == 8


def test_shard_leading_not_divisible():
  mesh = sharding.make_mesh()
  tree = {"a": jnp.zeros((16, 2)), "b": jnp.zeros((12,))}
  with pytest.raises(ValueError, match=r"leaf \['b'\] has leading size 12, not divisible by the 8"):
    sharding.shard_leading(tree, mesh)
  with pytest.raises(ValueError, match="is a scalar"):
    sharding.shard_leading({"s": jnp.float32(1.0)}, mesh)
  with pytest.raises(ValueError, match="axis 'model' is not in the mesh axes"):
    sharding.shard_leading(tree, mesh, axis="model")


def test_pad_leading():
  keys, rates, _ = _inputs(lanes=5)
  (keys_p, rates_p), size = sharding.pad_leading((keys, rates), 8)
  assert size == 5 and rates_p.shape == (8,) and keys_p.shape == (8,)
  np.testing.assert_array_equal(rates_p[:5], rates)
  np.testing.assert_array_equal(rates_p[5:], rates[-1])
  mesh = sharding.make_mesh()
  sharded = sharding.shard_leading((keys_p, rates_p), mesh)
  assert len(sharded[1].sharding.device_set) == 8
  with pytest.raises(ValueError, match="disagree on the leading size"):
    sharding.pad_leading((jnp.zeros(3), jnp.zeros(4)), 8)
