"""Procedural arithmetic tasks, a character tokenizer, binary rewards and the policy config.

The laptop-scale reproduction (spec §8) trains a tiny Llama on generated arithmetic with five
difficulty levels, so that a fixed prompt pool holds easy, learnable and (for now) unsolvable
prompts at once: the mix that makes zero-variance groups, and hence GRESO's skipping, matter.

  tok = CharTokenizer()
  pool = make_pool(4096, seed=0)                  # training pool, uniform over levels 1-5
  eval_pool = make_pool(512, seed=1)              # held-out set from another seed
  ids = tok.encode(pool.prompts[0])               # [bos, '3', '7', '+', '4', '8', '=']
  r = rewards(["85", "84"], ["85", "85"])         # [1., 0.] float32
  config = policy_config("laptop")                # 4 layers, d 128, for `lib.models.llama.Llama`

Levels (spec §8; sampling ranges are ours [R]):
  1. a+b, a, b in 0..9                                   "3+4="      -> "7"
  2. a+b, a in 10..99, b in 0..9                          "37+4="     -> "41"
  3. a+b, a, b in 10..99 whose ones digits carry          "37+48="    -> "85"
  4. a±b±c, a, b, c in 10..99, each sign + or - (p 1/2)   "12-48+25=" -> "-11"
  5. a*b, a in 10..99, b in 2..9 or 10..99 (p 1/2 each)   "37*8="     -> "296"
Answers are written most significant digit first with a leading '-' when negative. A prompt is
at most 9 characters and an answer at most 4, so bos + prompt + answer + eos fits 15 tokens.
Pools may repeat a problem (level 1 has only 100 distinct ones); each pool slot is still its own
prompt id for GRESO's per-prompt state.

Text tasks for a pretrained chat model (spec §9; SmolLM2-135M-Instruct through `ChatTokenizer`):

  pool = reasoning_gym_pool("chain_sum", 64, seed=0, max_terms=3)  # answers: reasoning-gym entries
  pool = mixed_reasoning_gym_pool({"basic_arithmetic": {}, "gsm_symbolic": {}}, 64, seed=0)
  pool = gsm8k_pool("../shared/data/gsm8k_test.jsonl", 64, seed=0)  # answers: gold numbers (str)
  pool.reward("<answer>85</answer>", pool.answers[0])              # 1.0 or 0.0
  tok = ChatTokenizer(gguf_loader.load_smollm2()[1])                # chat-template prompts

A text pool carries its own `reward` (the loop's sampler uses it); the answer goes inside
<answer>...</answer>, extracted with reasoning-gym's `extract_answer`, and a response without the
tags scores 0 (spec §9) unless the pool is built with `lenient=True` [R].
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from jaxsys.algorithms.uq import labels
from jaxsys.lib.models.llama import LlamaConfig

LEVELS = (1, 2, 3, 4, 5)
_SPECIALS = ("<pad>", "<bos>", "<eos>")
_CHARS = tuple("0123456789+-*=")


class CharTokenizer:
  """Character vocabulary: pad 0, bos 1, eos 2, then digits 0-9 and '+', '-', '*', '='.

  `encode` gives a prompt (bos + characters), `encode_answer` a target (characters + eos),
  `decode` turns generated ids back into text (stops at eos, drops pad and bos).
  """

  pad_id = 0
  bos_id = 1
  eos_id = 2

  def __init__(self):
    self.symbols = _SPECIALS + _CHARS
    self._ids = {ch: i for i, ch in enumerate(self.symbols) if i >= len(_SPECIALS)}

  @property
  def vocab_size(self) -> int:
    return len(self.symbols)

  def _chars(self, text: str) -> list[int]:
    try:
      return [self._ids[ch] for ch in text]
    except KeyError as err:
      raise ValueError(
        f"CharTokenizer: unknown character {err.args[0]!r} in {text!r}; known: {''.join(_CHARS)!r}"
      ) from None

  def encode(self, text: str) -> list[int]:
    """Prompt ids: [bos] + one id per character. Raises ValueError on unknown characters."""
    return [self.bos_id, *self._chars(text)]

  def encode_answer(self, text: str) -> list[int]:
    """Target ids: one id per character + [eos]."""
    return [*self._chars(text), self.eos_id]

  def decode(self, ids: Sequence[int]) -> str:
    """Text of ids up to the first eos; pad and bos are dropped. Raises ValueError on bad ids."""
    out = []
    for i in ids:
      i = int(i)
      if not 0 <= i < self.vocab_size:
        raise ValueError(f"CharTokenizer: id {i} outside [0, {self.vocab_size})")
      if i == self.eos_id:
        break
      if i >= len(_SPECIALS):
        out.append(self.symbols[i])
    return "".join(out)

  def decode_batch(self, ids: np.ndarray) -> list[str]:
    """`decode` of every row of ids [B, T] int."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
      raise ValueError(f"CharTokenizer.decode_batch: ids must be [B, T], got shape {ids.shape}")
    return [self.decode(row) for row in ids.tolist()]


# ------------------------------------------------------------------------------------------------
# Problems and pools
# ------------------------------------------------------------------------------------------------


def arithmetic_problem(rng: np.random.Generator, level: int) -> tuple[str, str]:
  """One problem of difficulty `level` (1-5): (prompt like "37+48=", answer like "85")."""
  if level == 1:
    a, b = rng.integers(0, 10, size=2)
    expr = f"{a}+{b}"
  elif level == 2:
    a, b = rng.integers(10, 100), rng.integers(0, 10)
    expr = f"{a}+{b}"
  elif level == 3:
    # Rejection keeps the pair uniform over all two-digit pairs whose ones digits carry (45%).
    while True:
      a, b = rng.integers(10, 100, size=2)
      if a % 10 + b % 10 >= 10:
        break
    expr = f"{a}+{b}"
  elif level == 4:
    a, b, c = rng.integers(10, 100, size=3)
    op1, op2 = rng.choice(["+", "-"], size=2)
    expr = f"{a}{op1}{b}{op2}{c}"
  elif level == 5:
    a = rng.integers(10, 100)
    b = rng.integers(2, 10) if rng.random() < 0.5 else rng.integers(10, 100)
    expr = f"{a}*{b}"
  else:
    raise ValueError(f"arithmetic_problem: level must be one of {LEVELS}, got {level!r}")
  return f"{expr}=", str(_evaluate(expr))


def _evaluate(expr: str) -> int:
  """Value of a flat expression of non-negative integers with '+', '-' and at most one '*'."""
  if "*" in expr:
    a, b = expr.split("*")
    return int(a) * int(b)
  total, sign, digits = 0, 1, ""
  for ch in expr + "+":
    if ch.isdigit():
      digits += ch
    else:
      total += sign * int(digits)
      sign, digits = (1 if ch == "+" else -1), ""
  return total


class Pool(NamedTuple):
  """A fixed set of N problems; index i is prompt id i.

  `answers` hold whatever `reward` reads: answer strings for arithmetic and JSON-lines pools
  ("85"), the reasoning-gym entry dicts ({"question", "answer", "metadata"}) for
  `reasoning_gym_pool`, gold numbers as strings ("18") for `gsm8k_pool`.
  """

  prompts: tuple[str, ...]  # N prompts, e.g. "37+48="
  answers: tuple[Any, ...]  # N answers, e.g. "85" (see above)
  levels: np.ndarray  # [N] int32, difficulty level of each prompt (0: none)
  reward: Callable[[str, Any], float] | None = None  # (text, answer) -> float; None: `reward`

  @property
  def size(self) -> int:
    return len(self.prompts)

  def subset(self, index: np.ndarray) -> Pool:
    """The problems at `index` ([M] int or [N] bool), in that order."""
    index = np.arange(self.size)[np.asarray(index)]
    return Pool(
      prompts=tuple(self.prompts[i] for i in index),
      answers=tuple(self.answers[i] for i in index),
      levels=self.levels[index],
      reward=self.reward,
    )


def make_pool(num_prompts: int, seed: int, levels: Sequence[int] = LEVELS) -> Pool:
  """N problems, deterministic per seed, with level counts as equal as possible (differ by ≤ 1).

  Levels are assigned round-robin and then shuffled, so every level gets N // len(levels) or one
  more problem; the eval set is `make_pool(512, seed=<another seed>)`.
  """
  levels = tuple(int(v) for v in levels)
  if not levels or any(v not in LEVELS for v in levels):
    raise ValueError(f"make_pool: levels must be a non-empty subset of {LEVELS}, got {levels!r}")
  if not isinstance(num_prompts, int | np.integer) or num_prompts < 1:
    raise ValueError(f"make_pool: num_prompts must be a positive int, got {num_prompts!r}")
  rng = np.random.default_rng(seed)
  assigned = rng.permutation(np.resize(np.asarray(levels, np.int32), num_prompts))
  problems = [arithmetic_problem(rng, int(v)) for v in assigned]
  return Pool(
    prompts=tuple(p for p, _ in problems),
    answers=tuple(a for _, a in problems),
    levels=assigned.astype(np.int32),
  )


def load_pool(path: str) -> Pool:
  """A pool from a JSON-lines file: one {"prompt": ..., "answer": ..., "level": int} per line.

  "level" is optional (0 when absent). Raises FileNotFoundError naming the path, or ValueError
  naming the first bad line.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"dataset file {path!r} does not exist")
  prompts, answers, levels = [], [], []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        item = json.loads(line)
        prompts.append(str(item["prompt"]))
        answers.append(str(item["answer"]))
        levels.append(int(item.get("level", 0)))
      except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}:{number}: not a {{prompt, answer[, level]}} object ({e})") from e
  if not prompts:
    raise ValueError(f"dataset file {path!r} holds no problems")
  return Pool(tuple(prompts), tuple(answers), np.asarray(levels, np.int32))


# ------------------------------------------------------------------------------------------------
# Text tasks for a pretrained chat model (spec §9)
# ------------------------------------------------------------------------------------------------

ANSWER_INSTRUCTION = "\nPut your final answer inside <answer></answer> tags."


def _reasoning_gym():
  try:
    import reasoning_gym  # optional extra (`pip install -e .[uq]`), imported only when asked for
  except ImportError as error:
    raise ImportError(
      "reasoning-gym is not installed; run `pip install -e .[uq]` (or `pip install reasoning-gym`)"
    ) from error
  return reasoning_gym


def extract_tagged_answer(text: str) -> str | None:
  """The stripped content of the last <answer>...</answer> in text, or None without the tags.

  reasoning-gym's `extract_answer` (spec §9); unlike `uq.labels.extract_answer` there is no
  first-line fallback: the RL reward asks for the format.
  """
  return _reasoning_gym().utils.extract_answer(text)


@functools.cache
def _scorer(name: str):
  return _reasoning_gym().get_score_answer_fn(name)


def answer_tag_reward(
  text: str, entry: Mapping[str, Any], dataset: Any = None, *, lenient: bool = False
) -> float:
  """1.0 iff the <answer> content of a response gets full credit from the task's scorer, else 0.

  Args:
    text: decoded response.
    entry: a reasoning-gym entry ({"question", "answer", "metadata"}).
    dataset: the reasoning-gym dataset that made the entry (its `score_answer` is used); None
      looks the scorer up by `entry["metadata"]["source_dataset"]`.
    lenient: judge a response without tags too [R], as `uq.tasks.reasoning_gym` does: by its
      last number when the gold answer is a number (`uq.labels.gsm8k_correct`), else by the
      scorer on its first line (`uq.labels.extract_answer`). Off by default (spec §9).

  The scorers give partial credit (e.g. 0.01 for a wrong number); spec §4 "reward_mode binary"
  keeps only full credit (score >= 1).
  """
  answer = extract_tagged_answer(text)
  if answer is None:
    if not lenient:
      return 0.0
    gold = labels.last_number(str(entry["answer"]))
    if gold is not None:
      return float(labels.gsm8k_correct(text, gold))
    answer = labels.extract_answer(text)
  if dataset is None:
    try:
      score_answer = _scorer(entry["metadata"]["source_dataset"])
    except (KeyError, TypeError):
      raise ValueError(
        f"answer_tag_reward: entry has no metadata.source_dataset; pass its dataset ({entry!r})"
      ) from None
  else:
    score_answer = dataset.score_answer
  return float(float(score_answer(answer, entry)) >= 1.0)


def gsm8k_reward(text: str, gold: str | float, *, lenient: bool = False) -> float:
  """1.0 iff the last number inside <answer>...</answer> equals the gold number (GSM8K rule).

  lenient: a response without tags is judged by its last number [R] (default: it scores 0).
  """
  answer = extract_tagged_answer(text)
  if answer is None:
    answer = text if lenient else None
  return float(answer is not None and labels.gsm8k_correct(answer, float(gold)))


class _EntryReward:
  """`answer_tag_reward` with the datasets that made a pool's entries, by source name."""

  def __init__(self, datasets: Mapping[str, Any], lenient: bool = False):
    self.datasets = dict(datasets)
    self.lenient = lenient

  def __call__(self, text: str, entry: Mapping[str, Any]) -> float:
    name = entry.get("metadata", {}).get("source_dataset")
    return answer_tag_reward(text, entry, self.datasets.get(name), lenient=self.lenient)


def _check_size(fn: str, size):
  if not isinstance(size, int | np.integer) or size < 1:
    raise ValueError(f"{fn}: size must be a positive int, got {size!r}")


def _reasoning_gym_parts(name: str, size: int, seed: int, options: Mapping[str, Any]):
  rg = _reasoning_gym()
  try:
    dataset = rg.create_dataset(name, size=int(size), seed=int(seed), **dict(options))
  except (ValueError, TypeError) as error:
    raise ValueError(f"reasoning-gym task {name!r} with options {dict(options)}: {error}") from None
  entries = tuple(dataset[i] for i in range(int(size)))
  return dataset, entries


def reasoning_gym_pool(
  name: str, size: int, seed: int, *, level: int = 0, lenient: bool = False, **options
) -> Pool:
  """`size` problems of the reasoning-gym task `name`, generated with `seed`.

  Prompts are the questions followed by `ANSWER_INSTRUCTION`; `answers` are the entry dicts
  (the scorer needs their metadata); every level is `level` (0: none). `options` go to the
  task's config (e.g. basic_arithmetic's max_terms, max_digits). The pool's reward is
  `answer_tag_reward` with this dataset's scorer (and `lenient`).
  """
  _check_size("reasoning_gym_pool", size)
  dataset, entries = _reasoning_gym_parts(name, size, seed, options)
  return Pool(
    prompts=tuple(e["question"] + ANSWER_INSTRUCTION for e in entries),
    answers=entries,
    levels=np.full(int(size), level, np.int32),
    reward=_EntryReward({name: dataset}, lenient),
  )


def mixed_reasoning_gym_pool(
  tasks: Mapping[str, Mapping[str, Any]], size: int, seed: int, *, lenient: bool = False
) -> Pool:
  """`size` problems split as evenly as possible over reasoning-gym tasks, shuffled by `seed`.

  tasks: {name: options} in order; the level of a problem is the 1-based position of its task
  (so the loop's per-level metrics are per task; list them from easy to hard). Every task is
  generated with `seed`. A task given `size // len(tasks)` or one more problems.
  """
  _check_size("mixed_reasoning_gym_pool", size)
  if not tasks:
    raise ValueError("mixed_reasoning_gym_pool: tasks is empty")
  names = list(tasks)
  counts = [size // len(names) + (k < size % len(names)) for k in range(len(names))]
  if min(counts) < 1:
    raise ValueError(f"mixed_reasoning_gym_pool: size={size} < {len(names)} tasks")
  prompts, answers, levels, datasets = [], [], [], {}
  for k, (name, count) in enumerate(zip(names, counts, strict=True)):
    datasets[name], entries = _reasoning_gym_parts(name, count, seed, tasks[name])
    prompts += [e["question"] + ANSWER_INSTRUCTION for e in entries]
    answers += entries
    levels += [k + 1] * count
  order = np.random.default_rng(seed).permutation(size)
  return Pool(
    prompts=tuple(prompts[i] for i in order),
    answers=tuple(answers[i] for i in order),
    levels=np.asarray(levels, np.int32)[order],
    reward=_EntryReward(datasets, lenient),
  )


def _number_text(value: float) -> str:
  return str(int(value)) if float(value).is_integer() else repr(float(value))


def gsm8k_pool(path: str, size: int, seed: int, *, lenient: bool = False) -> Pool:
  """`size` GSM8K problems drawn without replacement (by `seed`) from a JSON-lines file.

  Rows are read by `uq.labels.load_gsm8k`; prompts are questions + `ANSWER_INSTRUCTION`,
  answers the gold numbers as strings ("18"), levels 0, reward `gsm8k_reward` (and `lenient`).
  """
  _check_size("gsm8k_pool", size)
  items = labels.load_gsm8k(path)
  if size > len(items):
    raise ValueError(f"gsm8k_pool: size={size} but {path} holds {len(items)} problems")
  picked = np.random.default_rng(seed).permutation(len(items))[:size]
  return Pool(
    prompts=tuple(items[i].question + ANSWER_INSTRUCTION for i in picked),
    answers=tuple(_number_text(items[i].gold) for i in picked),
    levels=np.zeros(size, np.int32),
    reward=functools.partial(gsm8k_reward, lenient=True) if lenient else gsm8k_reward,
  )


class ChatTokenizer:
  """A `lib.models.tokenizer.Tokenizer` with the interface the rollout sampler expects.

  `encode(prompt)` sends the prompt as one user message through the model's chat template
  (plain text when it has none), as `lib.llm.local.LocalBackend.prompt_ids` does, ending with
  the assistant header; `decode(ids)` stops at the first EOS and drops special tokens.

    tok = ChatTokenizer(gguf_loader.load_smollm2()[1])
    ids = tok.encode("What is 2 + 3?")   # <|im_start|>system ... <|im_start|>assistant\n
  """

  def __init__(self, tokenizer, *, system: str | None = None):
    if not tokenizer.eos_ids:
      raise ValueError("ChatTokenizer: the tokenizer has no EOS id, so generation never stops")
    self.tokenizer = tokenizer
    self.system = system  # None: the template's default system message
    self.eos_ids = tuple(int(i) for i in tokenizer.eos_ids)
    self.eos_id = self.eos_ids[0]
    self.pad_id = int(tokenizer.pad_id)
    self.bos_id = tokenizer.bos_id

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.vocab_size

  def encode(self, prompt: str) -> list[int]:
    """Prompt ids, ready for generation (chat header of the assistant's turn included)."""
    if self.tokenizer.chat_template is None:
      return self.tokenizer.encode(prompt)
    messages = [{"role": "user", "content": prompt}]
    if self.system is not None:
      messages.insert(0, {"role": "system", "content": self.system})
    return self.tokenizer.encode_chat(messages)

  def decode(self, ids: Sequence[int]) -> str:
    """Text of ids up to the first EOS (excluded); other special tokens are dropped."""
    ids = [int(i) for i in ids]
    stops = [k for k, i in enumerate(ids) if i in self.eos_ids]
    return self.tokenizer.decode(ids[: stops[0]] if stops else ids)

  def decode_batch(self, ids: np.ndarray) -> list[str]:
    """`decode` of every row of ids [B, T] int."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
      raise ValueError(f"ChatTokenizer.decode_batch: ids must be [B, T], got shape {ids.shape}")
    return [self.decode(row) for row in ids.tolist()]


# ------------------------------------------------------------------------------------------------
# Rewards
# ------------------------------------------------------------------------------------------------


def reward(response_text: str, answer: str) -> float:
  """Binary exact match: 1.0 iff the response (decoded, without eos) equals the answer.

  Spaces are stripped from both sides first; nothing else is normalised ("085" is wrong).
  """
  return float(response_text.replace(" ", "") == answer.replace(" ", ""))


def rewards(texts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
  """`reward` of each response: texts [B] and answers [B] (one per row) -> [B] float32.

  For G samples per prompt (rows b * G + i, as `llama.generate` orders them) pass
  `np.repeat(answers, G)`.
  """
  if len(texts) != len(answers):
    raise ValueError(f"rewards: {len(texts)} texts but {len(answers)} answers")
  return np.array([reward(t, a) for t, a in zip(texts, answers, strict=True)], np.float32)


# ------------------------------------------------------------------------------------------------
# Policy model
# ------------------------------------------------------------------------------------------------


def policy_config(size: str = "laptop") -> LlamaConfig:
  """Config of the tiny policy (`lib.models.llama.Llama`) over the `CharTokenizer` vocabulary.

  "laptop": 4 layers, d 128, 4 heads, SwiGLU 512 (~1.05M parameters; the spec's ~0.8M counts a
  plain 2-matrix MLP); "smoke": 2 layers, d 32, 2 heads, SwiGLU 64, for tests. Both use RoPE,
  tied embeddings and max_seq_len 32 (prompt bucket 16 + 8 new tokens fits).
  """
  vocab = CharTokenizer().vocab_size
  if size == "laptop":
    return LlamaConfig(
      vocab_size=vocab, dim=128, n_layers=4, n_heads=4, n_kv_heads=4, hidden_dim=512,
      max_seq_len=32, tie_embeddings=True,
    )  # fmt: skip
  if size == "smoke":
    return LlamaConfig(
      vocab_size=vocab, dim=32, n_layers=2, n_heads=2, n_kv_heads=2, hidden_dim=64,
      max_seq_len=32, tie_embeddings=True,
    )  # fmt: skip
  raise ValueError(f"policy_config: size must be 'laptop' or 'smoke', got {size!r}")
