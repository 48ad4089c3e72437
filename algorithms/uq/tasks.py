"""Question sets with their correctness rules, as `pipeline.Task`s (spec sections 6.1 and 9).

  tasks.nq_open("../shared/data/nq_open_efficientqa_dev.jsonl", size=100, seed=0)
  tasks.gsm8k("../shared/data/gsm8k_test.jsonl", size=100, seed=0)
  tasks.reasoning_gym("basic_arithmetic", size=100, seed=0, max_terms=2, max_digits=1)

A sample of `size` questions is drawn with `seed` (files) or generated with it (reasoning-gym).
"""

from __future__ import annotations

import numpy as np

from jaxsys.algorithms.uq import labels
from jaxsys.algorithms.uq.pipeline import MATH_SUFFIX, QA_SUFFIX, Task


def _sample(items, size, seed):
  if size is None or size >= len(items):
    return list(items)
  picked = np.sort(np.random.default_rng(seed).choice(len(items), size=size, replace=False))
  return [items[i] for i in picked]


def nq_open(path: str, size: int | None = 200, seed: int = 0, mode: str = "contains") -> Task:
  """NQ-open questions; an answer is right if it matches an alias (`labels.nq_correct`)."""
  items = _sample(labels.load_nq_open(path), size, seed)
  return Task(
    name="nq_open",
    questions=tuple(it.question for it in items),
    correct=lambda answer, i: labels.nq_correct(answer, items[i].aliases, mode=mode),
    prompt_suffix=QA_SUFFIX,
    max_new_tokens=32,
  )


def gsm8k(path: str, size: int | None = 200, seed: int = 0, max_new_tokens: int = 256) -> Task:
  """GSM8K test questions; right if the last number equals the gold answer."""
  items = _sample(labels.load_gsm8k(path), size, seed)
  return Task(
    name="gsm8k",
    questions=tuple(it.question for it in items),
    correct=lambda answer, i: labels.gsm8k_correct(answer, items[i].gold),
    prompt_suffix=MATH_SUFFIX,
    max_new_tokens=max_new_tokens,
  )


def reasoning_gym(
  name: str, size: int = 100, seed: int = 0, max_new_tokens=32, match="auto", **options
) -> Task:
  """A reasoning-gym procedural set.

  `match`: "scorer" judges with the dataset's own scorer (full credit only; the answer is the
  last <answer> tag or the first line, spec section 6.1); "numeric" compares the last number of
  the answer with the oracle's, as for GSM8K; "auto" (default) is numeric when the oracle answer
  is a number. [R] Small chat models write "5 - 3 = 2" or "The answer is 2.", which the scorers
  reject (0 of 40 right for SmolLM2-135M where the numeric rule finds 23).
  `options` go to the dataset config (e.g. basic_arithmetic's max_terms, max_digits).
  """
  import reasoning_gym as rg  # an optional extra; imported only when asked for

  if match not in ("auto", "numeric", "scorer"):
    raise ValueError(f"match={match!r}; use 'auto', 'numeric' or 'scorer'")
  dataset = rg.create_dataset(name, size=size, seed=seed, **options)
  entries = [dataset[i] for i in range(size)]

  def correct(answer, i):
    gold = labels.last_number(str(entries[i]["answer"]))
    numeric = match == "numeric" or (match == "auto" and gold is not None)
    if numeric:
      return gold is not None and labels.gsm8k_correct(answer, gold)
    return labels.reasoning_gym_correct(answer, entries[i], dataset)

  return Task(
    name=f"reasoning_gym:{name}",
    questions=tuple(e["question"] for e in entries),
    correct=correct,
    prompt_suffix=MATH_SUFFIX,
    max_new_tokens=max_new_tokens,
  )
