import jax
import numpy as np
import pytest

from jaxsys.algorithms.uq import baselines, estimators, inv_entropy
from jaxsys.lib.registry import UQ_SCORES


def random_inputs(q=3, m=4, r=3, r0=5, d=8, seed=0, **kw):
  rng = np.random.default_rng(seed)
  texts = [[f"answer {i % 2}" for i in range(r0)] for _ in range(q)]
  return estimators.UQInputs.from_embeddings(
    rng.normal(size=(q, m, d)),
    rng.normal(size=(q, m, r, d)),
    rng.normal(size=(q, r0, d)),
    texts_b=texts,
    **kw,
  )


def test_every_available_estimator_scores_every_question():
  inputs = random_inputs(host={"verbalized": [0.1, 0.5, 0.9]})
  names = estimators.available(inputs)
  assert {"inv_entropy", "degmat", "lexsim", "verbalized", "semantic_entropy"} <= set(names)
  assert "p_true" not in names  # no host values for it
  scores = estimators.score_all(inputs, jax.random.key(0), names)
  for name, values in scores.items():
    assert values.shape == (3,) and np.all(np.isfinite(values)), name
  np.testing.assert_allclose(scores["verbalized"], [0.1, 0.5, 0.9])


def test_registry_entries_equal_the_underlying_functions():
  inputs = random_inputs()
  key = jax.random.key(1)
  scores = estimators.score_all(inputs, key, ["inv_entropy", "nr_inv_entropy", "degmat", "kle"])
  direct = inv_entropy.score_dataset(key, inputs.emb_x, inputs.emb_y)
  np.testing.assert_allclose(scores["inv_entropy"], direct.mean.inv_entropy, rtol=1e-6)
  np.testing.assert_allclose(scores["nr_inv_entropy"], direct.nr.inv_entropy, rtol=1e-6)
  for q in range(3):
    pair = baselines.embedding_pair_probs(inputs.emb_b[q])
    w = baselines.affinity(pair)
    np.testing.assert_allclose(scores["degmat"][q], baselines.degmat(w), rtol=1e-5)
    np.testing.assert_allclose(scores["kle"][q], baselines.kle(pair), rtol=1e-5)


def test_same_text_drives_semantic_entropy():
  # Two distinct normalised texts, 3 and 2 copies: SE = entropy of (3/5, 2/5) whatever the
  # embeddings say (equal texts are equivalent; the random embeddings are not).
  inputs = random_inputs()
  se = estimators.score_all(inputs, jax.random.key(0), ["semantic_entropy"])["semantic_entropy"]
  np.testing.assert_allclose(se, -(0.6 * np.log(0.6) + 0.4 * np.log(0.4)), rtol=1e-5)


def test_display_names_carry_the_pair_source():
  inputs = random_inputs()
  assert estimators.display_name("degmat", inputs) == "degmat[emb]"
  assert estimators.display_name("inv_entropy", inputs) == "inv_entropy"


def test_bad_inputs_fail_before_work():
  with pytest.raises(KeyError, match="unknown uq score 'nope'"):
    estimators.score_all(random_inputs(), jax.random.key(0), ["nope"])
  with pytest.raises(ValueError, match="host\\['p_true'\\]"):
    estimators.score_all(random_inputs(), jax.random.key(0), ["p_true"])
  with pytest.raises(ValueError, match="texts_b"):
    estimators.UQInputs.from_embeddings(
      np.zeros((2, 3, 4)), np.zeros((2, 3, 2, 4)), np.zeros((2, 5, 4)), texts_b=[["a"]]
    )
  assert len(UQ_SCORES) >= 19
