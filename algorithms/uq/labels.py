"""Correctness labels for LLM answers and loaders for the QA data (spec section 6.1).

Host-side Python: deterministic matchers for NQ-open (alias match), GSM8K (last number against the
gold after "#### ") and reasoning-gym tasks (the task's own scorer, binarised), plus JSON-lines
loaders for NQ-open and GSM8K that name the line and the field of a malformed row.

reasoning-gym is imported only when a task is named by string, so importing this module stays light.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

NQ_MODES = ("contains", "em", "f1")

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_ASCII_PUNCTUATION = frozenset(string.punctuation)
# A minus sign counts only where it cannot be a subtraction ("16-3" holds 16 and 3, not -3).
_NUMBER = re.compile(r"(?:(?<![\w.])-)?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def first_line(text: str) -> str:
  """The first non-blank line of text, stripped ("" if there is none): the answer a chat model
  gives before it starts explaining (spec sections 6.1 and 9)."""
  return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _is_punctuation(char: str) -> bool:
  return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def normalise(text: str) -> str:
  """Canonical form for string matching.

  NFKC, first line only (leading blank lines skipped), lowercase, punctuation deleted (ASCII
  punctuation and every Unicode P* character, so "Salzburg, Austria" -> "salzburg austria" and
  "1,000" -> "1000"), articles a/an/the dropped, whitespace collapsed.
  """
  if not isinstance(text, str):
    raise ValueError(f"text must be a str, got {type(text).__name__} {text!r}")
  text = first_line(unicodedata.normalize("NFKC", text)).lower()
  text = "".join(char for char in text if not _is_punctuation(char))
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


def _token_f1(prediction_tokens: list[str], reference_tokens: list[str]) -> float:
  """SQuAD token F1 between two token lists."""
  common = Counter(prediction_tokens) & Counter(reference_tokens)
  overlap = sum(common.values())
  if overlap == 0:
    return 0.0
  precision = overlap / len(prediction_tokens)
  recall = overlap / len(reference_tokens)
  return 2 * precision * recall / (precision + recall)


def nq_correct(
  prediction: str, aliases: Sequence[str], mode: str = "contains", f1_threshold: float = 0.5
) -> bool:
  """Whether a prediction answers an NQ-open question with gold `aliases`.

  Both sides are `normalise`d. Modes:
    "contains" (default): some alias occurs in the prediction on token boundaries.
    "em": the prediction equals some alias.
    "f1": the SQuAD token F1 with some alias is >= f1_threshold.
  An alias that normalises to nothing (e.g. "The") never matches.
  """
  if mode not in NQ_MODES:
    raise ValueError(f"mode must be one of {NQ_MODES}, got {mode!r}")
  if not isinstance(prediction, str):
    raise ValueError(f"prediction must be a str, got {type(prediction).__name__} {prediction!r}")
  if isinstance(aliases, str) or not aliases:
    raise ValueError(f"aliases must be a non-empty list of strings, got {aliases!r}")
  normalised_prediction = normalise(prediction)
  normalised_aliases = [normalise(alias) for alias in aliases]
  if not normalised_prediction:
    return False
  for alias in normalised_aliases:
    if not alias:
      continue
    if mode == "em" and normalised_prediction == alias:
      return True
    if mode == "contains" and f" {alias} " in f" {normalised_prediction} ":
      return True
    if mode == "f1" and _token_f1(normalised_prediction.split(), alias.split()) >= f1_threshold:
      return True
  return False


def _parse_number(token: str) -> float:
  return float(token.replace(",", ""))


def last_number(text: str) -> float | None:
  """The last number in text (commas, "$" and a trailing "." ignored), or None if there is none."""
  if not isinstance(text, str):
    raise ValueError(f"text must be a str, got {type(text).__name__} {text!r}")
  # "$" is dropped first so "-$5" and "$-5" read as -5; the Unicode minus reads as "-".
  cleaned = text.replace("$", "").replace("\u2212", "-")
  tokens = [token.strip(",") for token in _NUMBER.findall(cleaned)]
  tokens = [token for token in tokens if any(char.isdigit() for char in token)]
  return _parse_number(tokens[-1]) if tokens else None


def gsm8k_gold(answer_text: str) -> float:
  """The gold number of a GSM8K answer: the text after "#### ", commas removed."""
  if not isinstance(answer_text, str) or "####" not in answer_text:
    raise ValueError(f"answer_text must be a str containing '#### <number>', got {answer_text!r}")
  gold = answer_text.rsplit("####", 1)[1].strip().replace(",", "")
  try:
    return float(gold)
  except ValueError:
    raise ValueError(f"the text after '####' is not a number: {gold!r}") from None


def gsm8k_correct(prediction: str, gold: float | str) -> bool:
  """Whether the last number in the prediction equals gold within 1e-6 * max(1, |gold|).

  gold is a number or a GSM8K answer text (parsed with `gsm8k_gold`).
  """
  if isinstance(gold, str):
    gold = gsm8k_gold(gold)
  if isinstance(gold, bool) or not isinstance(gold, numbers.Real) or not math.isfinite(gold):
    raise ValueError(f"gold must be a finite number or a GSM8K answer text, got {gold!r}")
  predicted = last_number(prediction)
  if predicted is None:
    return False
  gold = float(gold)
  return abs(predicted - gold) <= 1e-6 * max(1.0, abs(gold))


def extract_answer(prediction: str) -> str:
  """The answer inside the last <answer>...</answer>, else the first non-empty line.

  Surrounding whitespace is stripped and one trailing period dropped (reasoning-gym scorers give
  partial credit for "-4." against "-4").
  """
  if not isinstance(prediction, str):
    raise ValueError(f"prediction must be a str, got {type(prediction).__name__} {prediction!r}")
  tagged = _ANSWER_TAG.findall(prediction)
  if tagged:
    answer = tagged[-1].strip()
  else:
    answer = first_line(prediction)
  return answer[:-1].rstrip() if answer.endswith(".") else answer


def reasoning_gym_correct(prediction: str, entry: Mapping[str, Any], dataset: Any) -> bool:
  """Whether a prediction solves a reasoning-gym entry, by the task's own `score_answer`.

  Args:
    prediction: the model's response text.
    entry: the dataset entry (dict with "question", "answer", "metadata").
    dataset: the reasoning-gym dataset object that produced the entry, or its registered name
      (e.g. "basic_arithmetic").

  Returns:
    True iff the score of `extract_answer(prediction)` is >= 1 - 1e-9 (the scorers give partial
    credit, so the score is always binarised).
  """
  if not isinstance(entry, Mapping) or "answer" not in entry:
    raise ValueError(f"entry must be a reasoning-gym entry with an 'answer', got {entry!r}")
  if isinstance(dataset, str):
    import reasoning_gym  # optional dependency, imported on demand

    score_answer = reasoning_gym.get_score_answer_fn(dataset)
  elif hasattr(dataset, "score_answer"):
    score_answer = dataset.score_answer
  else:
    raise ValueError(f"dataset must be a reasoning-gym dataset or its name, got {dataset!r}")
  score = float(score_answer(extract_answer(prediction), entry))
  return score >= 1.0 - 1e-9


# ----------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------


class NQItem(NamedTuple):
  """One NQ-open question."""

  question: str  # the question text
  aliases: tuple[str, ...]  # accepted answers


class GSM8KItem(NamedTuple):
  """One GSM8K problem."""

  question: str  # the problem text
  solution: str  # the worked solution ending in "#### <number>"
  gold: float  # the number after "#### "


def _read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
  """(line number, object) for every non-blank line of a JSON-lines file."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no such data file: {path}")
  rows = []
  with path.open(encoding="utf-8") as file:
    for line_number, line in enumerate(file, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
      if not isinstance(row, dict):
        raise ValueError(f"{path}:{line_number}: expected a JSON object, got {row!r}")
      rows.append((line_number, row))
  return rows


def _string_field(path, line_number: int, row: dict, field: str) -> str:
  value = row.get(field)
  if not isinstance(value, str) or not value.strip():
    raise ValueError(
      f"{path}:{line_number}: field {field!r} must be a non-empty string, got {value!r}"
    )
  return value


def load_nq_open(path: str | Path) -> list[NQItem]:
  """NQ-open rows {"question": str, "answer": [aliases]} from a JSON-lines file."""
  items = []
  for line_number, row in _read_jsonl(path):
    question = _string_field(path, line_number, row, "question")
    aliases = row.get("answer")
    valid = isinstance(aliases, list) and aliases and all(isinstance(a, str) for a in aliases)
    if not valid:
      raise ValueError(
        f"{path}:{line_number}: field 'answer' must be a non-empty list of strings, got {aliases!r}"
      )
    items.append(NQItem(question, tuple(aliases)))
  return items


def load_gsm8k(path: str | Path) -> list[GSM8KItem]:
  """GSM8K rows {"question": str, "answer": "... #### <number>"} from a JSON-lines file."""
  items = []
  for line_number, row in _read_jsonl(path):
    question = _string_field(path, line_number, row, "question")
    solution = _string_field(path, line_number, row, "answer")
    try:
      gold = gsm8k_gold(solution)
    except ValueError as error:
      raise ValueError(f"{path}:{line_number}: field 'answer': {error}") from None
    items.append(GSM8KItem(question, solution, gold))
  return items
