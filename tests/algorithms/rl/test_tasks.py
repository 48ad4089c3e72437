"""algorithms/rl/tasks.py: tokenizer, problem generator, pools, rewards, policy configs."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsys.algorithms.rl import tasks
from jaxsys.lib.models.llama import LlamaConfig

TOK = tasks.CharTokenizer()

# Prompt grammar per level (answers are checked by evaluating the prompt separately).
PATTERNS = {
  1: r"[0-9]\+[0-9]=",
  2: r"[1-9][0-9]\+[0-9]=",
  3: r"[1-9][0-9]\+[1-9][0-9]=",
  4: r"[1-9][0-9][+-][1-9][0-9][+-][1-9][0-9]=",
  5: r"[1-9][0-9]\*([2-9]|[1-9][0-9])=",
}


# ------------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------------


def test_tokenizer_ids_and_vocab():
  assert (TOK.pad_id, TOK.bos_id, TOK.eos_id) == (0, 1, 2)
  assert TOK.vocab_size == 17
  ids = TOK.encode("0123456789+-*=")
  assert ids[0] == TOK.bos_id
  assert sorted(ids[1:]) == list(range(3, 17))


@given(st.text(alphabet="0123456789+-*=", max_size=12))
@settings(max_examples=50, deadline=None)
def test_tokenizer_round_trip(text):
  assert TOK.decode(TOK.encode(text)) == text
  assert TOK.decode(TOK.encode_answer(text)) == text
  assert TOK.encode_answer(text)[-1] == TOK.eos_id


def test_decode_stops_at_eos_and_drops_specials():
  ids = [TOK.bos_id, *TOK.encode("12")[1:], TOK.pad_id, *TOK.encode("3")[1:], TOK.eos_id]
  ids += TOK.encode("99")[1:]
  assert TOK.decode(ids) == "123"
  assert TOK.decode([TOK.eos_id, *TOK.encode("5")[1:]]) == ""
  rows = np.array([TOK.encode_answer("85") + [0], TOK.encode_answer("-3") + [0]])
  assert TOK.decode_batch(rows) == ["85", "-3"]


def test_tokenizer_errors():
  with pytest.raises(ValueError, match="unknown character 'x'"):
    TOK.encode("3x4=")
  with pytest.raises(ValueError, match="unknown character ' '"):
    TOK.encode_answer("1 2")
  with pytest.raises(ValueError, match="outside"):
    TOK.decode([3, 17])
  with pytest.raises(ValueError, match="outside"):
    TOK.decode([-1])
  with pytest.raises(ValueError, match=r"\[B, T\]"):
    TOK.decode_batch(np.zeros((3,), np.int32))


# ------------------------------------------------------------------------------------------------
# Problems and pools
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", tasks.LEVELS)
def test_problems_well_formed_and_correct(level):
  rng = np.random.default_rng(level)
  for _ in range(300):
    prompt, answer = tasks.arithmetic_problem(rng, level)
    assert re.fullmatch(PATTERNS[level], prompt), prompt
    assert str(eval(prompt[:-1])) == answer  # the prompt is a Python expression
    assert re.fullmatch(r"-?(0|[1-9][0-9]*)", answer)
    if level == 3:
      a, b = (int(x) for x in prompt[:-1].split("+"))
      assert a % 10 + b % 10 >= 10  # ones digits carry
    # bos + prompt + answer + eos fits the static SFT length and the generation budget.
    assert len(prompt) <= 9 and len(answer) <= 4
    TOK.encode(prompt)
    TOK.encode_answer(answer)


def test_levels_cover_their_ranges():
  rng = np.random.default_rng(0)
  level4 = [tasks.arithmetic_problem(rng, 4) for _ in range(400)]
  assert any(a.startswith("-") for _, a in level4)  # negative results occur
  assert {p[2] for p, _ in level4} == {"+", "-"} and {p[5] for p, _ in level4} == {"+", "-"}
  level5 = [tasks.arithmetic_problem(rng, 5)[0] for _ in range(400)]
  widths = {len(p.split("*")[1]) - 1 for p in level5}
  assert widths == {1, 2}
  level1 = {tasks.arithmetic_problem(rng, 1)[0] for _ in range(2000)}
  assert len(level1) == 100  # every a+b with one-digit a, b


def test_bad_level():
  with pytest.raises(ValueError, match="level must be one of"):
    tasks.arithmetic_problem(np.random.default_rng(0), 6)
  with pytest.raises(ValueError, match="subset"):
    tasks.make_pool(10, seed=0, levels=(0, 1))
  with pytest.raises(ValueError, match="positive int"):
    tasks.make_pool(0, seed=0)


def test_pool_deterministic_and_uniform():
  a, b = tasks.make_pool(1003, seed=7), tasks.make_pool(1003, seed=7)
  assert a.prompts == b.prompts and a.answers == b.answers
  np.testing.assert_array_equal(a.levels, b.levels)
  assert a.levels.dtype == np.int32 and a.levels.shape == (1003,)
  counts = np.bincount(a.levels, minlength=6)[1:]
  assert counts.max() - counts.min() <= 1 and counts.sum() == 1003
  # The levels are shuffled, not in blocks.
  assert len(set(a.levels[:20].tolist())) > 1
  c = tasks.make_pool(1003, seed=8)
  assert c.prompts != a.prompts
  for prompt, answer, level in zip(a.prompts, a.answers, a.levels, strict=True):
    assert re.fullmatch(PATTERNS[int(level)], prompt)
    assert str(eval(prompt[:-1])) == answer


def test_pool_levels_subset_and_subset_method():
  pool = tasks.make_pool(30, seed=0, levels=(2, 4))
  assert set(pool.levels.tolist()) == {2, 4} and np.sum(pool.levels == 2) == 15
  sub = pool.subset(pool.levels == 4)
  assert sub.size == 15 and set(sub.levels.tolist()) == {4}
  picked = pool.subset(np.array([3, 0]))
  assert picked.prompts == (pool.prompts[3], pool.prompts[0])


# ------------------------------------------------------------------------------------------------
# Rewards and configs
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "text, answer, expected",
  [
    ("85", "85", 1.0),
    (" 8 5 ", "85", 1.0),
    ("-12", "-12", 1.0),
    ("12", "-12", 0.0),
    ("085", "85", 0.0),
    ("851", "85", 0.0),
    ("", "0", 0.0),
    ("8", "85", 0.0),
  ],
)
def test_reward_exact_match(text, answer, expected):
  assert tasks.reward(text, answer) == expected


def test_rewards_vectorised():
  r = tasks.rewards(["7", "8", "-1", ""], np.repeat(["7", "-1"], 2))
  assert r.dtype == np.float32
  np.testing.assert_array_equal(r, [1, 0, 1, 0])
  with pytest.raises(ValueError, match="3 texts but 2 answers"):
    tasks.rewards(["1", "2", "3"], ["1", "2"])


def test_policy_configs():
  laptop = tasks.policy_config("laptop")
  assert isinstance(laptop, LlamaConfig)
  assert (laptop.n_layers, laptop.dim, laptop.n_heads, laptop.n_kv_heads) == (4, 128, 4, 4)
  assert (laptop.hidden_dim, laptop.max_seq_len, laptop.tie_embeddings) == (512, 32, True)
  assert laptop.vocab_size == TOK.vocab_size
  smoke = tasks.policy_config("smoke")
  assert (smoke.n_layers, smoke.dim, smoke.n_heads, smoke.hidden_dim) == (2, 32, 2, 64)
  assert smoke.vocab_size == TOK.vocab_size and smoke.max_seq_len == 32
  with pytest.raises(ValueError, match="'laptop' or 'smoke'"):
    tasks.policy_config("big")
