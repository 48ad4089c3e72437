"""Tests of the UQ evaluation metrics against the spec's numbers and brute-force definitions."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsys.algorithms.uq import metrics

SPEC_U = np.array([0.1, 0.5, 0.3, 0.7, 0.6])
SPEC_Y = np.array([1, 1, 0, 0, 1])


# ----------------------------------------------------------------------------------------------
# Brute-force references, written from the definitions
# ----------------------------------------------------------------------------------------------


def auroc_by_pairs(u, y):
  confidence = -np.asarray(u, float)
  y = np.asarray(y, bool)
  pos, neg = confidence[y], confidence[~y]
  wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
  return wins.mean()


@functools.cache
def all_permutations(n):
  return np.array(list(itertools.permutations(range(n))))


def prr_by_tie_orders(u, y, max_rejection=None):
  """Mean prediction-rejection area over every order of the tied answers (N <= 7)."""
  u, y = np.asarray(u, float), np.asarray(y, float)
  n = len(u)
  k_min = 1 if max_rejection is None else max(1, n - math.floor(max_rejection * n + 1e-9))
  orders = all_permutations(n)
  orders = orders[np.all(np.diff(u[orders], axis=1) >= 0, axis=1)]
  k = np.arange(1, n + 1)

  def area(y_ordered):
    return (np.cumsum(y_ordered, axis=-1) / k)[..., k_min - 1 :].mean(axis=-1)

  mean_area = area(y[orders]).mean()
  oracle = area(np.sort(y)[::-1])
  random = y.mean()
  return (mean_area - random) / (oracle - random)


def ap_by_thresholds(u, y):
  confidence = -np.asarray(u, float)
  y = np.asarray(y, float)
  total, previous_recall = 0.0, 0.0
  for threshold in np.unique(confidence)[::-1]:
    selected = confidence >= threshold
    recall = y[selected].sum() / y.sum()
    total += (recall - previous_recall) * y[selected].mean()
    previous_recall = recall
  return total


def isotonic_by_min_max(c, y):
  """Isotonic fit at each distinct c: max over j <= i of min over k >= i of mean(block j..k)."""
  c, y = np.asarray(c, float), np.asarray(y, float)
  thresholds = np.unique(c)
  sums = np.array([y[c == t].sum() for t in thresholds])
  counts = np.array([(c == t).sum() for t in thresholds])
  size = len(thresholds)
  fitted = np.empty(size)
  for i in range(size):
    fitted[i] = max(
      min(sums[j : k + 1].sum() / counts[j : k + 1].sum() for k in range(i, size))
      for j in range(i + 1)
    )
  return thresholds, fitted


def labelled_sets(max_size=7):
  """(u, y) pairs with both classes and many ties (u drawn from 4 values)."""
  return st.integers(2, max_size).flatmap(
    lambda n: st.tuples(
      st.lists(st.integers(0, 3), min_size=n, max_size=n),
      st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < len(y)),
    )
  )


# ----------------------------------------------------------------------------------------------
# Spec numbers and hand cases
# ----------------------------------------------------------------------------------------------


def test_spec_example():
  assert metrics.auroc(SPEC_U, SPEC_Y) == pytest.approx(0.666667, abs=1e-6)
  assert metrics.prr(SPEC_U, SPEC_Y) == pytest.approx(0.382716, abs=1e-6)
  # PRR = (A - A_rnd) / (A_orc - A_rnd) with the spec's A, A_orc, A_rnd.
  assert metrics.prr(SPEC_U, SPEC_Y) == pytest.approx((0.703333 - 0.6) / (0.87 - 0.6), abs=1e-5)
  assert metrics.ap_correct(SPEC_U, SPEC_Y) == pytest.approx(0.805556, abs=1e-6)


def test_perfect_and_reversed_ranking():
  y = np.array([1, 1, 1, 0, 0, 0, 0])
  perfect = np.arange(7.0)  # correct answers have the lowest uncertainty
  assert metrics.auroc(perfect, y) == 1.0
  assert metrics.prr(perfect, y) == pytest.approx(1.0)
  assert metrics.ap_correct(perfect, y) == pytest.approx(1.0)
  assert metrics.auroc(-perfect, y) == 0.0
  assert metrics.prr(-perfect, y) < 0.0
  assert metrics.prr(-perfect, y, max_rejection=0.5) < 0.0


def test_all_tied_scores_carry_no_information():
  y = np.array([1, 0, 1, 1, 0])
  u = np.full(5, 0.4)
  assert metrics.auroc(u, y) == 0.5
  assert metrics.prr(u, y) == pytest.approx(0.0, abs=1e-12)
  assert metrics.ap_correct(u, y) == pytest.approx(0.6)  # precision of the only threshold


def test_ties_counted_half():
  # One correct-incorrect pair tied, one won: AUROC = (1 + 0.5) / 2.
  assert metrics.auroc([0.1, 0.5, 0.5], [1, 1, 0]) == pytest.approx(0.75)


def test_prr_max_rejection_matches_brute_force_on_spec():
  expected = prr_by_tie_orders(SPEC_U, SPEC_Y, max_rejection=0.5)
  assert metrics.prr(SPEC_U, SPEC_Y, max_rejection=0.5) == pytest.approx(expected)
  assert metrics.prr(SPEC_U, SPEC_Y, max_rejection=1.0) == metrics.prr(SPEC_U, SPEC_Y)


@pytest.mark.parametrize("y", [[1, 1, 1], [0, 0, 0]])
@pytest.mark.parametrize("metric", [metrics.auroc, metrics.prr, metrics.ap_correct])
def test_one_class_gives_nan_and_reason(metric, y):
  with pytest.warns(metrics.MetricUndefinedWarning, match="y is all"):
    assert math.isnan(metric([0.1, 0.2, 0.3], y))
  assert "y is all" in metrics.undefined_reason(y)
  assert metrics.undefined_reason([0, 1]) is None


def test_prr_nan_when_only_full_retention_is_left():
  with pytest.warns(metrics.MetricUndefinedWarning, match="keeps only"):
    assert math.isnan(metrics.prr(SPEC_U, SPEC_Y, max_rejection=0.1))


@pytest.mark.parametrize(
  ("u", "y", "match"),
  [
    ([0.1, np.nan], [1, 0], "u contains NaN"),
    ([0.1, 0.2], [1, 2], "y must hold 0/1"),
    ([0.1, 0.2], [1, 0, 1], "same shape"),
    ([], [], "at least one"),
    (0.3, 1, "scalar"),
  ],
)
def test_bad_input_raises(u, y, match):
  with pytest.raises(ValueError, match=match):
    metrics.auroc(u, y)


@pytest.mark.parametrize("max_rejection", [0.0, 1.5, "half"])
def test_bad_max_rejection_raises(max_rejection):
  with pytest.raises(ValueError, match="max_rejection"):
    metrics.prr(SPEC_U, SPEC_Y, max_rejection=max_rejection)


# ----------------------------------------------------------------------------------------------
# Against brute force on random inputs
# ----------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(labelled_sets(), st.sampled_from([None, 0.5, 0.8]))
def test_rank_metrics_match_brute_force(data, max_rejection):
  u, y = np.array(data[0], float), np.array(data[1])
  assert metrics.auroc(u, y) == pytest.approx(auroc_by_pairs(u, y), abs=1e-12)
  assert metrics.ap_correct(u, y) == pytest.approx(ap_by_thresholds(u, y), abs=1e-12)
  expected_prr = prr_by_tie_orders(u, y, max_rejection)
  assert metrics.prr(u, y, max_rejection) == pytest.approx(expected_prr, abs=1e-9)


def test_batched_rows_equal_single_sets():
  rng = np.random.default_rng(0)
  u = rng.integers(0, 6, size=(3, 4, 30)).astype(float)
  y = rng.integers(0, 2, size=(3, 4, 30))
  for metric in [metrics.auroc, metrics.prr, metrics.ap_correct, metrics.brier_iso]:
    batched = metric(u, y)
    assert batched.shape == (3, 4)
    expected = [[metric(u[i, j], y[i, j]) for j in range(4)] for i in range(3)]
    np.testing.assert_allclose(batched, expected, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jax_twins_equal_numpy(dtype):
  rng = np.random.default_rng(1)
  u = rng.integers(0, 8, size=(20, 25)).astype(dtype)
  y = rng.integers(0, 2, size=(20, 25))
  y[0] = 1  # one set with a single class: NaN in both
  pairs = [
    (metrics.auroc_jax, metrics.auroc),
    (metrics.prr_jax, metrics.prr),
    (
      functools.partial(metrics.prr_jax, max_rejection=0.5),
      functools.partial(metrics.prr, max_rejection=0.5),
    ),
    (metrics.ap_correct_jax, metrics.ap_correct),
  ]
  if dtype == np.float32:  # float32 only checks dtypes and rounding: two twins suffice
    pairs = pairs[:2]
  tolerance = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12}
  for jax_fn, numpy_fn in pairs:
    with pytest.warns(metrics.MetricUndefinedWarning):
      expected = numpy_fn(u, y)
    got = jax.jit(jax.vmap(jax_fn))(jnp.asarray(u), jnp.asarray(y))
    assert got.dtype == jnp.promote_types(dtype, jnp.float32)
    np.testing.assert_allclose(np.asarray(got), expected, **tolerance)


def test_jax_auroc_vmaps_over_bootstrap_indices():
  rng = np.random.default_rng(2)
  u = rng.normal(size=50)
  y = (rng.random(50) < 0.4).astype(np.int32)
  indices = metrics.bootstrap_indices(50, num=40, seed=3)
  got = jax.jit(jax.vmap(lambda i: metrics.auroc_jax(jnp.asarray(u)[i], jnp.asarray(y)[i])))(
    jnp.asarray(indices)
  )
  np.testing.assert_allclose(np.asarray(got), metrics.auroc(u[indices], y[indices]), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Isotonic calibration, Brier, ECE, normalisers
# ----------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(labelled_sets(max_size=12))
def test_isotonic_fit_equals_min_max_formula(data):
  c, y = np.array(data[0], float), np.array(data[1], float)
  calibrator = metrics.IsotonicCalibrator().fit(c, y)
  thresholds, expected = isotonic_by_min_max(c, y)
  np.testing.assert_array_equal(calibrator.thresholds, thresholds)
  np.testing.assert_allclose(calibrator.values, expected, atol=1e-12)
  assert np.all(np.diff(calibrator.values) >= 0)


def test_isotonic_predict_is_monotone_and_clipped():
  rng = np.random.default_rng(4)
  c = rng.normal(size=200)
  y = (rng.random(200) < 1 / (1 + np.exp(-2 * c))).astype(float)
  calibrator = metrics.IsotonicCalibrator().fit(c, y)
  grid = np.linspace(-10, 10, 2001)
  p = calibrator.predict(grid)
  assert np.all(np.diff(p) >= 0)
  assert p.min() >= 0 and p.max() <= 1
  assert p[0] == calibrator.values[0] and p[-1] == calibrator.values[-1]  # clipped outside
  assert calibrator.predict(c.min() - 5) == calibrator.predict(c.min())
  assert calibrator.values[-1] > calibrator.values[0]  # the signal is found


def test_isotonic_interpolates_between_fitted_confidences():
  calibrator = metrics.IsotonicCalibrator().fit([0.0, 1.0], [0.0, 1.0])
  assert calibrator.predict(0.25) == pytest.approx(0.25)
  with pytest.raises(ValueError, match="before fit"):
    metrics.IsotonicCalibrator().predict([0.0])
  with pytest.raises(ValueError, match="y must lie in"):
    metrics.IsotonicCalibrator().fit([0.0, 1.0], [0.0, 2.0])


def brier_by_brute_force(u, y, train_masks):
  """Brier of isotonic fits (min-max formula + linear interpolation) on the given train masks."""
  u, y = np.asarray(u, float), np.asarray(y, float)
  p = np.empty_like(u)
  for train, held_out in train_masks:
    thresholds, fitted = isotonic_by_min_max(-u[train], y[train])
    p[held_out] = np.interp(-u[held_out], thresholds, fitted)
  return np.mean((p - y) ** 2)


def test_brier_variants_against_brute_force():
  rng = np.random.default_rng(5)
  u = rng.integers(0, 8, size=30).astype(float)
  y = (rng.random(30) < 1 / (1 + np.exp(u - 4))).astype(float)
  everything = np.ones(30, bool)
  insample = brier_by_brute_force(u, y, [(everything, everything)])
  assert metrics.brier_iso_insample(u, y) == pytest.approx(insample, abs=1e-12)
  loo_masks = [(np.arange(30) != i, np.arange(30) == i) for i in range(30)]
  loo = brier_by_brute_force(u, y, loo_masks)
  assert metrics.brier_iso_loo(u, y) == pytest.approx(loo, abs=1e-12)
  probability = metrics.cross_fitted_probabilities(u, y, num_folds=5, seed=7)
  assert metrics.brier_iso(u, y, seed=7) == pytest.approx(np.mean((probability - y) ** 2))
  # Cross-fitting scores held-out answers, so it is not the optimistic in-sample number.
  assert metrics.brier_iso(u, y, seed=7) > metrics.brier_iso_insample(u, y) + 1e-3
  assert metrics.brier_iso_loo(u, y) > metrics.brier_iso_insample(u, y) + 1e-3


def test_brier_iso_folds_are_seeded():
  rng = np.random.default_rng(6)
  u, y = rng.normal(size=60), rng.integers(0, 2, size=60)
  assert metrics.brier_iso(u, y, seed=1) == metrics.brier_iso(u, y, seed=1)
  assert metrics.brier_iso(u, y, seed=1) != metrics.brier_iso(u, y, seed=2)
  with pytest.raises(ValueError, match="num_folds"):
    metrics.brier_iso(u[:3], y[:3])


def test_ece_hand_case():
  p = np.array([0.1, 0.1, 0.9, 0.9])
  y = np.array([0, 1, 1, 1])
  assert metrics.ece(p, y) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
  assert metrics.ece([0.0, 1.0], [0, 1]) == 0.0  # 1.0 falls in the last bin
  with pytest.raises(ValueError, match="probability must lie"):
    metrics.ece([1.5, 0.0], [1, 0])
  rng = np.random.default_rng(8)
  u, y = rng.normal(size=80), rng.integers(0, 2, size=80)
  assert 0.0 <= metrics.ece_iso(u, y) <= 1.0


def test_calibrator_kinds():
  rng = np.random.default_rng(9)
  u = rng.normal(size=100)
  y = (rng.random(100) < 1 / (1 + np.exp(2 * u))).astype(int)
  isotonic = metrics.Calibrator("isotonic").fit(u, y).confidence(np.sort(u))
  assert np.all(np.diff(isotonic) <= 0) and isotonic.min() >= 0 and isotonic.max() <= 1

  minmax = metrics.Calibrator("minmax").fit([1.0, 3.0, 2.0])
  np.testing.assert_allclose(minmax.confidence([0.0, 1.0, 2.0, 3.0, 5.0]), [1, 1, 0.5, 0, 0])

  quantile = metrics.Calibrator("quantile").fit([1.0, 2.0, 3.0, 4.0])
  np.testing.assert_allclose(quantile.confidence([0.0, 2.5, 5.0, 2.0]), [1, 0.5, 0, 0.625])

  for kind in ["minmax", "quantile"]:  # label-free normalisers keep the ranking
    confidence = metrics.Calibrator(kind).fit(u).confidence(u)
    assert metrics.auroc(-confidence, y) == pytest.approx(metrics.auroc(u, y))


@pytest.mark.parametrize(
  ("kind", "u", "y", "match"),
  [
    ("platt", [0.0, 1.0], None, "kind must be"),
    ("isotonic", [0.0, 1.0], None, "y is required"),
    ("minmax", [2.0, 2.0], None, "constant"),
    ("quantile", [0.0, np.inf], None, "finite"),
  ],
)
def test_calibrator_bad_input(kind, u, y, match):
  with pytest.raises(ValueError, match=match):
    metrics.Calibrator(kind).fit(u, y)


# ----------------------------------------------------------------------------------------------
# Paired bootstrap
# ----------------------------------------------------------------------------------------------


def test_bootstrap_matches_manual_resampling():
  rng = np.random.default_rng(10)
  y = np.zeros(12, int)
  y[[2, 7]] = 1  # two positives: some resamples have none
  u = rng.normal(size=12)
  result = metrics.bootstrap({"auroc": metrics.auroc}, {"m": u}, y, num=40, seed=11)["m"]["auroc"]

  values, skipped = [], 0
  for index in metrics.bootstrap_indices(12, num=40, seed=11):
    if metrics.undefined_reason(y[index]) is not None:
      skipped += 1
      continue
    values.append(auroc_by_pairs(u[index], y[index]))
  assert skipped > 0
  assert result.num_skipped == skipped
  assert result.num_used == 40 - skipped
  assert result.point == pytest.approx(auroc_by_pairs(u, y))
  assert result.mean == pytest.approx(np.mean(values))
  assert result.std == pytest.approx(np.std(values))


def test_bootstrap_is_paired_across_methods():
  rng = np.random.default_rng(12)
  y = rng.integers(0, 2, size=40)
  u = rng.normal(size=40)
  result = metrics.bootstrap(metrics.STANDARD_METRICS, {"a": u, "flip": -u, "same": u.copy()}, y)
  assert set(result["a"]) == set(metrics.STANDARD_METRICS)
  assert result["a"] == result["same"]
  # AUROC of -u is 1 - AUROC of u on every resample, which holds for the spread only if paired.
  assert result["a"]["auroc"].mean + result["flip"]["auroc"].mean == pytest.approx(1.0)
  assert result["a"]["auroc"].std == pytest.approx(result["flip"]["auroc"].std)
  assert result["a"]["auroc"].std > 0


def test_bootstrap_per_row_and_bad_metric():
  rng = np.random.default_rng(13)
  y = rng.integers(0, 2, size=30)
  u = rng.normal(size=30)

  def accuracy_of_confident_half(u, y):
    return float(np.mean(y[np.argsort(u)[: len(u) // 2]]))

  lifted = metrics.bootstrap({"acc": metrics.per_row(accuracy_of_confident_half)}, {"m": u}, y)
  assert lifted["m"]["acc"].num_used == 40
  with pytest.raises(ValueError, match="per_row"):
    metrics.bootstrap({"acc": accuracy_of_confident_half}, {"m": u}, y)
  with pytest.raises(ValueError, match="u_by_method"):
    metrics.bootstrap({"auroc": metrics.auroc}, {"m": u[:5]}, y)


# ----------------------------------------------------------------------------------------------
# TSU
# ----------------------------------------------------------------------------------------------

HAND_UQ = np.array(
  [
    [1.0, 2.0, 3.0, 4.0],  # rises everywhere
    [1.0, 1.0, 2.0, 3.0],  # tie between the first two columns
    [3.0, 2.0, 1.0, 0.0],  # falls everywhere
    [0.1, 0.5, 0.4, 0.9],  # rises except between columns 1 and 2
  ]
)


def test_tsu_hand_made():
  assert metrics.tsu(HAND_UQ, (0, 1)) == 50.0
  assert metrics.tsu(HAND_UQ, (0, 3)) == 75.0
  assert metrics.tsu(HAND_UQ, (1, 2)) == 50.0
  assert metrics.tsu(HAND_UQ, (0, 1, 2)) == 25.0
  assert metrics.tsu(HAND_UQ, (0, 1, 2, 3)) == 25.0
  assert metrics.tsu(HAND_UQ, (3, 0)) == 25.0  # columns listed low to high temperature


def test_tsu_chance_levels():
  distinct = np.arange(8.0).reshape(2, 4)
  assert metrics.tsu_chance(distinct, (0, 1)) == pytest.approx(100 / 2)
  assert metrics.tsu_chance(distinct, (0, 1, 2)) == pytest.approx(100 / 6)
  assert metrics.tsu_chance(distinct, (0, 1, 2, 3)) == pytest.approx(100 / 24)
  assert metrics.tsu_iid_chance(3) == pytest.approx(16.666667, abs=1e-6)
  # Row 1 has a tie in columns 0 and 1, so only 3 of 4 questions can rise at all.
  assert metrics.tsu_chance(HAND_UQ, (0, 1, 2)) == pytest.approx(75.0 / 6)
  assert metrics.tsu_chance(HAND_UQ, (1, 2, 3)) == pytest.approx(100.0 / 6)


def test_tsu_of_iid_scores_is_near_chance():
  uq = np.random.default_rng(14).normal(size=(20000, 4))
  for chain in [(0, 1), (0, 1, 2), (0, 1, 2, 3)]:
    assert metrics.tsu(uq, chain) == pytest.approx(metrics.tsu_iid_chance(len(chain)), abs=1.0)


def test_tsu_jax_equals_numpy():
  rng = np.random.default_rng(15)
  uq = rng.integers(0, 4, size=(50, 4)).astype(float)
  for chain in [(0, 1), (1, 3), (0, 1, 2), (0, 1, 2, 3)]:
    tsu_jit = jax.jit(metrics.tsu_jax, static_argnums=1)
    assert float(tsu_jit(jnp.asarray(uq), chain)) == pytest.approx(metrics.tsu(uq, chain))
    chance_jit = jax.jit(metrics.tsu_chance_jax, static_argnums=1)
    assert float(chance_jit(jnp.asarray(uq), chain)) == pytest.approx(metrics.tsu_chance(uq, chain))


@pytest.mark.parametrize(
  ("uq", "chain", "match"),
  [
    (HAND_UQ, (0,), "at least 2"),
    (HAND_UQ, (0, 4), "column indices"),
    (HAND_UQ, (1, 1), "repeat"),
    (HAND_UQ[0], (0, 1), r"\[Q, T\]"),
    (np.where(HAND_UQ == 2.0, np.nan, HAND_UQ), (0, 1), "NaN"),
  ],
)
def test_tsu_bad_input(uq, chain, match):
  with pytest.raises(ValueError, match=match):
    metrics.tsu(uq, chain)
