"""Tests of the correctness matchers and the NQ-open / GSM8K loaders."""

import json
from pathlib import Path

import pytest

from jaxsys.algorithms.uq import labels

DATA = Path(__file__).resolve().parents[4] / "shared" / "data"
NQ_PATH = DATA / "nq_open_efficientqa_dev.jsonl"
GSM8K_PATH = DATA / "gsm8k_test.jsonl"


@pytest.mark.parametrize(
  ("text", "expected"),
  [
    ("The Awakening", "awakening"),
    ("  Salzburg,   Austria. ", "salzburg austria"),
    ("\n\nPoison\nBecause the band...", "poison"),  # first non-blank line only
    ("Janet\u2019s ducks", "janets ducks"),  # Unicode apostrophe is punctuation too
    ("\ufb01ve A-list stars", "five alist stars"),  # NFKC folds the ligature
    ("Theatre an Anthem", "theatre anthem"),  # articles are whole words only
    ("$1,000", "1000"),
    ("", ""),
  ],
)
def test_normalise(text, expected):
  assert labels.normalise(text) == expected


def test_normalise_rejects_non_text():
  with pytest.raises(ValueError, match="text must be a str"):
    labels.normalise(None)


def test_nq_contains_mode():
  aliases = ["Salzburg, Austria", "Austria"]
  assert labels.nq_correct("It takes place in Austria.", aliases)
  assert labels.nq_correct("salzburg austria", aliases)
  assert not labels.nq_correct("Austrian Alps", aliases)  # token boundaries
  assert not labels.nq_correct("Germany", aliases)
  assert labels.nq_correct("The Awakening", ["Awakening"])
  assert labels.nq_correct("awakening", ["The Awakening"])
  assert not labels.nq_correct("", ["1988"])
  assert not labels.nq_correct("the", ["The"])  # an alias that normalises to nothing
  assert labels.nq_correct("1988\nThe Dodgers beat Oakland in 1989", ["1988"])
  assert not labels.nq_correct("It was 1989.\nNot 1988", ["1988"])  # only the first line counts


def test_nq_em_and_f1_modes():
  aliases = ["Salzburg, Austria", "Austria"]
  assert labels.nq_correct("Austria!", aliases, mode="em")
  assert not labels.nq_correct("in Austria", aliases, mode="em")
  # Token F1 of "in salzburg" with "salzburg austria" is 0.5; with "austria" it is 0.
  assert labels.nq_correct("in Salzburg", aliases, mode="f1")
  assert not labels.nq_correct("in Salzburg", aliases, mode="f1", f1_threshold=0.6)
  assert not labels.nq_correct("in Vienna today", aliases, mode="f1")


@pytest.mark.parametrize(
  ("args", "match"),
  [
    (("x", ["x"], "fuzzy"), "mode must be"),
    (("x", "x"), "aliases"),
    (("x", []), "aliases"),
    ((None, ["x"]), "prediction must be a str"),
  ],
)
def test_nq_bad_input(args, match):
  with pytest.raises(ValueError, match=match):
    labels.nq_correct(*args)


def test_gsm8k_gold():
  assert labels.gsm8k_gold("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18") == 18.0
  assert labels.gsm8k_gold("...\n#### 1,234") == 1234.0
  assert labels.gsm8k_gold("#### -7.5") == -7.5
  with pytest.raises(ValueError, match="####"):
    labels.gsm8k_gold("the answer is 18")
  with pytest.raises(ValueError, match="not a number"):
    labels.gsm8k_gold("#### eighteen")


@pytest.mark.parametrize(
  ("prediction", "gold", "expected"),
  [
    ("She makes $18 every day.", 18, True),
    ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18.", 18, True),
    ("The profit is $70,000.", 70000, True),
    ("The answer is 1,234.50.", 1234.5, True),
    ("It drops to -5.", -5, True),
    ("16-3 = 13", 13, True),  # the hyphen is a minus only when it cannot be a subtraction
    ("I think 18, no wait, 17", 18, False),  # the last number counts
    ("1000000.5", 1000000, True),  # relative tolerance 1e-6 * |gold|
    ("10.0001", 10, False),
    ("no idea", 3, False),
    ("The answer is 18", "Janet sells 9 eggs.\n#### 18", True),  # gold given as answer text
  ],
)
def test_gsm8k_correct(prediction, gold, expected):
  assert labels.gsm8k_correct(prediction, gold) is expected


def test_last_number_and_bad_gold():
  assert labels.last_number("$1,234.5.") == 1234.5
  assert labels.last_number("total: \u221212") == -12.0
  assert labels.last_number("nothing here") is None
  assert labels.last_number("16-3") == 3.0  # a subtraction, not -3
  assert labels.last_number("x = -3") == -3.0
  with pytest.raises(ValueError, match="gold"):
    labels.gsm8k_correct("18", float("nan"))


@pytest.mark.parametrize(
  ("prediction", "expected"),
  [
    ("Let me think.\n<answer>42</answer>", "42"),
    ("<answer>1</answer> then <answer> 2. </answer>", "2"),
    ("\n  -4.\nbecause 5 - 3 - 6 = -4", "-4"),
    ("", ""),
  ],
)
def test_extract_answer(prediction, expected):
  assert labels.extract_answer(prediction) == expected


def test_reasoning_gym_scoring():
  reasoning_gym = pytest.importorskip("reasoning_gym")
  dataset = reasoning_gym.create_dataset("basic_arithmetic", size=5, seed=3)
  for entry in dataset:
    answer = entry["answer"]
    wrong = str(int(answer) + 1)
    assert labels.reasoning_gym_correct(answer, entry, dataset)
    assert labels.reasoning_gym_correct(f"{answer}.", entry, dataset)
    assert labels.reasoning_gym_correct(f"work...\n<answer>{answer}</answer>", entry, dataset)
    assert labels.reasoning_gym_correct(answer, entry, "basic_arithmetic")
    assert not labels.reasoning_gym_correct(wrong, entry, dataset)
    assert not labels.reasoning_gym_correct(f"<answer>{wrong}</answer>", entry, dataset)
  # The scorer gives partial credit (0 < score < 1) to "-4.0" for "-4"; it must count as wrong.
  entry = dataset[0]
  partial = dataset.score_answer(f"{entry['answer']}.0", entry)
  assert 0 < partial < 1
  assert not labels.reasoning_gym_correct(f"{entry['answer']}.0", entry, dataset)
  with pytest.raises(ValueError, match="dataset must be"):
    labels.reasoning_gym_correct("1", entry, object())
  with pytest.raises(ValueError, match="entry must be"):
    labels.reasoning_gym_correct("1", {"question": "q"}, dataset)


needs_data = pytest.mark.skipif(
  not (NQ_PATH.is_file() and GSM8K_PATH.is_file()), reason=f"shared data files absent in {DATA}"
)


@needs_data
def test_load_real_nq_open():
  items = labels.load_nq_open(NQ_PATH)
  assert len(items) == 1800
  assert items[0] == labels.NQItem("the last time la dodgers won the world series", ("1988",))
  assert items[2].aliases == ("Salzburg, Austria", "Austria")
  assert all(item.question and item.aliases for item in items)
  assert labels.nq_correct("They last won in 1988.", items[0].aliases)


@needs_data
def test_load_real_gsm8k():
  items = labels.load_gsm8k(GSM8K_PATH)
  assert len(items) == 1319
  assert items[0].gold == 18.0
  assert items[2].gold == 70000.0
  assert items[0].question.startswith("Janet")
  assert labels.gsm8k_correct("So she makes $18.", items[0].gold)


def write_lines(path, rows):
  path.write_text("\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows))
  return path


@pytest.mark.parametrize(
  ("rows", "match"),
  [
    ([{"question": "q", "answer": ["a"]}, "{not json"], r":2: not valid JSON"),
    ([{"question": "q", "answer": "a"}], r":1: field 'answer' must be a non-empty list"),
    ([{"question": "q", "answer": []}], r":1: field 'answer'"),
    ([{"answer": ["a"]}], r":1: field 'question'"),
    (["[1, 2]"], r":1: expected a JSON object"),
  ],
)
def test_nq_loader_names_line_and_field(tmp_path, rows, match):
  with pytest.raises(ValueError, match=match):
    labels.load_nq_open(write_lines(tmp_path / "nq.jsonl", rows))


def test_gsm8k_loader_errors_and_blank_lines(tmp_path):
  good = {"question": "q", "answer": "work\n#### 4"}
  path = write_lines(tmp_path / "ok.jsonl", [good, "", good])
  assert [item.gold for item in labels.load_gsm8k(path)] == [4.0, 4.0]
  bad = write_lines(tmp_path / "bad.jsonl", [good, {"question": "q", "answer": "no marker"}])
  with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'answer'.*####"):
    labels.load_gsm8k(bad)
  with pytest.raises(FileNotFoundError, match="no such data file"):
    labels.load_gsm8k(tmp_path / "missing.jsonl")
