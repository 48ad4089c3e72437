"""algorithms/rl/sft.py: batches and masks, the loss, a smoke warm start, the pass@G gate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsys.algorithms.rl import sft, tasks
from jaxsys.lib.models import llama

TOK = tasks.CharTokenizer()
SMOKE = tasks.policy_config("smoke")
STEPS = 150


@pytest.fixture(scope="module")
def level1_pool():
  return tasks.make_pool(512, seed=3, levels=(1,))


@pytest.fixture(scope="module")
def trained(level1_pool):
  """The smoke policy after STEPS warm-start steps on level 1, and its logged losses."""
  log = {}
  graphdef, state = sft.train_sft(
    SMOKE,
    level1_pool,
    TOK,
    steps=STEPS,
    levels=(1,),
    log_every=50,
    progress=lambda step, m: log.__setitem__(step, m["loss"]),
  )
  return graphdef, state, log


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


def test_encode_sft_masks_exactly_answer_and_eos():
  pool = tasks.make_pool(200, seed=0)
  tokens, mask = sft.encode_sft(pool, TOK)
  assert tokens.shape == mask.shape == (200, sft.SEQ_LEN)
  assert tokens.dtype == np.int32 and mask.dtype == bool
  for row, m, prompt, answer in zip(tokens, mask, pool.prompts, pool.answers, strict=True):
    start = 1 + len(prompt)
    end = start + len(answer) + 1
    assert row[:start].tolist() == TOK.encode(prompt)
    assert row[m].tolist() == TOK.encode_answer(answer)  # answer characters, then eos
    assert np.flatnonzero(m).tolist() == list(range(start, end))
    assert np.all(row[end:] == TOK.pad_id)


def test_encode_sft_too_long():
  with pytest.raises(ValueError, match="more than seq_len=8"):
    sft.encode_sft(tasks.make_pool(20, seed=0, levels=(4,)), TOK, seq_len=8)


def test_sft_batches_levels_epochs_and_seed():
  pool = tasks.make_pool(60, seed=1)
  batches = sft.sft_batches(pool, TOK, batch_size=8, seed=0, levels=(1, 2))
  tokens, mask = next(batches)
  assert tokens.shape == mask.shape == (8, sft.SEQ_LEN)
  # 24 problems on levels 1-2: three batches are one epoch, each problem exactly once.
  allowed, _ = sft.encode_sft(pool.subset(np.isin(pool.levels, [1, 2])), TOK)
  epoch = np.concatenate([tokens, next(batches)[0], next(batches)[0]])
  key = lambda rows: sorted(map(tuple, rows.tolist()))
  assert key(epoch) == key(allowed)
  again = next(sft.sft_batches(pool, TOK, batch_size=8, seed=0, levels=(1, 2)))
  np.testing.assert_array_equal(again[0], tokens)
  other = next(sft.sft_batches(pool, TOK, batch_size=8, seed=1, levels=(1, 2)))
  assert not np.array_equal(other[0], tokens)
  # A batch larger than the data still comes out full.
  big, _ = next(sft.sft_batches(pool, TOK, batch_size=100, seed=0, levels=(1,)))
  assert big.shape == (100, sft.SEQ_LEN)
  with pytest.raises(ValueError, match="no problems on levels"):
    sft.sft_batches(tasks.make_pool(10, seed=0, levels=(1,)), TOK, 4, 0, levels=(5,))
  with pytest.raises(ValueError, match="batch_size"):
    sft.sft_batches(pool, TOK, 0, 0)


# ------------------------------------------------------------------------------------------------
# Loss
# ------------------------------------------------------------------------------------------------


def test_sft_loss_matches_reference():
  model = llama.Llama(SMOKE, rngs=nnx.Rngs(jax.random.key(1)))
  tokens, mask = sft.encode_sft(tasks.make_pool(6, seed=2), TOK)
  loss_fn = jax.jit(sft.sft_loss)
  loss = float(loss_fn(model, jnp.asarray(tokens), jnp.asarray(mask)))
  logits = np.asarray(jax.jit(llama.full_forward)(model, jnp.asarray(tokens)), np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  terms = [
    -logp[b, t - 1, tokens[b, t]] for b in range(6) for t in range(1, sft.SEQ_LEN) if mask[b, t]
  ]
  assert loss == pytest.approx(np.mean(terms), rel=1e-5)
  # Padding after eos is neither a target nor context for the targets.
  tokens2 = tokens.copy()
  tokens2[~mask & (tokens == TOK.pad_id)] = 5
  loss2 = float(loss_fn(model, jnp.asarray(tokens2), jnp.asarray(mask)))
  assert loss2 == pytest.approx(loss, rel=1e-6)
  zero = loss_fn(model, jnp.asarray(tokens), jnp.zeros_like(jnp.asarray(mask)))
  assert float(zero) == 0.0
  with pytest.raises(ValueError, match=r"\[B, L\]"):
    loss_fn(model, jnp.asarray(tokens), jnp.asarray(mask[:, :-1]))


# ------------------------------------------------------------------------------------------------
# Training and the gate
# ------------------------------------------------------------------------------------------------


def test_train_sft_reduces_loss(trained):
  _, _, log = trained
  assert sorted(log) == [1, 50, 100, 150]
  assert all(np.isfinite(v) for v in log.values())
  assert log[STEPS] < 0.5 * log[1]


def test_train_sft_greedy_accuracy_rises(trained, level1_pool):
  graphdef, state, _ = trained
  probe = level1_pool.subset(np.arange(128))
  kwargs = dict(n=1, key=jax.random.key(0), temperature=0.0, chunk_size=128)
  before = sft.train_sft(SMOKE, level1_pool, TOK, steps=0, levels=(1,))
  acc0 = sft.sample_correct(*before, probe, TOK, **kwargs).mean()
  acc = sft.sample_correct(graphdef, state, probe, TOK, **kwargs).mean()
  # Chance is about 1/19 (answers 0..18); the untrained model is near 0.
  assert acc0 < 0.1
  assert acc > 0.5


def test_pass_at_groups_stats(trained, level1_pool):
  graphdef, state, _ = trained
  pool = tasks.make_pool(150, seed=9, levels=(1, 5))  # level 5 was never trained
  traces = llama._generate_jit._cache_size()
  stats = sft.pass_at_groups(
    graphdef, state, pool, TOK, group_size=4, key=jax.random.key(1), chunk_size=64
  )
  # Three chunks (64, 64, 22 padded to 64) share one compiled sampler.
  assert llama._generate_jit._cache_size() - traces <= 1
  counts = stats["counts"]
  assert counts.shape == (150,) and counts.dtype == np.int32
  assert counts.min() >= 0 and counts.max() <= 4
  total = stats["all_correct"] + stats["all_wrong"] + stats["mixed"]
  assert total == pytest.approx(1.0)
  assert stats["all_correct"] == pytest.approx(np.mean(counts == 4))
  assert stats["accuracy"] == pytest.approx(counts.mean() / 4)
  assert sorted(stats["per_level"]) == [1, 5]
  level1, level5 = stats["per_level"][1], stats["per_level"][5]
  assert level1["count"] == level5["count"] == 75
  assert level1["accuracy"] > 0.5 and level5["all_wrong"] > 0.9
  assert stats["gate"] == (stats["all_correct"] >= 0.15 and stats["all_wrong"] >= 0.15)
  # Same key, same samples.
  again = sft.pass_at_groups(
    graphdef, state, pool, TOK, group_size=4, key=jax.random.key(1), chunk_size=64
  )
  np.testing.assert_array_equal(again["counts"], counts)


def test_train_sft_errors(level1_pool):
  with pytest.raises(ValueError, match="no problems on levels"):
    sft.train_sft(SMOKE, level1_pool, TOK, steps=1, levels=(4,))
  with pytest.raises(ValueError, match="exceeds max_seq_len"):
    sft.train_sft(SMOKE, level1_pool, TOK, steps=1, seq_len=64)
  with pytest.raises(ValueError, match="steps"):
    sft.train_sft(SMOKE, level1_pool, TOK, steps=-1)
