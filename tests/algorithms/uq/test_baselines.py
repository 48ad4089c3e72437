"""algorithms/uq/baselines.py: spec §5 numbers, numpy references, jit/vmap, text estimators."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jaxsys.algorithms.uq import baselines as bl

M = 10

# ------------------------------------------------------------------------------------------------
# Fixtures: the spec's three sample sets, as pair probabilities that give the stated W.
# KLE uses W = P_ent + P_neu/2, so W = 1 (identical) is P_ent = 1, W = I (distinct) is P_ent = I
# with P_con = 1 - I, and two clusters is a block-diagonal P_ent.


def _pair_from_entailment(ent) -> bl.PairProbs:
  ent = jnp.asarray(ent, dtype=jnp.float64)
  return bl.PairProbs(ent=ent, neu=jnp.zeros_like(ent), con=1.0 - ent)


IDENTICAL = np.ones((M, M))
DISTINCT = np.eye(M)
TWO_CLUSTERS = np.kron(np.eye(2), np.ones((M // 2, M // 2)))
CASES = {"identical": IDENTICAL, "distinct": DISTINCT, "two_clusters": TWO_CLUSTERS}

# name: (degmat, eigv, eccentricity, numsets, semantic entropy, kle), spec §5 (verified).
EXPECTED = {
  "identical": (0.0, 1.0, 0.0, 1.0, 0.0, 1.298537),
  "distinct": (0.9, 10.0, 3.0, 10.0, math.log(10), 2.302585),
  "two_clusters": (0.5, 2.0, 1.0, 2.0, math.log(2), 2.038463),
}


@pytest.mark.parametrize("name", list(CASES))
def test_spec_numbers(name):
  w = CASES[name]
  pair = _pair_from_entailment(w)
  assert np.allclose(bl.affinity(pair, "entail"), w)
  assert np.allclose(bl.affinity(pair, "contra"), w)
  equiv = bl.equivalence(pair)
  got = (
    bl.degmat(w),
    bl.eigv(w),
    bl.eccentricity(w),
    bl.numsets(equiv),
    bl.semantic_entropy(equiv),
    bl.kle(pair),
  )
  np.testing.assert_allclose(np.array(got), EXPECTED[name], atol=2e-6)


def _kle_wrong_laplacian(pair: bl.PairProbs, t: float = 0.3) -> jax.Array:
  """KLE as older lm-polygraph computed it, with L = W - D (the sign bug of spec §3 #14)."""
  w = pair.ent + 0.5 * pair.neu
  w = (w + w.T) / 2.0
  return bl._heat_kernel_entropy(w - jnp.diag(jnp.sum(w, axis=1)), t, normalise=False)


def test_kle_wrong_laplacian_reverses_the_order():
  wrong_identical = _kle_wrong_laplacian(_pair_from_entailment(IDENTICAL))
  wrong_clusters = _kle_wrong_laplacian(_pair_from_entailment(TWO_CLUSTERS))
  np.testing.assert_allclose([wrong_identical, wrong_clusters], [2.219246, 2.212977], atol=1e-6)
  assert wrong_identical > wrong_clusters  # agreeing samples look *more* uncertain: the bug
  ours = [
    bl.kle(_pair_from_entailment(CASES[n])) for n in ("identical", "two_clusters", "distinct")
  ]
  assert ours[0] < ours[1] < ours[2]


def test_kle_normalised_range():
  assert float(bl.kle(_pair_from_entailment(DISTINCT), normalise=True)) == pytest.approx(1.0)
  value = bl.kle(_pair_from_entailment(TWO_CLUSTERS), t=1.0, normalise=True)
  assert 0.0 < float(value) < 1.0


def test_embedding_proxy_on_the_spec_cases():
  base = np.random.default_rng(0).normal(size=(2, 16))
  identical = np.repeat(base[:1], M, axis=0)
  pair = bl.embedding_pair_probs(identical)
  assert np.allclose(pair.ent, 1.0) and np.allclose(pair.con, 0.0) and np.all(pair.neu == 0)
  single_cluster = bl.semantic_entropy(bl.equivalence(pair))
  assert float(single_cluster) == 0.0 and not np.signbit(single_cluster)
  assert float(bl.kernel_entropy(identical)) == pytest.approx(-1.0)
  # Orthogonal embeddings: cos 0, so P_ent = 1/2 off the diagonal, below tau_eq.
  pair = bl.embedding_pair_probs(np.eye(M) * 3.0)
  np.testing.assert_allclose(pair.ent, 0.5 + 0.5 * np.eye(M))
  assert float(bl.numsets(bl.equivalence(pair))) == M
  assert float(bl.kernel_entropy(np.eye(M))) == pytest.approx(-0.5)
  assert float(bl.luq(pair)) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------
# Independent plain-numpy / plain-Python references.


def np_degmat(w):
  return 1.0 - w.sum() / w.shape[0] ** 2


def np_laplacian(w):
  w = (w + w.T) / 2
  inv_sqrt = 1.0 / np.sqrt(w.sum(1))
  return np.eye(len(w)) - inv_sqrt[:, None] * w * inv_sqrt[None, :]


def np_eigv(w):
  # I - D^-1 W is similar to the symmetric normalised Laplacian: same eigenvalues, general eig.
  w = (w + w.T) / 2
  eigenvalues = np.linalg.eig(np.eye(len(w)) - w / w.sum(1, keepdims=True))[0].real
  return np.maximum(0.0, 1.0 - eigenvalues).sum()


def np_eccentricity(w, threshold=0.9):
  eigenvalues, vectors = np.linalg.eig(np_laplacian(w))
  v = vectors.real[:, eigenvalues.real < threshold]
  return np.linalg.norm(v - v.mean(0))


def np_numsets(equiv):
  parent = list(range(len(equiv)))

  def find(i):
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  for i in range(len(equiv)):
    for j in range(len(equiv)):
      if equiv[i, j] and equiv[j, i]:
        parent[find(i)] = find(j)
  return len({find(i) for i in range(len(equiv))})


def np_greedy_clusters(equiv):
  founders, labels = [], []
  for i in range(len(equiv)):
    for f in founders:
      if equiv[i, f] and equiv[f, i]:
        labels.append(f)
        break
    else:
      founders.append(i)
      labels.append(i)
  return np.array(labels)


def np_semantic_entropy(equiv, weights=None):
  labels = np_greedy_clusters(equiv)
  weights = np.ones(len(labels)) if weights is None else weights
  mass = np.array([weights[labels == c].sum() for c in np.unique(labels)])
  p = mass / mass.sum()
  return -(p * np.log(p)).sum()


def np_luq(pair):
  ent, con = np.asarray(pair.ent), np.asarray(pair.con)
  m = len(ent)
  rows = [
    np.mean([ent[i, j] / (ent[i, j] + con[i, j]) for j in range(m) if j != i]) for i in range(m)
  ]
  return 1.0 - np.mean(rows)


def np_kernel_entropy(emb):
  unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  m = len(emb)
  return -np.mean([(1 + unit[i] @ unit[j]) / 2 for i in range(m) for j in range(m) if i != j])


def np_kle(pair, t=0.3):
  w = np.asarray(pair.ent) + 0.5 * np.asarray(pair.neu)
  w = (w + w.T) / 2
  kernel = scipy.linalg.expm(-t * (np.diag(w.sum(1)) - w))
  d = np.sqrt(np.diag(kernel))
  eigenvalues = np.linalg.eigvalsh(kernel / np.outer(d, d) / len(w))
  eigenvalues = eigenvalues[eigenvalues > 1e-12]
  return -(eigenvalues * np.log(eigenvalues)).sum()


def _random_pair(rng, m) -> bl.PairProbs:
  probs = rng.dirichlet(np.ones(3), size=(m, m))
  return bl.PairProbs(*(jnp.asarray(probs[..., k]) for k in range(3)))


def _random_equiv(rng, m, density=0.3):
  upper = np.triu(rng.random((m, m)) < density, 1)
  return upper | upper.T | np.eye(m, dtype=bool)


def _clustered_embeddings(rng, m, d=8, clusters=3, noise=0.25):
  centres = rng.normal(size=(clusters, d))
  return centres[rng.integers(0, clusters, m)] + noise * rng.normal(size=(m, d))


# Random tests use the spec's m as well, so eager calls reuse the per-shape compilations.
@pytest.mark.parametrize("seed", range(3))
def test_matches_numpy_references(seed):
  rng = np.random.default_rng(seed)
  m = M
  pair = _random_pair(rng, m)
  w = np.asarray(bl.affinity(pair, "entail"))
  assert np.allclose(w, w.T)
  np.testing.assert_allclose(bl.degmat(w), np_degmat(w), rtol=1e-10)
  np.testing.assert_allclose(bl.eigv(w), np_eigv(w), rtol=1e-8)
  np.testing.assert_allclose(bl.eccentricity(w), np_eccentricity(w), rtol=1e-8)
  np.testing.assert_allclose(bl.luq(pair), np_luq(pair), rtol=1e-10)
  np.testing.assert_allclose(bl.kle(pair), np_kle(pair), rtol=1e-8)
  np.testing.assert_allclose(bl.kle(pair, t=2.0), np_kle(pair, t=2.0), rtol=1e-8)
  emb = rng.normal(size=(m, 6))
  np.testing.assert_allclose(bl.kernel_entropy(emb), np_kernel_entropy(emb), rtol=1e-10)
  # A non-transitive relation: greedy clustering and connected components differ, both checked.
  equiv = _random_equiv(rng, m)
  np.testing.assert_array_equal(bl.greedy_clusters(equiv), np_greedy_clusters(equiv))
  assert float(bl.numsets(equiv)) == np_numsets(equiv)
  np.testing.assert_allclose(bl.semantic_entropy(equiv), np_semantic_entropy(equiv), rtol=1e-12)
  logprob = rng.normal(size=m) - 2.0
  np.testing.assert_allclose(
    bl.semantic_entropy_lik(equiv, logprob),
    np_semantic_entropy(equiv, np.exp(logprob)),
    rtol=1e-10,
  )
  # Embedding-proxy equivalence on clustered answers.
  eq_emb = np.asarray(bl.equivalence(bl.embedding_pair_probs(_clustered_embeddings(rng, m))))
  assert float(bl.numsets(eq_emb)) == np_numsets(eq_emb)
  np.testing.assert_allclose(bl.semantic_entropy(eq_emb), np_semantic_entropy(eq_emb))


def test_one_directional_equivalence_is_not_equivalence():
  equiv = np.eye(M, dtype=bool)
  equiv[0, 1:] = True  # 0 -> every other sample, never back
  assert float(bl.numsets(equiv)) == M
  assert float(bl.semantic_entropy(equiv)) == pytest.approx(math.log(M))
  # P_ent = 0.95 from every earlier sample to every later one, 0 backwards.
  upper = np.eye(M) + 0.95 * (np.arange(M)[:, None] < np.arange(M)[None, :])
  np.testing.assert_array_equal(bl.equivalence(_pair_from_entailment(upper)), np.eye(M, dtype=bool))


def test_equivalence_threshold_and_same_text():
  ent = np.full((3, 3), 0.5)
  ent[0, 1] = ent[1, 0] = 0.92
  pair = _pair_from_entailment(ent)
  eq = np.asarray(bl.equivalence(pair, tau_eq=0.9))
  np.testing.assert_array_equal(eq, [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
  assert np.asarray(bl.equivalence(pair, tau_eq=0.95)).sum() == 3  # only the diagonal
  same = bl.same_text_matrix(
    ["Paris", "paris.", "PARIS "], normalise=lambda s: s.strip(". ").lower()
  )
  assert same.all()
  assert np.asarray(bl.equivalence(pair, same_text=same)).all()
  assert not bl.same_text_matrix(["Paris", "paris"])[0, 1]  # identity normaliser by default


def test_semantic_entropy_lik_hand_case():
  equiv = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
  logprob = np.log([0.5, 0.3, 0.2])
  expected = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
  assert float(bl.semantic_entropy_lik(equiv, logprob)) == pytest.approx(expected)
  # Equal likelihoods reduce to the counting estimator; the scale of log-probs does not matter.
  same = np.full(3, -80.0)
  assert float(bl.semantic_entropy_lik(equiv, same)) == pytest.approx(
    float(bl.semantic_entropy(equiv))
  )


@pytest.mark.parametrize("seed", range(2))
def test_joint_permutation_invariance(seed):
  rng = np.random.default_rng(10 + seed)
  m = M
  pair = _random_pair(rng, m)
  emb = _clustered_embeddings(rng, m)
  eq = np.asarray(bl.equivalence(bl.embedding_pair_probs(emb)))  # transitive in practice
  perm = rng.permutation(m)
  permuted = bl.PairProbs(*(f[perm][:, perm] for f in pair))
  w, w_p = bl.affinity(pair), bl.affinity(permuted)
  for f in (bl.degmat, bl.eigv, bl.eccentricity):
    np.testing.assert_allclose(f(w_p), f(w), rtol=1e-9, atol=1e-12)
  for f in (bl.luq, bl.kle):
    np.testing.assert_allclose(f(permuted), f(pair), rtol=1e-9)
  np.testing.assert_allclose(bl.kernel_entropy(emb[perm]), bl.kernel_entropy(emb), rtol=1e-12)
  assert float(bl.numsets(eq[perm][:, perm])) == float(bl.numsets(eq))


# ------------------------------------------------------------------------------------------------
# jit, vmap, dtypes, retracing.


def _all_scores(pair: bl.PairProbs, emb: jax.Array, logprob: jax.Array) -> dict:
  w = bl.affinity(pair, "entail")
  eq = bl.equivalence(bl.embedding_pair_probs(emb))
  return {
    "degmat": bl.degmat(w),
    "eigv": bl.eigv(w),
    "eccentricity": bl.eccentricity(w),
    "contra_degmat": bl.degmat(bl.affinity(pair, "contra")),
    "numsets": bl.numsets(eq),
    "semantic_entropy": bl.semantic_entropy(eq),
    "semantic_entropy_lik": bl.semantic_entropy_lik(eq, logprob),
    "luq": bl.luq(pair),
    "kernel_entropy": bl.kernel_entropy(emb),
    "kle": bl.kle(pair),
  }


def _questions(num_questions=3, m=M):
  rng = np.random.default_rng(42)
  pairs = [_random_pair(rng, m) for _ in range(num_questions)]
  embs = [_clustered_embeddings(rng, m) for _ in range(num_questions)]
  logprobs = [rng.normal(size=m) for _ in range(num_questions)]
  return pairs, embs, logprobs


def test_jit_equals_eager_vmap_equals_loop_no_retrace():
  pairs, embs, logprobs = _questions()
  eager = [
    _all_scores(p, jnp.asarray(e), jnp.asarray(lp))
    for p, e, lp in zip(pairs, embs, logprobs, strict=True)
  ]

  @jax.jit
  @chex.assert_max_traces(n=1)
  def jitted(pair, emb, logprob):
    return _all_scores(pair, emb, logprob)

  for p, e, lp, expected in zip(pairs, embs, logprobs, eager, strict=True):
    chex.assert_trees_all_close(jitted(p, jnp.asarray(e), jnp.asarray(lp)), expected, rtol=1e-10)
  stacked_pair = jax.tree.map(lambda *x: jnp.stack(x), *pairs)
  batched = jax.jit(jax.vmap(_all_scores))(stacked_pair, jnp.stack(embs), jnp.stack(logprobs))
  looped = jax.tree.map(lambda *x: jnp.stack(x), *eager)
  chex.assert_trees_all_close(batched, looped, rtol=1e-10)


def test_float32_inputs_keep_float32():
  pairs, embs, logprobs = _questions(num_questions=1)
  pair32 = bl.PairProbs(*(f.astype(jnp.float32) for f in pairs[0]))
  emb32 = jnp.asarray(embs[0], dtype=jnp.float32)
  got = jax.jit(_all_scores)(pair32, emb32, jnp.asarray(logprobs[0], dtype=jnp.float32))
  want = _all_scores(pairs[0], jnp.asarray(embs[0]), jnp.asarray(logprobs[0]))
  for name in got:
    if name not in ("numsets", "semantic_entropy"):  # bool inputs give the default float
      assert got[name].dtype == jnp.float32, name
    np.testing.assert_allclose(got[name], want[name], rtol=2e-4, atol=2e-5, err_msg=name)
  assert bl.numsets(np.eye(3, dtype=bool), dtype=jnp.float32).dtype == jnp.float32


# ------------------------------------------------------------------------------------------------
# White-box estimators and P(True).


def test_white_box_hand_cases():
  logprobs = jnp.array([-1.0, -2.0, -3.0])
  mask = jnp.array([True, True, False])
  assert float(bl.msp(logprobs, mask)) == pytest.approx(3.0)
  assert float(bl.msp(logprobs)) == pytest.approx(6.0)
  assert float(bl.perplexity(logprobs, mask)) == pytest.approx(math.exp(1.5))
  assert float(bl.perplexity(logprobs, jnp.zeros(3, dtype=bool))) == pytest.approx(1.0)
  logits = jnp.array([[0.0, 0.0, 0.0, 0.0], [5.0, 1.0, 2.0, 3.0], [100.0, 0.0, 0.0, 0.0]])
  assert float(bl.mean_token_entropy(logits, jnp.array([True, False, False]))) == pytest.approx(
    math.log(4)
  )
  p = jax.nn.softmax(logits[1])
  both = (math.log(4) - float(jnp.sum(p * jnp.log(p)))) / 2
  assert float(bl.mean_token_entropy(logits, mask)) == pytest.approx(both)
  banned = jnp.array([[0.0, 0.0, -jnp.inf, -jnp.inf]])
  assert float(bl.mean_token_entropy(banned)) == pytest.approx(math.log(2))
  batched = jax.vmap(bl.msp)(jnp.stack([logprobs, 2 * logprobs]), jnp.stack([mask, mask]))
  np.testing.assert_allclose(batched, [3.0, 6.0])


def test_p_true():
  assert float(bl.p_true_from_logits(0.0, 0.0)) == pytest.approx(math.log(2))
  got = bl.p_true_from_logits(jnp.log(jnp.array([0.9, 0.2])), jnp.log(jnp.array([0.1, 0.8])))
  np.testing.assert_allclose(got, [-math.log(0.9), -math.log(0.2)], rtol=1e-12)
  assert float(bl.p_true_from_logits(1000.0, -1000.0)) == pytest.approx(0.0)  # no overflow
  prompt = bl.p_true_prompt("  Capital of France? ", "Paris")
  assert prompt == (
    "Question: Capital of France?\nProposed Answer: Paris\nIs the proposed answer:\n"
    " (A) True\n (B) False\nThe proposed answer is:"
  )
  assert [bl.parse_choice(s) for s in ["(A) True", " B", "a.", "True", "false", "Answer", ""]] == [
    "A",
    "B",
    "A",
    "A",
    "B",
    None,
    None,
  ]
  assert bl.p_true_empirical(["A", "(A)", "B", "hmm", "A) True"]) == pytest.approx(0.4)
  assert bl.p_true_empirical(["B"] * 5) == 1.0


# ------------------------------------------------------------------------------------------------
# Text estimators.


def test_parse_verbalized():
  assert bl.parse_verbalized("I am 80% sure") == (pytest.approx(0.2), True)
  assert bl.parse_verbalized("No idea, honestly.") == (0.5, False)
  assert bl.parse_verbalized("Paris. Confidence: 250%") == (0.5, False)  # > 100 ignored
  assert bl.parse_verbalized("Answer: 1,200. Confidence: 95%") == (pytest.approx(0.05), True)
  assert bl.parse_verbalized("Napoleon, 90 percent; born 1769") == (pytest.approx(0.1), True)
  assert bl.parse_verbalized("between 70-80%") == (pytest.approx(0.2), True)
  assert bl.parse_verbalized("-5") == (0.5, False)
  assert bl.parse_verbalized("100%") == (0.0, True)
  assert bl.parse_verbalized("0% confident") == (1.0, True)
  assert bl.parse_verbalized("GPT4 says 62.5%") == (pytest.approx(0.375), True)
  assert bl.VERBALIZED_SUFFIX.endswith("confidence in your answer.")


def test_stemmer():
  words = "running cities city hopping filled dogs caresses is bus connected".split()
  assert [bl.stem(w) for w in words] == [
    "run",
    "citi",
    "citi",
    "hop",
    "fill",
    "dog",
    "caress",
    "is",
    "bus",
    "connect",
  ]


def test_rouge_l_hand_cases():
  assert bl.rouge_l_f("The cat sat on the mat", "the cat is on a mat") == pytest.approx(2 / 3)
  assert bl.rouge_l_f("Paris", "paris!") == 1.0
  assert bl.rouge_l_f("running dogs", "run dog") == 1.0  # stemmed
  assert bl.rouge_l_f("a b c d", "a b") == pytest.approx(2 / 3)  # P = 1/2, R = 1
  assert bl.rouge_l_f("a b c d", "d c b a") == pytest.approx(0.25)  # order matters
  assert bl.rouge_l_f("red", "blue") == 0.0
  assert bl.rouge_l_f("", "") == 0.0 and bl.rouge_l_f("...", "x") == 0.0
  assert bl.lexsim(["a b", "a b", "c"]) == pytest.approx(-1 / 3)
  assert bl.lexsim(["Paris", "paris", "PARIS."]) == pytest.approx(-1.0)


def test_lcs_against_full_table():
  rng = np.random.default_rng(3)
  for _ in range(30):
    a = list(rng.integers(0, 4, rng.integers(0, 9)))
    b = list(rng.integers(0, 4, rng.integers(0, 9)))
    table = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
    for i in range(1, len(a) + 1):
      for j in range(1, len(b) + 1):
        same = a[i - 1] == b[j - 1]
        table[i, j] = table[i - 1, j - 1] + 1 if same else max(table[i - 1, j], table[i, j - 1])
    assert bl._lcs_length(a, b) == table[-1, -1] == bl._lcs_length(b, a)


# ------------------------------------------------------------------------------------------------
# Bad input.


def test_bad_input_raises_value_error():
  w = np.ones((3, 3))
  pair = _pair_from_entailment(w)
  with pytest.raises(ValueError, match=r"w must be a square \[m, m\] matrix, got shape \(3, 4\)"):
    bl.degmat(np.ones((3, 4)))
  with pytest.raises(ValueError, match="kind must be 'entail' or 'contra', got 'both'"):
    bl.affinity(pair, "both")
  with pytest.raises(ValueError, match="tau_eq must be in"):
    bl.equivalence(pair, tau_eq=1.5)
  with pytest.raises(ValueError, match=r"same_text must be bool \[3, 3\]"):
    bl.equivalence(pair, same_text=np.ones((2, 2), dtype=bool))
  with pytest.raises(ValueError, match="pair fields must share one"):
    bl.kle(bl.PairProbs(pair.ent, pair.neu, jnp.ones((2, 2))))
  with pytest.raises(ValueError, match="t must be a finite number > 0, got -0.3"):
    bl.kle(pair, t=-0.3)
  with pytest.raises(ValueError, match="normalise must be a Python bool"):
    bl.kle(pair, normalise=1)
  with pytest.raises(ValueError, match="needs at least 2 samples, got m = 1"):
    bl.luq(_pair_from_entailment(np.ones((1, 1))))
  with pytest.raises(ValueError, match=r"emb must be \[m, d\]"):
    bl.kernel_entropy(np.ones(4))
  with pytest.raises(ValueError, match=r"seq_logprob must be \[3\]"):
    bl.semantic_entropy_lik(np.eye(3, dtype=bool), np.zeros(4))
  with pytest.raises(ValueError, match="texts needs at least 2 samples"):
    bl.lexsim(["only one"])
  with pytest.raises(ValueError, match=r"texts\[1\] must be a string, got int 3"):
    bl.lexsim(["a", 3])
  with pytest.raises(ValueError, match="text must be a string"):
    bl.parse_verbalized(None)
  with pytest.raises(ValueError, match="logit_a and logit_b must have one shape"):
    bl.p_true_from_logits(jnp.zeros(2), jnp.zeros(3))
  with pytest.raises(ValueError, match=r"mask must be bool \[3\]"):
    bl.msp(jnp.zeros(3), jnp.ones(2, dtype=bool))
  with pytest.raises(ValueError, match="choices must be a non-empty sequence"):
    bl.p_true_empirical([])


def test_kle_static_normalise_under_jit():
  pair = _pair_from_entailment(TWO_CLUSTERS)
  jitted = jax.jit(functools.partial(bl.kle, normalise=True))
  assert float(jitted(pair)) == pytest.approx(2.038463 / math.log(10), abs=1e-6)
