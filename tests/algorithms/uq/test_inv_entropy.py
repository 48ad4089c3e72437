"""algorithms/uq/inv_entropy.py: spec §2 numbers, a numpy reference, jit/vmap/keys, validation."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsys.algorithms.uq import inv_entropy as ie

# float32 library results against the float64 numpy reference.
RTOL32, ATOL32 = 1e-5, 1e-7

# One set of bootstrap shapes for most tests, so they share compiled code (compiles dominate).
Q, M, R, D, B = 3, 4, 3, 8, 6

dual_walk_jit = jax.jit(ie.dual_walk, static_argnames="px_formula")


def _walk(sim_x, sim_y, px_formula="bayes", dtype=jnp.float64) -> ie.DualWalk:
  sim_x, sim_y = jnp.asarray(sim_x, dtype), jnp.asarray(sim_y, dtype)
  return dual_walk_jit(ie.transition(sim_x), ie.transition(sim_y), px_formula=px_formula)


def _equicorrelated(m: int, eps: float) -> np.ndarray:
  """The paper's epsilon model: a = 1 on the diagonal, 1 - eps elsewhere."""
  return np.full((m, m), 1.0 - eps) + eps * np.eye(m)


def _unit_rows(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------------------
# An independent float64 numpy version of spec §1.1/§1.2, written with explicit sums.


def np_transition(sim: np.ndarray) -> np.ndarray:
  m = sim.shape[0]
  out = np.empty((m, m))
  for i in range(m):
    out[i] = sim[i] / sum(sim[i, k] for k in range(m))
  return out


def np_measures(sim_x: np.ndarray, sim_y: np.ndarray, px_formula: str = "bayes") -> dict:
  px_walk, py_walk = np_transition(sim_x), np_transition(sim_y)
  m = sim_x.shape[0]
  p_y = np.array([sum(py_walk[i, j] for i in range(m)) / m for j in range(m)])
  # x_given_y[j, i] = P(x_i | y_j): y_j -> y_k (P_y), paired x_k, x_k -> x_i (P_x).
  x_given_y = np.array(
    [[sum(py_walk[j, k] * px_walk[k, i] for k in range(m)) for i in range(m)] for j in range(m)]
  )
  if px_formula == "bayes":
    p_x = np.array([sum(p_y[j] * x_given_y[j, i] for j in range(m)) for i in range(m)])
  else:
    p_x = np.array([sum(p_y[j] * px_walk[j, i] for j in range(m)) for i in range(m)])
  p = np.array([x_given_y[i, i] for i in range(m)])
  q = np.array([x_given_y[i, i] * p_y[i] / p_x[i] for i in range(m)])
  p_norm = p / p.sum()
  return {
    "inv_entropy": -sum(v * math.log(v) for v in p),
    "ni_entropy": -sum(v * math.log(v) for v in q),
    "wd_px_py": scipy.stats.wasserstein_distance(p_x, p_y),
    "max_py_x": q.max(),
    "max_py": p_y.max(),
    "tv_px_py": 0.5 * np.abs(p_x - p_y).sum(),
    "inv_entropy_norm": -sum(v * math.log(v) for v in p_norm),
    "p": p,
    "q": q,
    "px": p_x,
    "py": p_y,
  }


def np_similarity(a: np.ndarray, b: np.ndarray, transform: str) -> np.ndarray:
  cos = np.clip(_unit_rows(a) @ _unit_rows(b).T, -1.0, 1.0)
  return {"shift": (1 + cos) / 2, "abs": np.abs(cos), "clip": np.maximum(cos, 0.0)}[transform]


def np_bootstrap(key, sim_x, emb_y, num_bootstrap, transform, px_formula) -> tuple[dict, dict]:
  """Per-draw S_y from the gathered embeddings, as spec §1.4 states it; mean and std per measure."""
  m, r, _ = emb_y.shape
  chosen = np.asarray(ie._draw_replicates(key, num_bootstrap, m, r))
  per_draw = []
  for b in range(num_bootstrap):
    picked = emb_y[np.arange(m), chosen[b]]
    sim_y = np_similarity(picked, picked, transform)
    np.fill_diagonal(sim_y, 1.0)
    per_draw.append(np_measures(sim_x, sim_y, px_formula))
  mean = {n: np.mean([d[n] for d in per_draw]) for n in ie.MEASURE_NAMES}
  std = {n: np.std([d[n] for d in per_draw]) for n in ie.MEASURE_NAMES}
  return mean, std


def _random_sims(seed: int, m: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  emb_x, emb_y = rng.normal(size=(2, m, 16))
  sim_x = np_similarity(emb_x, emb_x, "shift")
  sim_y = np_similarity(emb_y, emb_y, "shift")
  return sim_x, sim_y


# ------------------------------------------------------------------------------------------------
# Spec §2.1: the epsilon model.


@pytest.mark.parametrize(
  "eps_y, p_expected, h_expected",
  [(0.0, 0.1, math.log(10)), (0.5, 0.1033624, 2.345824), (1.0, 0.1369863, 2.723116)],
)
def test_epsilon_model_spec_numbers(eps_y, p_expected, h_expected):
  n, eps_x = 9, 0.3
  walk = _walk(_equicorrelated(n + 1, eps_x), _equicorrelated(n + 1, eps_y))
  closed_form = (1 + n - n * eps_x - n * eps_y + n * eps_x * eps_y) / (
    (n + 1 - n * eps_x) * (n + 1 - n * eps_y)
  )
  np.testing.assert_allclose(walk.p, closed_form, rtol=1e-12)
  np.testing.assert_allclose(walk.p, p_expected, atol=1e-7)
  np.testing.assert_allclose(walk.inv_entropy, h_expected, atol=1e-6)
  # Symmetric model: uniform marginals, so P(y_i|x_i) = P(x_i|y_i) and NI = Inv.
  np.testing.assert_allclose(walk.ni_entropy, walk.inv_entropy, rtol=1e-12)


def test_epsilon_model_p_increases_with_output_dissimilarity():
  eps_grid = np.linspace(0.0, 1.0, 11)
  p = [float(_walk(_equicorrelated(10, 0.3), _equicorrelated(10, e)).p[0]) for e in eps_grid]
  assert np.all(np.diff(p) > 0)


# ------------------------------------------------------------------------------------------------
# Spec §2.2 to §2.4: identical outputs, identical inputs, the identity corner.


def test_identical_outputs_doubly_stochastic_inputs_give_ln_m():
  walk = _walk(_equicorrelated(10, 0.4), np.ones((10, 10)))
  np.testing.assert_allclose(walk.p, 0.1, rtol=1e-12)
  np.testing.assert_allclose(walk.inv_entropy, math.log(10), rtol=1e-12)


def test_identical_outputs_arbitrary_inputs_give_entropy_of_column_means():
  sim_x, _ = _random_sims(seed=3, m=8)
  walk = _walk(sim_x, np.ones((8, 8)))
  column_means = np_transition(sim_x).mean(axis=0)
  np.testing.assert_allclose(walk.p, column_means, rtol=1e-12)
  np.testing.assert_allclose(jnp.sum(walk.p), 1.0, rtol=1e-12)
  np.testing.assert_allclose(walk.inv_entropy, scipy.stats.entropy(column_means), rtol=1e-12)
  assert walk.inv_entropy < math.log(8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identical_inputs_give_ln_m_for_any_outputs(seed):
  # No input perturbation: Inv-Entropy carries no signal (the constant ln m).
  _, sim_y = _random_sims(seed, m=6)
  walk = _walk(np.ones((6, 6)), sim_y)
  np.testing.assert_allclose(walk.p, 1 / 6, rtol=1e-12)
  np.testing.assert_allclose(walk.inv_entropy, math.log(6), rtol=1e-12)


def test_identical_inputs_bootstrap_is_constant():
  emb_y = jax.random.normal(jax.random.key(4), (M, R, D))
  scores = ie.inv_entropy_bootstrap(jax.random.key(0), jnp.ones((M, M)), emb_y, num_bootstrap=B)
  np.testing.assert_allclose(scores.mean.inv_entropy, math.log(M), rtol=1e-12)
  np.testing.assert_allclose(scores.std.inv_entropy, 0.0, atol=1e-12)


def test_identity_walks_give_zero():
  # The paper's monotonicity argument needs p_i < 1/e; here p_i = 1 and H = 0.
  walk = _walk(np.eye(4), np.eye(4))
  np.testing.assert_allclose(walk.p, 1.0)
  assert float(walk.inv_entropy) == 0.0


def test_orthogonal_embeddings_with_clip_reach_the_identity_corner():
  one_hot = jnp.eye(M, D, dtype=jnp.float64)
  sim_x = ie.self_similarity(one_hot, "clip")
  np.testing.assert_array_equal(sim_x, np.eye(M))
  emb_y = jnp.stack([one_hot, 2.0 * one_hot, 0.5 * one_hot], axis=1)  # replicates all aligned
  scores = ie.inv_entropy_bootstrap(
    jax.random.key(1), sim_x, emb_y, num_bootstrap=B, transform="clip"
  )
  np.testing.assert_allclose(scores.mean.inv_entropy, 0.0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Spec §2.5: the m = 3 code test vector.

SIM_X3 = np.array([[1, 0.8, 0.6], [0.8, 1, 0.7], [0.6, 0.7, 1]])
SIM_Y3 = np.array([[1, 0.2, 0.9], [0.2, 1, 0.3], [0.9, 0.3, 1]])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_code_vector_bayes(dtype):
  walk = _walk(SIM_X3, SIM_Y3, "bayes", dtype)
  assert walk.inv_entropy.dtype == dtype
  atol = 1e-6
  np.testing.assert_allclose(walk.inv_entropy, 1.101344, atol=atol)
  np.testing.assert_allclose(walk.ni_entropy, 1.100628, atol=atol)
  np.testing.assert_allclose(walk.wd_px_py, 0.018194, atol=atol)
  np.testing.assert_allclose(walk.max_py, 0.361039, atol=atol)
  np.testing.assert_allclose(walk.max_py_x, 0.373602, atol=atol)
  np.testing.assert_allclose(walk.px, [0.331917, 0.341369, 0.326714], atol=atol)
  np.testing.assert_allclose(walk.py, [0.339538, 0.299423, 0.361039], atol=atol)
  np.testing.assert_allclose(jnp.sum(walk.py_given_x, axis=0), 1.0, rtol=1e-6)
  np.testing.assert_allclose(jnp.sum(walk.px_given_y, axis=1), 1.0, rtol=1e-6)


def test_code_vector_paper_formula():
  walk = _walk(SIM_X3, SIM_Y3, "paper")
  bayes = _walk(SIM_X3, SIM_Y3, "bayes")
  np.testing.assert_allclose(walk.ni_entropy, 1.100463, atol=1e-6)
  column_sums = np.asarray(jnp.sum(walk.py_given_x, axis=0))
  assert np.all(np.abs(column_sums - 1.0) > 1e-3)
  # P(X) enters only NI, WD, TV and max P(y_i|x_i); the rest do not move.
  for name in ("inv_entropy", "max_py", "inv_entropy_norm"):
    assert float(getattr(walk, name)) == pytest.approx(float(getattr(bayes, name)), rel=1e-12)
  for name in ("ni_entropy", "wd_px_py", "tv_px_py", "max_py_x"):
    assert abs(float(getattr(walk, name)) - float(getattr(bayes, name))) > 1e-5


# ------------------------------------------------------------------------------------------------
# Every measure against the numpy reference.


@pytest.mark.parametrize("px_formula", ie.PX_FORMULAS)
@pytest.mark.parametrize("seed, m", [(0, 2), (1, 5), (2, 10)])
def test_dual_walk_matches_numpy(seed, m, px_formula):
  sim_x, sim_y = _random_sims(seed, m)
  expected = np_measures(sim_x, sim_y, px_formula)
  walk = _walk(sim_x, sim_y, px_formula, jnp.float32)
  for name in (*ie.MEASURE_NAMES, "p", "q", "px", "py"):
    got = getattr(walk, name)
    assert got.dtype == jnp.float32, name
    np.testing.assert_allclose(got, expected[name], rtol=RTOL32, atol=ATOL32, err_msg=name)


@pytest.mark.parametrize("transform", ie.TRANSFORMS)
def test_similarity_matches_numpy_and_broadcasts(transform):
  rng = np.random.default_rng(7)
  emb_a = rng.normal(size=(3, 4, 6)) * 5.0  # unnormalised on purpose
  emb_b = rng.normal(size=(5, 6))
  got = ie.similarity(emb_a, emb_b, transform)
  assert got.shape == (3, 4, 5)
  for batch in range(3):
    np.testing.assert_allclose(got[batch], np_similarity(emb_a[batch], emb_b, transform), 1e-12)
  assert float(jnp.min(got)) >= 0.0


def test_self_similarity_and_nli_mean_have_unit_diagonal():
  emb = jnp.asarray([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]])  # a zero vector must not give NaN
  for transform in ie.TRANSFORMS:
    sim = ie.self_similarity(emb, transform)
    assert bool(jnp.all(jnp.isfinite(sim)))
    np.testing.assert_array_equal(jnp.diagonal(sim), 1.0)
    assert bool(jnp.all(jnp.isfinite(ie.transition(sim))))
  p_ent = np.array([[0.7, 0.2, 0.9], [0.4, 0.8, 0.1], [0.5, 0.3, 0.6]])
  expected = (p_ent + p_ent.T) / 2
  np.fill_diagonal(expected, 1.0)
  np.testing.assert_allclose(ie.nli_mean(p_ent), expected, rtol=1e-12)


def test_transition_is_row_stochastic():
  sim_x, _ = _random_sims(seed=5, m=6)
  walk = ie.transition(sim_x)
  np.testing.assert_allclose(walk, np_transition(sim_x), rtol=1e-12)
  np.testing.assert_allclose(jnp.sum(walk, axis=-1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("transform, px_formula", [("shift", "bayes"), ("abs", "paper")])
def test_bootstrap_matches_numpy_per_draw_gather(transform, px_formula):
  rng = np.random.default_rng(11)
  m, r, num_bootstrap = M, R, B
  emb_x = rng.normal(size=(m, D)).astype(np.float32)
  emb_y = rng.normal(size=(m, r, D)).astype(np.float32)
  key = jax.random.key(5)
  sim_x = ie.self_similarity(jnp.asarray(emb_x), transform)
  assert sim_x.dtype == jnp.float32
  scores = ie.inv_entropy_bootstrap(
    key, sim_x, jnp.asarray(emb_y), num_bootstrap=num_bootstrap, transform=transform,
    px_formula=px_formula,
  )  # fmt: skip
  np_sim_x = np_similarity(emb_x.astype(np.float64), emb_x.astype(np.float64), transform)
  np.fill_diagonal(np_sim_x, 1.0)
  mean, std = np_bootstrap(
    key, np_sim_x, emb_y.astype(np.float64), num_bootstrap, transform, px_formula
  )
  for name in ie.MEASURE_NAMES:
    got_mean, got_std = getattr(scores.mean, name), getattr(scores.std, name)
    assert got_mean.dtype == jnp.float32
    np.testing.assert_allclose(got_mean, mean[name], rtol=RTOL32, atol=ATOL32, err_msg=name)
    np.testing.assert_allclose(got_std, std[name], rtol=1e-3, atol=1e-6, err_msg=name)
  assert float(scores.std.inv_entropy) > 0


def test_pairwise_variant_equals_embedding_variant():
  rng = np.random.default_rng(2)
  emb_y = jnp.asarray(rng.normal(size=(M, R, D)))
  sim_x, _ = _random_sims(seed=8, m=M)
  key = jax.random.key(9)
  by_embedding = ie.inv_entropy_bootstrap(key, sim_x, emb_y, num_bootstrap=B)
  sim_y_full = ie.self_similarity(emb_y.reshape(M * R, D))
  by_pairs = ie.inv_entropy_bootstrap_pairwise(key, sim_x, sim_y_full, R, num_bootstrap=B)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-12), by_embedding, by_pairs)
  nr_pairs = ie.nr_inv_entropy_pairwise(sim_x, sim_y_full, R)
  jax.tree.map(
    functools.partial(np.testing.assert_allclose, rtol=1e-12),
    ie.nr_inv_entropy(sim_x, emb_y),
    nr_pairs,
  )


def test_nr_uses_replicate_zero():
  rng = np.random.default_rng(6)
  emb_y = rng.normal(size=(4, 3, 8))
  sim_x, _ = _random_sims(seed=1, m=4)
  sim_y = np_similarity(emb_y[:, 0], emb_y[:, 0], "shift")
  np.fill_diagonal(sim_y, 1.0)
  expected = np_measures(sim_x, sim_y)
  got = ie.nr_inv_entropy(sim_x, emb_y)
  for name in ie.MEASURE_NAMES:
    np.testing.assert_allclose(getattr(got, name), expected[name], rtol=1e-10, err_msg=name)


# ------------------------------------------------------------------------------------------------
# jit, vmap, keys.


def _dataset(seed=0):
  kx, ky = jax.random.split(jax.random.key(seed))
  return jax.random.normal(kx, (Q, M, D)), jax.random.normal(ky, (Q, M, R, D))


def test_dual_walk_jit_equals_eager():
  sim_x, sim_y = _random_sims(seed=4, m=M)
  walk_jit = _walk(sim_x, sim_y, "paper")
  with jax.disable_jit():
    walk_eager = ie.dual_walk(ie.transition(sim_x), ie.transition(sim_y), "paper")
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-10), walk_jit, walk_eager)


def test_bootstrap_under_user_jit_equals_direct_call():
  # Under an outer jit the inputs are tracers (value checks skipped); called directly they are
  # concrete. Op-by-op eager execution of the bootstrap is left to dual_walk's test: it compiles
  # every primitive separately and costs seconds for no extra coverage.
  emb_x, emb_y = _dataset(seed=1)
  sim_x = ie.self_similarity(emb_x[0])
  run = functools.partial(ie.inv_entropy_bootstrap, num_bootstrap=B, transform="abs")
  close = functools.partial(np.testing.assert_allclose, rtol=1e-10, atol=1e-14)
  jax.tree.map(
    close, jax.jit(run)(jax.random.key(3), sim_x, emb_y[0]), run(jax.random.key(3), sim_x, emb_y[0])
  )


def test_score_dataset_equals_loop_over_questions():
  # A non-default transform checks that it reaches S_x as well as S_y.
  emb_x, emb_y = _dataset()
  key = jax.random.key(7)
  table = ie.score_dataset(key, emb_x, emb_y, num_bootstrap=B, transform="abs")
  assert table.mean.inv_entropy.shape == (Q,)
  close = functools.partial(np.testing.assert_allclose, rtol=1e-10, atol=1e-12)
  for q in range(Q):
    sim_x = ie.self_similarity(emb_x[q], "abs")
    one = ie.inv_entropy_bootstrap(
      jax.random.fold_in(key, q), sim_x, emb_y[q], num_bootstrap=B, transform="abs"
    )
    nr = ie.nr_inv_entropy(sim_x, emb_y[q], transform="abs")
    row = ie.DatasetScores(*jax.tree.map(lambda v, q=q: v[q], table))
    jax.tree.map(close, (row.mean, row.std, row.nr), (one.mean, one.std, nr))
  default = ie.score_dataset(key, emb_x, emb_y, num_bootstrap=B)
  assert not np.allclose(default.mean.inv_entropy, table.mean.inv_entropy)


def test_user_vmap_over_questions_equals_loop():
  emb_x, emb_y = _dataset()
  sim_x = ie.self_similarity(emb_x)
  keys = jax.random.split(jax.random.key(1), Q)
  run = functools.partial(ie.inv_entropy_bootstrap, num_bootstrap=B)
  batched = jax.vmap(run)(keys, sim_x, emb_y)
  for q in range(Q):
    one = run(keys[q], sim_x[q], emb_y[q])
    np.testing.assert_allclose(batched.mean.inv_entropy[q], one.mean.inv_entropy, rtol=1e-10)


def test_same_key_same_value_other_key_other_value():
  emb_x, emb_y = _dataset()
  sim_x = ie.self_similarity(emb_x[0])
  first = ie.inv_entropy_bootstrap(jax.random.key(0), sim_x, emb_y[0], num_bootstrap=B)
  again = ie.inv_entropy_bootstrap(jax.random.key(0), sim_x, emb_y[0], num_bootstrap=B)
  other = ie.inv_entropy_bootstrap(jax.random.key(1), sim_x, emb_y[0], num_bootstrap=B)
  jax.tree.map(np.testing.assert_array_equal, first, again)
  assert float(first.mean.inv_entropy) != float(other.mean.inv_entropy)


def test_identical_replicates_make_every_draw_equal():
  emb_x, emb_y = _dataset(seed=2)
  emb_y = jnp.repeat(emb_y[:, :, :1], R, axis=2)  # all replicates of an input equal
  table = ie.score_dataset(jax.random.key(2), emb_x, emb_y, num_bootstrap=B, transform="abs")
  for name in ie.MEASURE_NAMES:
    np.testing.assert_allclose(getattr(table.std, name), 0.0, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(getattr(table.mean, name), getattr(table.nr, name), rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
  m=st.integers(min_value=2, max_value=6),
  seed=st.integers(min_value=0, max_value=2**16),
  px_formula=st.sampled_from(ie.PX_FORMULAS),
  data=st.data(),
)
def test_joint_permutation_of_states_leaves_measures_unchanged(m, seed, px_formula, data):
  rng = np.random.default_rng(seed)
  # Asymmetric positive similarities: permutation invariance must not rely on symmetry.
  sim_x = rng.uniform(0.05, 1.0, size=(m, m))
  sim_y = rng.uniform(0.05, 1.0, size=(m, m))
  perm = np.array(data.draw(st.permutations(range(m))))
  walk = _walk(sim_x, sim_y, px_formula)
  permuted = _walk(sim_x[np.ix_(perm, perm)], sim_y[np.ix_(perm, perm)], px_formula)
  for name in ie.MEASURE_NAMES:
    np.testing.assert_allclose(
      getattr(permuted, name), getattr(walk, name), rtol=1e-10, atol=1e-14, err_msg=name
    )
  np.testing.assert_allclose(permuted.p, walk.p[perm], rtol=1e-10)


# ------------------------------------------------------------------------------------------------
# Validation: errors name the field.

KEY = jax.random.key(0)
SIM3 = jnp.asarray(SIM_X3)
EMB_Y3 = jnp.ones((3, 2, 4))
NAN_EMB_Y3 = EMB_Y3.at[1, 0, 2].set(jnp.nan)


@pytest.mark.parametrize(
  "call, match",
  [
    (lambda: ie.inv_entropy_bootstrap(KEY, jnp.ones((1, 1)), jnp.ones((1, 2, 4))), "sim_x.*m = 1"),
    (lambda: ie.inv_entropy_bootstrap(KEY, SIM3, jnp.ones((3, 0, 4))), r"r \(emb_y"),
    (lambda: ie.inv_entropy_bootstrap(KEY, SIM3, EMB_Y3, num_bootstrap=0), "num_bootstrap"),
    (lambda: ie.inv_entropy_bootstrap(KEY, SIM3, NAN_EMB_Y3), r"emb_y.*\(1, 0, 2\)"),
    (lambda: ie.inv_entropy_bootstrap(KEY, SIM3, jnp.ones((4, 2, 4))), "emb_y has m = 4"),
    (lambda: ie.inv_entropy_bootstrap(KEY, -SIM3, EMB_Y3), "sim_x must be >= 0"),
    (lambda: ie.inv_entropy_bootstrap(KEY, SIM3, EMB_Y3, transform="cos"), "transform"),
    (lambda: ie.inv_entropy_bootstrap(KEY, SIM3, EMB_Y3, px_formula="x"), "px_formula"),
    (lambda: ie.inv_entropy_bootstrap(jax.random.PRNGKey(0), SIM3, EMB_Y3), "key"),
    (lambda: ie.inv_entropy_bootstrap_pairwise(KEY, SIM3, jnp.ones((5, 5)), 2), "sim_y_full"),
    (lambda: ie.inv_entropy_bootstrap_pairwise(KEY, SIM3, jnp.ones((0, 0)), 0), "r must be"),
    (lambda: ie.nr_inv_entropy(SIM3, NAN_EMB_Y3), "emb_y"),
    (lambda: ie.dual_walk(jnp.eye(3), jnp.eye(2)), "p_y"),
    (lambda: ie.score_dataset(KEY, jnp.ones((2, 3, 4)), jnp.ones((2, 4, 2, 4))), "emb_y has m"),
    (lambda: ie.score_dataset(KEY, jnp.ones((2, 1, 4)), jnp.ones((2, 1, 2, 4))), "emb_x.*m = 1"),
    (lambda: ie.score_dataset(KEY, jnp.ones((2, 3, 4)), jnp.ones((2, 3, 0, 4))), r"r \(emb_y"),
    (
      lambda: ie.score_dataset(KEY, jnp.full((2, 3, 4), jnp.nan), jnp.ones((2, 3, 2, 4))),
      "emb_x must be finite",
    ),
  ],
)
def test_validation_names_the_field(call, match):
  with pytest.raises(ValueError, match=match):
    call()


@pytest.mark.parametrize("m, r", [(10, 5), (12, 10), (3, 2), (4, 1)])
def test_replicate_draws_are_uniform_and_independent(m, r):
  draws = np.asarray(ie._draw_replicates(jax.random.key(m * r), 20_000, m, r))
  assert draws.shape == (20_000, m) and draws.min() == 0 and draws.max() == r - 1
  if r == 1:
    return
  # every input's index uniform, and the pair (input 0, input m-1) uniform on r^2 cells
  # (chi-square at p = 1e-4: a biased or repeated digit fails)
  for column in (draws[:, 0], draws[:, -1]):
    counts = np.bincount(column, minlength=r)
    assert np.sum((counts - 20_000 / r) ** 2 / (20_000 / r)) < scipy.stats.chi2.ppf(1 - 1e-4, r - 1)
  pairs = np.bincount(draws[:, 0] * r + draws[:, -1], minlength=r * r)
  expected = 20_000 / r**2
  assert np.sum((pairs - expected) ** 2 / expected) < scipy.stats.chi2.ppf(1 - 1e-4, r * r - 1)


def test_rank_sort_equals_sort_with_ties():
  rng = np.random.default_rng(3)
  v = rng.normal(size=(50, 10)).astype(np.float32)
  v[:, 3] = v[:, 7] = 0.5
  np.testing.assert_array_equal(jax.vmap(ie._sorted)(jnp.asarray(v)), np.sort(v, axis=1))


def test_numpy_reference_loop_matches_the_jitted_scores():
  # With one replicate per input every draw is the same, so the two agree to float rounding in
  # every output: the bootstrap means and stds and the no-replication draw.
  from jaxsys.algorithms.uq import inv_entropy_reference

  rng = np.random.default_rng(7)
  emb_x = rng.normal(size=(3, 5, 16))
  emb_y = rng.normal(size=(3, 5, 1, 16))
  ref = inv_entropy_reference.score_dataset(0, emb_x, emb_y, num_bootstrap=4)
  got = ie.score_dataset(jax.random.key(0), emb_x, emb_y, num_bootstrap=4)
  assert inv_entropy_reference.MEASURES == ie.MEASURE_NAMES
  for part in ("mean", "std", "nr"):
    for name in ie.MEASURE_NAMES:
      np.testing.assert_allclose(
        getattr(getattr(got, part), name), ref[part][name], rtol=1e-5, atol=1e-6, err_msg=name
      )


@pytest.mark.parametrize("px_formula", ie.PX_FORMULAS)
def test_bootstrap_measures_equal_the_full_dual_walk(px_formula):
  # The bootstrap's O(m^2) measures agree with dual_walk's, which forms P(X|Y) in full.
  rng = np.random.default_rng(11)
  p_x = ie.transition(jnp.asarray(rng.random((6, 6)) + 0.1))
  p_y = ie.transition(jnp.asarray(rng.random((6, 6)) + 0.1))
  fast = ie._walk_measures(p_x, p_y, px_formula)
  full = ie.dual_walk(p_x, p_y, px_formula).measures()
  for name in ie.MEASURE_NAMES:
    np.testing.assert_allclose(getattr(fast, name), getattr(full, name), rtol=1e-6, err_msg=name)


def test_score_dataset_sharded_over_devices_equals_unsharded():
  from jaxsys.lib import sharding

  mesh = sharding.make_mesh()  # 8 fake CPU devices in the test suite
  rng = np.random.default_rng(5)
  emb_x = rng.normal(size=(12, 4, 8)).astype(np.float32)  # 12 questions: padded to 16
  emb_y = rng.normal(size=(12, 4, 3, 8)).astype(np.float32)
  key = jax.random.key(3)
  plain = ie.score_dataset(key, emb_x, emb_y, num_bootstrap=6)
  split = ie.score_dataset(key, emb_x, emb_y, num_bootstrap=6, mesh=mesh)
  jax.tree.map(np.testing.assert_array_equal, split, plain)


def test_score_dataset_names_the_questions_whose_similarities_overflow():
  emb_x = np.ones((3, 4, 8), np.float32)
  emb_y = np.ones((3, 4, 2, 8), np.float32)
  emb_y[1] *= 1e30  # finite, but its squared norm is not
  with pytest.raises(ValueError, match=r"questions \[1\] overflow"):
    ie.score_dataset(jax.random.key(0), emb_x, emb_y, num_bootstrap=2)
