"""The GRPO update: sharded over 8 fake CPU devices (dp and fsdp) it equals the one-device step;
it compiles once; a batch of padding groups changes nothing."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxsys.algorithms.rl import tasks, train_step
from jaxsys.algorithms.rl.rollout import RolloutBatch
from jaxsys.lib import sharding
from jaxsys.lib.models import llama

GROUPS, G, PROMPT, NEW = 8, 2, 8, 6


def _policy():
  model = llama.Llama(tasks.policy_config("smoke"), rngs=nnx.Rngs(jax.random.key(0)))
  return nnx.split(model)


def _batch(seed=0, real_groups=GROUPS) -> RolloutBatch:
  rng = np.random.default_rng(seed)
  rows, length = GROUPS * G, PROMPT + NEW
  vocab = tasks.CharTokenizer().vocab_size
  tokens = rng.integers(1, vocab, size=(rows, length)).astype(np.int32)
  pad = rng.integers(0, 4, size=rows).astype(np.int32)
  mask = np.zeros((rows, length - 1), bool)
  for r in range(rows):
    mask[r, PROMPT - 1 : PROMPT - 1 + rng.integers(1, NEW + 1)] = True
  return RolloutBatch(
    tokens=jnp.asarray(tokens),
    pad_lengths=jnp.asarray(pad),
    response_mask=jnp.asarray(mask),
    rewards=jnp.asarray(rng.integers(0, 2, size=(GROUPS, G)).astype(np.float32)),
    group_mask=jnp.asarray(np.arange(GROUPS) < real_groups),
  )


def _run(mesh=None, fsdp=False, steps=2):
  graphdef, params = _policy()
  # plain SGD: the parameters then differ by lr x the gradients' rounding (Adam would turn a
  # rounding-level change of a near-zero gradient into a full step)
  tx = optax.sgd(0.1)
  state = train_step.init_state(params, tx)
  step = train_step.make_train_step(
    graphdef, tx, train_step.LossConfig(), mesh=mesh, fsdp=fsdp, state=state
  )
  if mesh is not None:
    state = jax.device_put(state, train_step.state_shardings(state, mesh, fsdp))
  metrics = []
  for i in range(steps):
    batch = _batch(i)
    if mesh is not None:
      batch = sharding.shard_leading(batch, mesh)
    state, m = step(state, batch)
    metrics.append(jax.device_get(m))
  return jax.device_get(state), metrics


@pytest.mark.parametrize("fsdp", [False, True], ids=["dp", "fsdp"])
def test_sharded_step_equals_one_device(fsdp):
  assert jax.device_count() == 8
  mesh = sharding.make_mesh(("data",))
  single, m1 = _run()
  sharded, m8 = _run(mesh, fsdp)
  chex.assert_trees_all_close(sharded.params, single.params, atol=1e-6, rtol=1e-5)
  for a, b in zip(m1, m8, strict=True):
    for k in a:
      np.testing.assert_allclose(b[k], a[k], rtol=2e-5, atol=2e-6, err_msg=k)
  assert int(sharded.step) == 2
  assert float(m1[0]["opt/grad_norm"]) > 0


def test_fsdp_splits_the_large_parameters():
  mesh = sharding.make_mesh(("data",))
  graphdef, params = _policy()
  shardings = sharding.fsdp_shardings(params, mesh)
  split = [s.spec for s in jax.tree.leaves(shardings) if any(a is not None for a in s.spec)]
  assert split, "no parameter was sharded"
  gate = shardings["layers"][0]["mlp"]["gate_proj"]["kernel"].value  # [32, 64]
  assert gate.spec == jax.sharding.PartitionSpec(None, "data")  # its largest dim, 8 ways
  norm = shardings["layers"][0]["input_layernorm"]["scale"].value  # [32]: too small to split
  assert norm.spec == jax.sharding.PartitionSpec()


def test_step_compiles_once():
  graphdef, params = _policy()
  tx = train_step.make_optimizer(1e-3)
  state = train_step.init_state(params, tx)

  @chex.assert_max_traces(n=1)
  def body(state, batch):
    return train_step._train_step(graphdef, tx, train_step.LossConfig(), state, batch)

  step = jax.jit(body, donate_argnums=0)
  for i in range(3):
    state, _ = step(state, _batch(i))
  assert int(state.step) == 3


def test_a_batch_of_padding_groups_changes_nothing():
  graphdef, params = _policy()
  tx = train_step.make_optimizer(1e-2)
  state = train_step.init_state(params, tx)
  before = jax.device_get(state)
  step = train_step.make_train_step(graphdef, tx, train_step.LossConfig())
  after, metrics = step(state, _batch(0, real_groups=0))
  chex.assert_trees_all_equal(jax.device_get(after.params), before.params)
  assert int(after.step) == 0
  assert float(metrics["loss/total"]) == 0.0


def test_zero_variance_groups_give_no_gradient():
  graphdef, params = _policy()
  tx = train_step.make_optimizer(1e-2)
  state = train_step.init_state(params, tx)
  batch = _batch(0).replace(rewards=jnp.ones((GROUPS, G), jnp.float32))  # every group all-correct
  _, metrics = train_step.make_train_step(graphdef, tx, train_step.LossConfig())(state, batch)
  assert float(metrics["opt/grad_norm"]) == 0.0


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean"])
def test_micro_batches_give_the_same_step(aggregation):
  graphdef, params = _policy()
  tx = optax.sgd(0.1)
  batch = _batch(3, real_groups=6)
  out = {}
  for micro in (1, 4):
    config = train_step.LossConfig(aggregation=aggregation, micro_batches=micro)
    state = train_step.init_state(jax.tree.map(jnp.copy, params), tx)
    new, metrics = train_step.make_train_step(graphdef, tx, config)(state, batch)
    out[micro] = (jax.device_get(new.params), jax.device_get(metrics))
  chex.assert_trees_all_close(out[4][0], out[1][0], atol=1e-6, rtol=1e-5)
  for k, v in out[1][1].items():
    np.testing.assert_allclose(out[4][1][k], v, rtol=1e-5, atol=1e-6, err_msg=k)
  with pytest.raises(ValueError, match="do not split"):
    config = train_step.LossConfig(micro_batches=3)
    train_step.make_train_step(graphdef, tx, config)(train_step.init_state(params, tx), batch)
