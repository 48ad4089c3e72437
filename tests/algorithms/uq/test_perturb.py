import jax
import numpy as np
import pytest

from jaxsys.algorithms.uq import perturb


def test_exactly_n_pads_subsamples_and_flags():
  rng = np.random.default_rng(0)
  texts, degenerate = perturb.exactly_n("q?", ["a", "b", "", "q?", "a"], 5, rng)
  assert len(texts) == 5 and set(texts) == {"a", "b"} and not degenerate
  texts, _ = perturb.exactly_n("q?", [str(i) for i in range(20)], 5, rng)
  assert len(set(texts)) == 5
  texts, degenerate = perturb.exactly_n("q?", ["", " q? "], 3, rng)
  assert texts == ["q?"] * 3 and degenerate


def test_template_is_seeded_and_exact():
  key = jax.random.key(0)
  a = perturb.PERTURBERS.get("template")(["Who wrote Hamlet?", "2+2?"], 4, key)
  b = perturb.PERTURBERS.get("template")(["Who wrote Hamlet?", "2+2?"], 4, key)
  assert a == b and all(len(t) == 4 and len(set(t)) == 4 for t in a.texts)
  assert all("Who wrote Hamlet?" in t for t in a.texts[0])
  with pytest.raises(ValueError, match="n=20"):
    perturb.template(["x"], 20, key)


class EchoBackend:
  """A deterministic backend: numbered rewordings, with blanks and repeats mixed in."""

  def __init__(self):
    self.calls = []

  def sample(self, prompts, n, temperature, max_new_tokens, seed):
    self.calls.append((len(prompts), n, temperature))
    return [
      [f"variant {i % 3} of prompt {p}\nextra line" if i % 4 else "" for i in range(n)]
      for p in range(len(prompts))
    ]


def test_llm_paraphrase_cleans_and_fills_to_n():
  backend = EchoBackend()
  out = perturb.llm_paraphrase(["a?", "b?"], 3, jax.random.key(1), backend=backend)
  assert backend.calls == [(2, 6, 0.7)]
  for q, texts in enumerate(out.texts):
    assert len(texts) == 3 and all(t.startswith("variant") and "\n" not in t for t in texts)
    assert all(t.endswith(f"prompt {q}") for t in texts)
  assert out.degenerate == [False, False]
