"""algorithms/rl/greso.py: spec §3 numbers, the full-trace reference step by step, properties."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsys.algorithms.rl import dynamic_sampling as ds
from jaxsys.algorithms.rl import greso
from jaxsys.algorithms.rl import greso_reference as ref_lib

select_jit = jax.jit(greso.select, static_argnames="config")
update_jit = jax.jit(greso.update, static_argnames="config")
adapt_jit = jax.jit(greso.adapt, static_argnames="config")
record_jit = jax.jit(greso.record_skips)
skip_prob_jit = jax.jit(greso.skip_probability, static_argnames="config")

CONFIG = greso.GresoConfig()
# Small fixed shapes for the property tests, so each jitted function compiles once.
N_SMALL, B_SMALL, G_SMALL = 16, 8, 4


def _state_with(config=CONFIG, n=N_SMALL, easy=None, hard=None, p_easy=None, p_hard=None):
  state = greso.init(n, config)
  return state.replace(
    easy_streak=state.easy_streak if easy is None else jnp.asarray(easy, jnp.int32),
    hard_streak=state.hard_streak if hard is None else jnp.asarray(hard, jnp.int32),
    p_easy=state.p_easy if p_easy is None else jnp.asarray(p_easy, jnp.float32),
    p_hard=state.p_hard if p_hard is None else jnp.asarray(p_hard, jnp.float32),
  )


def _ref_from(state: greso.GresoState, config) -> ref_lib.GresoReference:
  """A reference whose traces end in the given streaks (prefix: one mixed group)."""
  ref = ref_lib.GresoReference(state.num_prompts, config)
  ref.p_easy, ref.p_hard = float(state.p_easy), float(state.p_hard)
  easy, hard = np.asarray(state.easy_streak), np.asarray(state.hard_streak)
  for n in range(state.num_prompts):
    ref.traces[n] = [(0, (True, False))] + [(1, (True, True))] * int(easy[n])
    ref.traces[n] += [(1, (False, False))] * int(hard[n])
  return ref


# ------------------------------------------------------------------------------------------------
# Config.


def test_config_defaults_match_spec():
  c = greso.GresoConfig()
  assert (c.p_easy0, c.p_hard0, c.target_zero_variance) == (0.5, 0.5, 0.25)
  assert (c.delta_p, c.p_min, c.p_max, c.floor) == (0.01, 0.05, 0.95, 0.01)
  assert (c.chunk, c.default_rollout, c.min_rollout, c.beta) == (8, 48, 8, 1.25)
  assert c.correct_threshold == 0.95
  assert hash(c) == hash(greso.GresoConfig()) and c == greso.GresoConfig()
  with pytest.raises(dataclasses.FrozenInstanceError):
    c.p_min = 0.1


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"p_min": 0.0}, "0 < p_min <= p_max <= 1"),
    ({"p_min": 0.6, "p_max": 0.5}, "0 < p_min <= p_max <= 1"),
    ({"p_easy0": 0.99}, "p_easy0 must lie in"),
    ({"p_hard0": 0.01}, "p_hard0 must lie in"),
    ({"target_zero_variance": 1.5}, "target_zero_variance"),
    ({"delta_p": -0.01}, "delta_p must be >= 0"),
    ({"floor": 0.0}, "floor must lie in"),
    ({"chunk": 0}, "chunk must be >= 1"),
    ({"chunk": 8.0}, "chunk must be a Python int"),
    ({"min_rollout": 64}, "min_rollout \\(64\\) must be <= default_rollout"),
    ({"beta": 0.0}, "beta must be > 0"),
    ({"correct_threshold": float("nan")}, "correct_threshold must be finite"),
    ({"p_easy0": True}, "p_easy0 must be a Python number"),
  ],
)
def test_config_validation(kwargs, message):
  with pytest.raises(ValueError, match=message):
    greso.GresoConfig(**kwargs)


# ------------------------------------------------------------------------------------------------
# Spec examples (§3.2, §3.3, §3.4).


def test_init():
  state = greso.init(5, CONFIG)
  chex.assert_shape((state.easy_streak, state.hard_streak), (5,))
  assert state.easy_streak.dtype == jnp.int32 and state.p_easy.dtype == jnp.float32
  assert float(state.p_easy) == 0.5 and float(state.p_hard) == 0.5
  assert state.num_prompts == 5
  for name in ("n_rolled", "n_easy", "n_hard", "responses_total", "skipped_easy_total"):
    assert getattr(state, name).dtype == jnp.int32 and int(getattr(state, name)) == 0


def test_skip_probability_spec_example():
  streak = [0, 1, 2, 3, 7, 12, 0, 0, 0, 0]
  hard = [0, 0, 0, 0, 0, 0, 1, 2, 3, 7]
  state = _state_with(n=10, easy=streak, hard=hard)
  prob = np.asarray(skip_prob_jit(state, jnp.arange(10), CONFIG))
  assert prob.dtype == np.float32
  expected = [0.0, 0.5, 0.75, 0.875, 0.99, 0.99, 0.5, 0.75, 0.875, 0.99]
  np.testing.assert_allclose(prob, expected, atol=1e-6)
  # Each streak uses its own p.
  state = state.replace(p_hard=jnp.float32(0.9))
  prob = np.asarray(skip_prob_jit(state, jnp.array([1, 6, 7]), CONFIG))
  np.testing.assert_allclose(prob, [0.5, 0.1, 1 - 0.81], rtol=1e-5)


def test_adapt_spec_example():
  # easy ratio 0.10 >= 1/12 -> p_easy decreases; hard ratio 0.10 < 1/6 -> p_hard increases.
  state = greso.init(4, CONFIG).replace(n_rolled=jnp.int32(100), n_easy=jnp.int32(10))
  state = state.replace(n_hard=jnp.int32(10))
  out = adapt_jit(state, True, CONFIG)
  np.testing.assert_allclose([out.p_easy, out.p_hard], [0.49, 0.51], rtol=1e-6)
  assert int(out.n_rolled) == int(out.n_easy) == int(out.n_hard) == 0


def test_adapt_ratio_exactly_at_target_decreases():
  # 1/12 and 2/12 equal alpha/3 and 2 alpha/3: ">=" means both p's go down, as in the code.
  state = greso.init(4, CONFIG).replace(
    n_rolled=jnp.int32(12), n_easy=jnp.int32(1), n_hard=jnp.int32(2)
  )
  out = adapt_jit(state, True, CONFIG)
  np.testing.assert_allclose([out.p_easy, out.p_hard], [0.49, 0.49], rtol=1e-6)
  ref = ref_lib.GresoReference(4, CONFIG)
  ref.n_rolled, ref.n_easy, ref.n_hard = 12, 1, 2
  ref.adapt(True)
  np.testing.assert_allclose([ref.p_easy, ref.p_hard], [0.49, 0.49])


def test_adapt_disabled_or_empty_keeps_p_and_resets_counters():
  state = greso.init(4, CONFIG).replace(
    n_rolled=jnp.int32(10), n_easy=jnp.int32(5), n_hard=jnp.int32(0)
  )
  out = adapt_jit(state, False, CONFIG)
  assert float(out.p_easy) == 0.5 and float(out.p_hard) == 0.5 and int(out.n_rolled) == 0
  out = adapt_jit(greso.init(4, CONFIG), True, CONFIG)  # n_rolled = 0: no update
  assert float(out.p_easy) == 0.5 and float(out.p_hard) == 0.5


def test_adapt_clips_to_bounds():
  config = greso.GresoConfig(delta_p=0.3)
  state = greso.init(4, config).replace(n_rolled=jnp.int32(10), n_easy=jnp.int32(10))
  out = adapt_jit(state, True, config)  # easy: too many -> down; hard: none -> up
  np.testing.assert_allclose([out.p_easy, out.p_hard], [0.2, 0.8], rtol=1e-6)
  out = adapt_jit(out.replace(n_rolled=jnp.int32(10), n_easy=jnp.int32(10)), True, config)
  np.testing.assert_allclose([out.p_easy, out.p_hard], [0.05, 0.95], rtol=1e-6)


def test_next_rollout_size_spec_examples():
  config = greso.GresoConfig(default_rollout=384, min_rollout=64)
  assert greso.next_rollout_size(256, 0.5, config, 8) == (384, False)  # est 640
  assert greso.next_rollout_size(100, 0.5, config, 8) == (250, True)
  assert greso.next_rollout_size(12, 0.2, config, 8) == (64, True)  # est 18
  # z = 1 (every group zero-variance) would divide by zero in the code.
  assert greso.next_rollout_size(1, 1.0, config, 8) == (125, True)  # floor(1.25 / 0.01)
  assert greso.next_rollout_size(4, 1.0, config, 8) == (384, False)
  size, last = greso.next_rollout_size(100, 0.5, config, 8)
  assert type(size) is int and type(last) is bool


def test_next_rollout_size_matches_reference_on_a_grid():
  config = greso.GresoConfig(default_rollout=96, min_rollout=16)
  for missing in range(1, 70):
    for num in range(0, 21):
      z = num / 20
      for g in (4, 8):
        got = greso.next_rollout_size(missing, z, config, g)
        assert got == ref_lib.next_rollout_size(missing, z, config, g), (missing, z, g)


# ------------------------------------------------------------------------------------------------
# update / select / record_skips semantics.


def test_update_streak_transitions_and_counters():
  state = _state_with(n=6, easy=[0, 2, 0, 3, 0, 1], hard=[1, 0, 0, 0, 4, 0])
  ones, zeros, mixed = [1.0] * 4, [0.0] * 4, [1.0, 0.0, 0.0, 0.0]
  ids = jnp.array([0, 1, 2, 3, 4, 5])
  rewards = jnp.array([ones, ones, zeros, mixed, mixed, [np.nan] * 4], jnp.float32)
  valid = jnp.array([True, True, True, True, True, False])  # row 5 is padding (NaN ignored)
  out = update_jit(state, ids, rewards, valid, CONFIG, 40)
  np.testing.assert_array_equal(out.easy_streak, [1, 3, 0, 0, 0, 1])
  np.testing.assert_array_equal(out.hard_streak, [0, 0, 1, 0, 0, 0])
  assert (int(out.n_rolled), int(out.n_easy), int(out.n_hard)) == (5, 2, 1)
  assert int(out.responses_total) == 40
  out = update_jit(out, ids[:2], rewards[:2], jnp.array([True, True]), CONFIG, 8)
  assert (int(out.n_rolled), int(out.n_easy), int(out.responses_total)) == (7, 4, 48)


def test_update_duplicate_ids_apply_in_row_order():
  # A prompt pulled twice in one round (pool wrap) counts twice, as the code's trace does.
  state = _state_with(n=3, easy=[2, 0, 0], hard=[0, 0, 1])
  ones, zeros, mixed = [1.0] * 4, [0.0] * 4, [0.0, 1.0, 1.0, 1.0]
  ids = jnp.array([0, 2, 0, 1, 2, 1, 2])
  rewards = jnp.array([ones, zeros, ones, zeros, mixed, ones, zeros], jnp.float32)
  out = update_jit(state, ids, rewards, jnp.ones(7, bool), CONFIG, 28)
  # 0: 2 -> easy, easy = 4; 1: hard then easy = easy 1; 2: 1 -> hard, mixed, hard = hard 1.
  np.testing.assert_array_equal(out.easy_streak, [4, 1, 0])
  np.testing.assert_array_equal(out.hard_streak, [0, 0, 1])
  assert (int(out.n_rolled), int(out.n_easy), int(out.n_hard)) == (7, 3, 3)
  # An invalid copy does not count.
  valid = jnp.array([True, True, False, True, True, True, True])
  out = update_jit(state, ids, rewards, valid, CONFIG, 24)
  np.testing.assert_array_equal(out.easy_streak, [3, 1, 0])


def test_select_decides_by_uniform_draw():
  state = _state_with(n=8, easy=[0, 1, 2, 20, 0, 0, 0, 0], hard=[0, 0, 0, 0, 1, 3, 20, 0])
  ids = jnp.arange(8)
  for seed in range(5):
    key = jax.random.key(seed)
    keep, se, sh = select_jit(state, ids, key, CONFIG)
    u = np.asarray(greso.uniforms(key, 8))
    prob = np.asarray(skip_prob_jit(state, ids, CONFIG))
    np.testing.assert_array_equal(keep, ~(u < prob))
    np.testing.assert_array_equal(se, (u < prob) & (np.asarray(state.easy_streak) > 0))
    np.testing.assert_array_equal(sh, (u < prob) & (np.asarray(state.hard_streak) > 0))
    # Exactly one of kept / skipped-easy / skipped-hard per row.
    np.testing.assert_array_equal(np.asarray(keep, int) + np.asarray(se) + np.asarray(sh), 1)
    assert keep[0] and keep[7]  # no history


def test_uniform_draws_ignore_x64():
  key = jax.random.key(3)
  u64 = greso.uniforms(key, 16)
  with jax.enable_x64(False):
    u32 = greso.uniforms(key, 16)
  assert u64.dtype == u32.dtype == jnp.float32
  np.testing.assert_array_equal(u64, u32)


def test_record_skips():
  state = record_jit(greso.init(4, CONFIG), jnp.array([True, False, True]), jnp.array([0, 1, 1]))
  assert int(state.skipped_easy_total) == 2 and int(state.skipped_hard_total) == 2


# ------------------------------------------------------------------------------------------------
# Step-by-step agreement with the full-trace reference over a simulated training run (§3.4 loop).


def _simulate(seed, num_steps=40, b_train=32, group=8, max_rounds=16):
  config = greso.GresoConfig()  # laptop: chunk 8, B_default 48, B_min 8
  n = 64
  rng = np.random.default_rng(seed)
  # Success rates: 16 never solved, 16 always solved, 16 nearly always, 16 rarely to often.
  rates = np.concatenate([np.zeros(16), np.ones(16), np.full(16, 0.9), rng.uniform(0.05, 0.6, 16)])
  pad = config.default_rollout + config.chunk  # survivors never exceed target + chunk - 1
  state, ref = greso.init(n, config), ref_lib.GresoReference(n, config)
  key = jax.random.key(seed)
  perm, pos, epoch = rng.permutation(n), 0, 0
  log = {"sizes": [], "ref_sizes": [], "p": [], "rounds": [], "decisions": 0, "repeats": 0}

  def compare_streaks_and_probs():
    ids = jnp.arange(n)
    streaks = np.array([ref.streaks(i) for i in range(n)])
    np.testing.assert_array_equal(state.easy_streak, streaks[:, 0])
    np.testing.assert_array_equal(state.hard_streak, streaks[:, 1])
    assert not ((streaks[:, 0] > 0) & (streaks[:, 1] > 0)).any()
    ref_prob = [ref.skip_probability(i) for i in range(n)]
    np.testing.assert_allclose(skip_prob_jit(state, ids, config), ref_prob, atol=2e-6)

  for step in range(num_steps):
    step_key = jax.random.fold_in(key, step)
    buffer, target, last_round, rounds = 0, config.default_rollout, False, 0
    while True:
      survivors, chunk_index = [], 0
      while len(survivors) < target:
        if pos == n:
          perm, pos, epoch = rng.permutation(n), 0, epoch + 1
        chunk = perm[pos : pos + config.chunk]
        pos += config.chunk
        chunk_key = jax.random.fold_in(jax.random.fold_in(step_key, rounds), chunk_index)
        chunk_index += 1
        keep, se, sh = select_jit(state, jnp.asarray(chunk), chunk_key, config)
        r_keep, r_se, r_sh = ref.select(chunk, np.asarray(greso.uniforms(chunk_key, len(chunk))))
        np.testing.assert_array_equal(keep, r_keep)
        np.testing.assert_array_equal(se, r_se)
        np.testing.assert_array_equal(sh, r_sh)
        log["decisions"] += len(chunk)
        state = record_jit(state, se, sh)
        ref.record_skips(r_se, r_sh)
        survivors.extend(chunk[np.asarray(keep)].tolist())
      num = len(survivors)
      log["repeats"] += num - len(set(survivors))  # pool wrapped within the round
      rewards = (rng.random((num, group)) < rates[survivors][:, None]).astype(np.float32)
      ids = np.zeros(pad, np.int32)
      ids[:num] = survivors
      padded = np.zeros((pad, group), np.float32)
      padded[:num] = rewards
      valid = np.arange(pad) < num
      state = update_jit(state, ids, padded, valid, config, num * group)
      ref.update(epoch, survivors, rewards, [True] * num, num * group)
      compare_streaks_and_probs()
      informative = int(np.asarray(ds.informative(rewards)).sum())
      buffer += informative
      rounds += 1
      if buffer >= b_train or last_round or rounds == max_rounds:
        break
      z = 1.0 - informative / num
      target, last_round = greso.next_rollout_size(b_train - buffer, z, config, group)
      log["sizes"].append((target, last_round))
      log["ref_sizes"].append(ref_lib.next_rollout_size(b_train - buffer, z, config, group))
    assert (int(state.n_rolled), int(state.n_easy), int(state.n_hard)) == (
      ref.n_rolled,
      ref.n_easy,
      ref.n_hard,
    )
    enabled = epoch > 0
    state = adapt_jit(state, enabled, config)
    ref.adapt(enabled)
    np.testing.assert_allclose([state.p_easy, state.p_hard], [ref.p_easy, ref.p_hard], atol=1e-5)
    assert int(state.n_rolled) == 0 and ref.n_rolled == 0
    assert int(state.responses_total) == ref.responses_total
    assert int(state.skipped_easy_total) == ref.skipped_easy_total
    assert int(state.skipped_hard_total) == ref.skipped_hard_total
    log["p"].append((float(state.p_easy), float(state.p_hard)))
    log["rounds"].append(rounds)
  return state, ref, log


def test_matches_full_trace_reference_step_by_step():
  state, ref, log = _simulate(seed=0)
  assert log["sizes"] == log["ref_sizes"]
  # The run exercised every branch: skips of both kinds, several rounds, adaptive sizes below
  # B_default, last rounds, and p's that moved.
  assert int(state.skipped_easy_total) > 50 and int(state.skipped_hard_total) > 20
  assert max(log["rounds"]) >= 2
  assert any(size < 48 for size, _ in log["sizes"]) and any(last for _, last in log["sizes"])
  p_easy, p_hard = zip(*log["p"], strict=True)
  assert len(set(p_easy)) > 3 and len(set(p_hard)) > 3
  assert log["decisions"] > 2000 and log["repeats"] > 0


# ------------------------------------------------------------------------------------------------
# Property tests (spec §5).

_streak_pairs = st.lists(
  st.tuples(st.sampled_from(["easy", "hard", "none"]), st.integers(0, 40)),
  min_size=N_SMALL,
  max_size=N_SMALL,
)
_p = st.floats(0.05, 0.95)


def _split_streaks(pairs):
  easy = [s if kind == "easy" else 0 for kind, s in pairs]
  hard = [s if kind == "hard" else 0 for kind, s in pairs]
  return easy, hard


@settings(max_examples=60, deadline=None)
@given(_streak_pairs, _p, _p)
def test_skip_probability_in_bounds(pairs, p_easy, p_hard):
  easy, hard = _split_streaks(pairs)
  state = _state_with(easy=easy, hard=hard, p_easy=p_easy, p_hard=p_hard)
  prob = np.asarray(skip_prob_jit(state, jnp.arange(N_SMALL), CONFIG))
  assert (prob >= 0.0).all() and (prob <= 0.99 + 1e-6).all()
  no_history = (np.array(easy) == 0) & (np.array(hard) == 0)
  assert (prob[no_history] == 0.0).all()
  ref = _ref_from(state, CONFIG)
  np.testing.assert_allclose(prob, [ref.skip_probability(i) for i in range(N_SMALL)], atol=2e-6)


_update = st.tuples(
  st.lists(st.integers(0, N_SMALL - 1), min_size=B_SMALL, max_size=B_SMALL),  # repeats allowed
  st.lists(st.booleans(), min_size=B_SMALL * G_SMALL, max_size=B_SMALL * G_SMALL),
  st.lists(st.booleans(), min_size=B_SMALL, max_size=B_SMALL),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_update, max_size=6), st.integers(0, 2**31 - 1), _p, _p)
def test_compact_state_matches_full_trace(updates, seed, p_easy, p_hard):
  config = CONFIG
  state = _state_with(p_easy=p_easy, p_hard=p_hard)
  ref = _ref_from(state, config)
  rolled_ever = np.zeros(N_SMALL, bool)
  for epoch, (perm, flags, valid) in enumerate(updates):
    ids = np.array(perm[:B_SMALL], np.int32)
    rewards = np.array(flags, np.float32).reshape(B_SMALL, G_SMALL)
    valid = np.array(valid)
    state = update_jit(state, ids, rewards, valid, config, int(valid.sum()) * G_SMALL)
    ref.update(epoch, ids, rewards, valid, int(valid.sum()) * G_SMALL)
    rolled_ever[ids[valid]] = True
    easy, hard = np.asarray(state.easy_streak), np.asarray(state.hard_streak)
    assert not ((easy > 0) & (hard > 0)).any()
    np.testing.assert_array_equal(np.stack([easy, hard], 1), [ref.streaks(i) for i in range(16)])
    assert int(state.n_rolled) == ref.n_rolled and int(state.n_easy) == ref.n_easy
    assert int(state.n_hard) == ref.n_hard and int(state.responses_total) == ref.responses_total
  key = jax.random.key(seed)
  ids = jnp.arange(N_SMALL)
  keep, se, sh = select_jit(state, ids, key, config)
  u = np.asarray(greso.uniforms(key, N_SMALL))
  r_keep, r_se, r_sh = ref.select(np.arange(N_SMALL), u)
  # float32 vs float64 probabilities: compare away from exact ties.
  clear = np.abs(u - [ref.skip_probability(i) for i in range(N_SMALL)]) > 1e-5
  for a, b in ((keep, r_keep), (se, r_se), (sh, r_sh)):
    np.testing.assert_array_equal(np.asarray(a)[clear], b[clear])
  # Never-rolled prompts are never skipped, whatever the draw.
  assert np.asarray(keep)[~rolled_ever].all()
  # The same key gives the same selections.
  again = select_jit(state, ids, key, config)
  for a, b in zip((keep, se, sh), again, strict=True):
    np.testing.assert_array_equal(a, b)


@settings(max_examples=40, deadline=None)
@given(
  st.lists(
    st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 20), st.booleans()),
    max_size=30,
  ),
  st.floats(0.05, 0.95),
)
def test_p_stays_in_bounds(steps, p0):
  config = greso.GresoConfig(delta_p=0.1)
  state = greso.init(4, config).replace(p_easy=jnp.float32(p0), p_hard=jnp.float32(p0))
  ref = ref_lib.GresoReference(4, config)
  ref.p_easy = ref.p_hard = float(np.float32(p0))
  for rolled, easy, hard, enabled in steps:
    easy, hard = min(easy, rolled), min(hard, rolled - min(easy, rolled))
    state = state.replace(
      n_rolled=jnp.int32(rolled), n_easy=jnp.int32(easy), n_hard=jnp.int32(hard)
    )
    state = adapt_jit(state, enabled, config)
    ref.n_rolled, ref.n_easy, ref.n_hard = rolled, easy, hard
    ref.adapt(enabled)
    for p in (float(state.p_easy), float(state.p_hard)):
      assert config.p_min - 1e-7 <= p <= config.p_max + 1e-7
    np.testing.assert_allclose([state.p_easy, state.p_hard], [ref.p_easy, ref.p_hard], atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), _streak_pairs)
def test_never_rolled_prompts_are_never_skipped(seed, pairs):
  easy, hard = _split_streaks(pairs)
  state = _state_with(easy=easy, hard=hard, p_easy=0.05, p_hard=0.05)
  keep, se, sh = select_jit(state, jnp.arange(N_SMALL), jax.random.key(seed), CONFIG)
  no_history = (np.array(easy) == 0) & (np.array(hard) == 0)
  assert np.asarray(keep)[no_history].all()
  assert not np.asarray(se)[np.array(easy) == 0].any()
  assert not np.asarray(sh)[np.array(hard) == 0].any()


# ------------------------------------------------------------------------------------------------
# jit == eager, no retrace.


def _busy_state():
  state = _state_with(
    easy=[0, 1, 2, 3, 0, 0, 5, 0] * 2, hard=[0, 0, 0, 0, 1, 4, 0, 2] * 2, p_easy=0.3
  )
  return state.replace(n_rolled=jnp.int32(24), n_easy=jnp.int32(3), n_hard=jnp.int32(5))


def _update_args(seed):
  rng = np.random.default_rng(seed)
  ids = rng.permutation(N_SMALL)[:B_SMALL].astype(np.int32)
  rewards = (rng.random((B_SMALL, G_SMALL)) < 0.5).astype(np.float32)
  valid = rng.random(B_SMALL) < 0.8
  return ids, rewards, valid


def test_jit_matches_eager():
  state = _busy_state()
  ids = jnp.arange(B_SMALL, dtype=jnp.int32)
  for seed in range(3):
    key = jax.random.key(seed)
    chex.assert_trees_all_equal(
      select_jit(state, ids, key, CONFIG), greso.select(state, ids, key, CONFIG)
    )
    ids_u, rewards, valid = _update_args(seed)
    chex.assert_trees_all_equal(
      update_jit(state, ids_u, rewards, valid, CONFIG, 12),
      greso.update(state, ids_u, rewards, valid, CONFIG, 12),
    )
    for enabled in (True, False):
      chex.assert_trees_all_equal(
        adapt_jit(state, enabled, CONFIG), greso.adapt(state, enabled, CONFIG)
      )


def test_no_retrace_across_calls():
  sel = jax.jit(chex.assert_max_traces(greso.select, n=1), static_argnames="config")
  upd = jax.jit(chex.assert_max_traces(greso.update, n=1), static_argnames="config")
  adp = jax.jit(chex.assert_max_traces(greso.adapt, n=1), static_argnames="config")
  rec = jax.jit(chex.assert_max_traces(greso.record_skips, n=1))
  state = _busy_state()
  for seed in range(4):
    keep, se, sh = sel(state, jnp.arange(B_SMALL), jax.random.key(seed), config=CONFIG)
    state = rec(state, se, sh)
    ids, rewards, valid = _update_args(seed)
    state = upd(state, ids, rewards, valid, config=greso.GresoConfig(), num_responses=4 * seed)
    state = adp(state, seed % 2 == 0, config=CONFIG)


# ------------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize(
  "call, message",
  [
    (lambda s: greso.init(0, CONFIG), "num_prompts must be >= 1"),
    (lambda s: greso.init(4, {"chunk": 8}), "config must be a GresoConfig"),
    (lambda s: greso.skip_probability(s, jnp.array([0, 16]), CONFIG), "must lie in \\[0, N\\)"),
    (lambda s: greso.skip_probability(s, jnp.array([-1]), CONFIG), "row 0 holds -1"),
    (lambda s: greso.skip_probability(s, jnp.array([0.0]), CONFIG), "must be integers"),
    (lambda s: greso.skip_probability(s, jnp.zeros((2, 2), int), CONFIG), "must be \\[B\\]"),
    (
      lambda s: greso.select(s, jnp.arange(4), jax.random.PRNGKey(0), CONFIG),
      "typed key from jax.random.key",
    ),
    (
      lambda s: greso.select(s, jnp.arange(4), jax.random.split(jax.random.key(0)), CONFIG),
      "single key",
    ),
    (
      lambda s: greso.update(s, jnp.arange(4), jnp.ones((3, 4)), jnp.ones(4, bool), CONFIG, 1),
      "rewards must be \\[B, G\\]",
    ),
    (
      lambda s: greso.update(s, jnp.arange(4), jnp.ones((4, 4)), jnp.ones(4), CONFIG, 1),
      "valid must be bool",
    ),
    (
      lambda s: greso.update(s, jnp.arange(4), jnp.ones((4, 4)), jnp.ones(4, bool), CONFIG, 1.0),
      "num_responses must be an integer",
    ),
    (
      lambda s: greso.update(
        s, jnp.array([0, 1, 99]), jnp.ones((3, 2)), jnp.array([True, True, True]), CONFIG, 1
      ),
      "row 2 holds 99",
    ),
    (
      lambda s: greso.update(
        s, jnp.arange(2), jnp.array([[1.0, np.nan], [0.0, 0.0]]), jnp.ones(2, bool), CONFIG, 1
      ),
      "rewards must be finite",
    ),
    (lambda s: greso.adapt(s, jnp.ones(2, bool), CONFIG), "enabled must be a bool scalar"),
    (lambda s: greso.adapt(s, 1, CONFIG), "enabled must be a bool scalar"),
    (lambda s: greso.record_skips(s, jnp.ones(3, bool), jnp.ones(2, bool)), "must both be \\[B\\]"),
    (lambda s: greso.next_rollout_size(0, 0.5, CONFIG, 8), "missing_prompts must be >= 1"),
    (lambda s: greso.next_rollout_size(4, 1.5, CONFIG, 8), "zero_var_ratio must lie in"),
    (lambda s: greso.next_rollout_size(4, 0.5, CONFIG, 0), "group_size must be >= 1"),
    (lambda s: greso.next_rollout_size(4.0, 0.5, CONFIG, 8), "missing_prompts must be a Python"),
  ],
)
def test_errors(call, message):
  with pytest.raises(ValueError, match=message):
    call(greso.init(N_SMALL, CONFIG))


def test_padding_rows_may_hold_anything():
  # Out-of-range ids and NaN rewards in invalid rows are fine: they are padding.
  state = greso.init(4, CONFIG)
  out = greso.update(
    state,
    jnp.array([0, -7, 99]),
    jnp.array([[1.0, 1.0], [np.nan, 0.0], [0.0, 0.0]]),
    jnp.array([True, False, False]),
    CONFIG,
    2,
  )
  np.testing.assert_array_equal(out.easy_streak, [1, 0, 0, 0])
  np.testing.assert_array_equal(out.hard_streak, [0, 0, 0, 0])
  assert int(out.n_rolled) == 1


def test_update_rejects_matrix_ids_first():
  state = greso.init(N_SMALL, CONFIG)
  with pytest.raises(ValueError, match="prompt_ids must be \\[B\\]"):
    greso.update(state, jnp.zeros((2, 2), int), jnp.ones((2, 4)), jnp.ones(2, bool), CONFIG, 1)
