import jax
import numpy as np
import pytest

from jaxsys.algorithms.uq import pipeline, tasks
from tests.algorithms.uq.test_gaap import trigram_embed


class CountingBackend:
  """Answers "4" or "5" at random (seeded), verdicts "(A)"/"(B)", and counts its calls."""

  def __init__(self):
    self.calls = 0

  def sample(self, prompts, n, temperature, max_new_tokens, *, key=None, seed=None):
    self.calls += 1
    rng = np.random.default_rng(seed)
    out = []
    for prompt in prompts:
      if "proposed answer" in prompt.lower():
        out.append([rng.choice(["(A)", "(B)"]) for _ in range(n)])
      elif temperature == 0:
        out.append(["4\nextra"] if "2+2" in prompt else ["5"])
      else:
        out.append([str(rng.choice(["4", "5", "6"])) for _ in range(n)])
    return out


def toy_task():
  questions = tuple(f"What is {a}+{b}?" for a, b in ((2, 2), (1, 1), (3, 1), (2, 3)) * 2)
  gold = ("4", "2", "4", "5") * 2
  return pipeline.Task("toy", questions, lambda a, i: a.strip() == gold[i])


def test_run_scores_labels_and_caches(tmp_path):
  backend = CountingBackend()
  config = pipeline.Config(perturber="template", n=3, r=2, r0=4, eval_bootstrap=10)
  res = pipeline.run(toy_task(), backend, trigram_embed, config, jax.random.key(0), str(tmp_path))
  assert res.correct.tolist() == [True, False, False, True] * 2  # greedy answer cut at the newline
  assert len(res.generations.inputs[0]) == 4 and len(res.generations.responses[0][0]) == 2
  for name in ("inv_entropy", "degmat", "lexsim", "verbalized", "p_true_empirical"):
    assert res.scores[name].shape == (8,), name
  assert np.isfinite(res.metrics["inv_entropy"]["auroc"].point)
  calls = backend.calls
  again = pipeline.run(toy_task(), backend, trigram_embed, config, jax.random.key(0), str(tmp_path))
  assert backend.calls == calls  # every stage came from the cache
  np.testing.assert_array_equal(again.scores["inv_entropy"], res.scores["inv_entropy"])
  # A different temperature regenerates the sampled stages only.
  hotter = pipeline.Config(perturber="template", n=3, r=2, r0=4, temperature=1.0, eval_bootstrap=5)
  pipeline.run(toy_task(), backend, trigram_embed, hotter, jax.random.key(0), str(tmp_path))
  assert backend.calls == calls + 2  # responses and baseline


def test_bad_config_names_the_field():
  with pytest.raises(ValueError, match="Config.r0"):
    pipeline.Config(r0=0)


def test_tasks_from_real_data():
  import os

  nq = "/work/shared/data/nq_open_efficientqa_dev.jsonl"
  if not os.path.exists(nq):
    pytest.skip("../shared/data absent")
  task = tasks.nq_open(nq, size=5, seed=1)
  assert len(task.questions) == 5 and task.prompt_suffix == pipeline.QA_SUFFIX
  arith = tasks.reasoning_gym("basic_arithmetic", size=4, seed=0, max_terms=2, max_digits=1)
  assert len(arith.questions) == 4
