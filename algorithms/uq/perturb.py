"""Input perturbers for Inv-Entropy: each returns exactly n rewordings of every question.

`Per(S_x0)` must give the same count n for every question because Inv-Entropy's scale depends
on it (spec section 1, step 1): `exactly_n` pads by random duplication or subsamples, and a
question with no valid rewording gets its original repeated and a `degenerate` flag.

Perturbers (registered in PERTURBERS by name):
- `gaap`: the genetic algorithm of algorithms/uq/gaap.py (the paper's proposal).
- `llm_paraphrase`: paraphrases sampled from any backend (a local JAX model or an
  OpenAI-compatible server) with the prompt below [R: the paper used ChatGPT and does not print
  its prompt].
- `template`: fixed rewordings, for smoke tests only (no model, no randomness beyond the order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from jaxsys.algorithms.uq import gaap as gaap_lib
from jaxsys.algorithms.uq import labels
from jaxsys.lib.registry import Registry

PERTURBERS = Registry("perturber")

PARAPHRASE_PROMPT = (
  "Rewrite the following question in different words without changing its meaning or any "
  "number in it. Reply with the rewritten question only.\nQuestion: {question}"
)
TEMPLATES = (
  "Question: {q}",
  "Please answer: {q}",
  "{q} Answer briefly.",
  "I would like to know: {q}",
  "Can you tell me this? {q}",
  "Quick question: {q}",
  "Answer the following. {q}",
  "Here is a question for you: {q}",
  "Tell me: {q}",
)


class Perturbed(NamedTuple):
  texts: list[list[str]]  # [Q][n] rewordings
  degenerate: list[bool]  # [Q] no valid rewording: the original repeated


def question_rng(key, question_id: int) -> np.random.Generator:
  """A numpy Generator for host-side randomness, seeded from fold_in(key, question_id)."""
  data = jax.random.key_data(jax.random.fold_in(key, question_id))
  return np.random.default_rng(np.asarray(data, np.uint32).ravel().tolist())


def exactly_n(original: str, candidates: Sequence[str], n: int, rng) -> tuple[list[str], bool]:
  """n rewordings from `candidates`: blanks and copies of the original dropped, then random
  duplication (too few) or sampling without replacement (too many), as the paper pads."""
  valid = [c.strip() for c in candidates]
  valid = list(dict.fromkeys(c for c in valid if c and c != original.strip()))
  if not valid:
    return [original] * n, True
  if len(valid) >= n:
    return [valid[i] for i in np.sort(rng.choice(len(valid), size=n, replace=False))], False
  extra = [valid[i] for i in rng.integers(0, len(valid), size=n - len(valid))]
  return valid + extra, False


@PERTURBERS.register("template")
def template(questions: Sequence[str], n: int, key) -> Perturbed:
  """Fixed rewordings (smoke tests): the first n templates in a per-question random order."""
  if n > len(TEMPLATES):
    raise ValueError(f"template perturber has {len(TEMPLATES)} templates, asked for n={n}")
  out = []
  for q_id, question in enumerate(questions):
    order = question_rng(key, q_id).permutation(len(TEMPLATES))[:n]
    out.append([TEMPLATES[i].format(q=question) for i in order])
  return Perturbed(out, [False] * len(questions))


@PERTURBERS.register("llm_paraphrase")
def llm_paraphrase(
  questions: Sequence[str],
  n: int,
  key,
  *,
  backend,
  temperature: float = 0.7,
  max_new_tokens: int = 64,
  oversample: int = 2,
) -> Perturbed:
  """n paraphrases per question sampled from `backend` (lib/llm Backend protocol).

  Asks for `oversample * n` samples so that duplicates and empty replies can be dropped;
  answers are cut at the first newline.
  """
  prompts = [PARAPHRASE_PROMPT.format(question=q) for q in questions]
  seed = int(np.asarray(jax.random.key_data(key)).ravel()[-1])
  samples = backend.sample(
    prompts, n=oversample * n, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed
  )
  texts, flags = [], []
  for q_id, (question, outs) in enumerate(zip(questions, samples, strict=True)):
    lines = [labels.first_line(o) for o in outs]
    chosen, degenerate = exactly_n(question, lines, n, question_rng(key, q_id))
    texts.append(chosen)
    flags.append(degenerate)
  return Perturbed(texts, flags)


@PERTURBERS.register("gaap")
def gaap(
  questions: Sequence[str],
  n: int,
  key,
  *,
  embed,
  substitutions: gaap_lib.Substitutions,
  config: gaap_lib.GaapConfig | None = None,
) -> Perturbed:
  """GAAP rewordings (algorithms/uq/gaap.py), one seeded Generator per question."""
  config = gaap_lib.GaapConfig(n=n) if config is None else config
  if config.n != n:
    raise ValueError(f"GaapConfig.n={config.n} differs from n={n}")
  texts, flags = [], []
  for q_id, question in enumerate(questions):
    res = gaap_lib.gaap(question, embed, substitutions, question_rng(key, q_id), config)
    texts.append(res.texts)
    flags.append(res.degenerate)
  return Perturbed(texts, flags)
