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
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

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
  """A fixed set of N problems; index i is prompt id i."""

  prompts: tuple[str, ...]  # N prompts, e.g. "37+48="
  answers: tuple[str, ...]  # N answers, e.g. "85"
  levels: np.ndarray  # [N] int32, difficulty level of each prompt

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
