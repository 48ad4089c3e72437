"""Evaluation metrics for uncertainty scores: AUROC, PRR, the paper's AP "PRR", calibration, TSU.

Sign convention (spec section 6.2): every score is an uncertainty u (higher = less reliable), the
confidence is c = -u, and a label y is 1 for a correct answer and 0 otherwise.

The rank metrics `auroc`, `prr` and `ap_correct` are host-side numpy functions over [..., N]
arrays, so one call scores a whole stack of bootstrap resamples; `auroc_jax`, `prr_jax`,
`ap_correct_jax`, `tsu_jax` and `tsu_chance_jax` are pure jittable twins for one [N] set (vmap them
over resamples). Ties in u are handled exactly: AUROC counts a tie as 1/2, PRR and AP use the
expectation over all orders of the tied answers.

When a metric is undefined (one class absent) it returns NaN and warns with a
`MetricUndefinedWarning` that says why; `undefined_reason(y)` gives the same text up front.

Calibration: `IsotonicCalibrator` (PAVA) maps confidence to P(correct); the Brier scores fit it by
5-fold cross-fitting (default), leave-one-out, or in-sample (the paper's optimistic protocol).
`Calibrator` wraps it and the label-free `minmax` and `quantile` normalisers (spec section 10).

TSU (spec section 7) is the percentage of questions whose uncertainty rises strictly along a chain
of temperatures; `tsu_chance` is its tie-aware chance level and `tsu_iid_chance` is 1/k!.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class MetricUndefinedWarning(RuntimeWarning):
  """A metric returned NaN because it is undefined on its input; the message says why."""


def undefined_reason(y) -> str | None:
  """Why the rank metrics are undefined on labels y[N] (a class is absent), or None."""
  y = np.asarray(y)
  num_correct = int(np.count_nonzero(y))
  if y.size == 0:
    return "there are no answers"
  if num_correct == 0:
    return f"no answer of {y.size} is correct (y is all 0)"
  if num_correct == y.size:
    return f"every answer of {y.size} is correct (y is all 1)"
  return None


# ----------------------------------------------------------------------------------------------
# Input checks and shared helpers (numpy, batched over leading axes)
# ----------------------------------------------------------------------------------------------


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
  return tuple(int(i) for i in np.argwhere(mask)[0])


def _check_labels(y) -> np.ndarray:
  """y[..., N] in {0, 1} as float64, or ValueError."""
  y_raw = np.asarray(y)
  bad = ~((y_raw == 0) | (y_raw == 1))
  if bad.any():
    index = _first_index(bad)
    raise ValueError(f"y must hold 0/1 labels, got {y_raw[index]!r} at index {index}")
  return y_raw.astype(np.float64)


def _check_scores_labels(u, y) -> tuple[np.ndarray, np.ndarray]:
  """u[..., N] float64 without NaN and y[..., N] in {0, 1} as float64, or ValueError."""
  u = np.asarray(u, dtype=np.float64)
  y_shape = np.shape(y)
  if u.ndim == 0:
    raise ValueError(f"u must have shape [..., N], got a scalar {float(u)!r}")
  if y_shape != u.shape:
    raise ValueError(f"u and y must have the same shape, got u {u.shape} and y {y_shape}")
  if u.shape[-1] == 0:
    raise ValueError(f"u must hold at least one score per set, got shape {u.shape}")
  nan = np.isnan(u)
  if nan.any():
    raise ValueError(f"u contains NaN at index {_first_index(nan)}; every answer needs a score")
  return u, _check_labels(y)


def _sort_by_uncertainty(u: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """u and y sorted by u ascending (most confident first) along the last axis."""
  order = np.argsort(u, axis=-1, kind="stable")
  return np.take_along_axis(u, order, -1), np.take_along_axis(y, order, -1)


def _tie_bounds(u_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """First and last sorted position of each element's tie group; both int [..., N]."""
  n = u_sorted.shape[-1]
  position = np.arange(n)
  starts_group = np.ones(u_sorted.shape, dtype=bool)
  starts_group[..., 1:] = u_sorted[..., 1:] != u_sorted[..., :-1]
  ends_group = np.ones(u_sorted.shape, dtype=bool)
  ends_group[..., :-1] = starts_group[..., 1:]
  start = np.maximum.accumulate(np.where(starts_group, position, 0), axis=-1)
  end_reversed = np.where(ends_group, position, n - 1)[..., ::-1]
  end = np.minimum.accumulate(end_reversed, axis=-1)[..., ::-1]
  return start, end


def _tie_group_means(y_sorted: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
  """Each element's label replaced by the mean label of its tie group, [..., N]."""
  zeros = np.zeros(y_sorted.shape[:-1] + (1,), dtype=y_sorted.dtype)
  cumulative = np.concatenate([zeros, np.cumsum(y_sorted, axis=-1)], axis=-1)
  through_end = np.take_along_axis(cumulative, end + 1, -1)
  before_start = np.take_along_axis(cumulative, start, -1)
  return (through_end - before_start) / (end - start + 1)


def _finish(value: np.ndarray, y: np.ndarray, metric: str, extra_nan_reason: str | None = None):
  """NaN where a class is absent (with a warning); a float for one set, else an array."""
  num_correct = y.sum(axis=-1)
  one_class = (num_correct == 0) | (num_correct == y.shape[-1])
  value = np.where(one_class, np.nan, value)
  if one_class.any():
    if value.ndim == 0:
      reason = undefined_reason(y)
    else:
      reason = f"{int(one_class.sum())} of {one_class.size} sets have only one class"
    warnings.warn(f"{metric} is NaN: {reason}", MetricUndefinedWarning, stacklevel=3)
  elif extra_nan_reason is not None and np.isnan(value).any():
    warnings.warn(f"{metric} is NaN: {extra_nan_reason}", MetricUndefinedWarning, stacklevel=3)
  return float(value) if value.ndim == 0 else value


def _min_retained(n: int, max_rejection: float | None) -> int:
  """Smallest retained count k on the PRR curve: k >= N - floor(max_rejection * N), k >= 1."""
  if max_rejection is None:
    return 1
  if not isinstance(max_rejection, int | float) or not 0.0 < max_rejection <= 1.0:
    raise ValueError(f"max_rejection must be a number in (0, 1] or None, got {max_rejection!r}")
  # The small slack keeps e.g. 0.3 * 10 from flooring to 2 in floating point.
  return max(1, n - math.floor(max_rejection * n + 1e-9))


# ----------------------------------------------------------------------------------------------
# Rank metrics (numpy)
# ----------------------------------------------------------------------------------------------


def auroc(u, y):
  """AUROC of confidence -u for correctness: P(c_pos > c_neg) + P(tie) / 2 (Mann-Whitney).

  Args:
    u: uncertainties [..., N].
    y: labels [..., N], 1 = correct.

  Returns:
    A float for one set, else an array [...]; NaN (with a warning) where a class is absent.
  """
  u, y = _check_scores_labels(u, y)
  u_sorted, y_sorted = _sort_by_uncertainty(u, y)
  start, end = _tie_bounds(u_sorted)
  mid_rank = (start + end) / 2.0 + 1.0  # 1-based rank of u, ties averaged
  n = u.shape[-1]
  num_correct = y.sum(axis=-1)
  num_wrong = n - num_correct
  # An incorrect answer ranks above a correct one in u exactly when the correct one is the more
  # confident, so the Mann-Whitney U of the incorrect answers is the AUROC numerator.
  wrong_rank_sum = ((1.0 - y_sorted) * mid_rank).sum(axis=-1)
  with np.errstate(divide="ignore", invalid="ignore"):
    value = (wrong_rank_sum - num_wrong * (num_wrong + 1) / 2.0) / (num_correct * num_wrong)
  return _finish(value, y, "auroc")


def prr(u, y, max_rejection: float | None = None):
  """Prediction-rejection ratio (Malinin-Gales, as in lm-polygraph), exact under ties.

  Answers are retained from the most confident (smallest u); tied answers contribute their tie
  group's mean label, the expectation over every order of the tie. With R(k) the accuracy of the
  k most confident answers, A = mean_k R(k), the oracle A_orc sorts by y, the random baseline is
  A_rnd = mean(y), and PRR = (A - A_rnd) / (A_orc - A_rnd).

  Args:
    u: uncertainties [..., N].
    y: labels [..., N], 1 = correct.
    max_rejection: reject at most this fraction, i.e. average only over k >= N (1 - max_rejection)
      ("prr@0.5" is 0.5); None averages over every k = 1..N.

  Returns:
    A float for one set, else an array [...]; NaN (with a warning) where a class is absent or the
    allowed range leaves the oracle no better than random.
  """
  u, y = _check_scores_labels(u, y)
  n = u.shape[-1]
  k_min = _min_retained(n, max_rejection)
  u_sorted, y_sorted = _sort_by_uncertainty(u, y)
  start, end = _tie_bounds(u_sorted)
  expected_label = _tie_group_means(y_sorted, start, end)
  retained = np.arange(1, n + 1, dtype=np.float64)
  accuracy = np.cumsum(expected_label, axis=-1) / retained
  num_correct = y.sum(axis=-1, keepdims=True)
  oracle_accuracy = np.minimum(retained, num_correct) / retained
  area = accuracy[..., k_min - 1 :].mean(axis=-1)
  oracle_area = oracle_accuracy[..., k_min - 1 :].mean(axis=-1)
  random_area = num_correct[..., 0] / n
  # With both classes the oracle beats random unless only k = N is left; testing that exactly
  # avoids trusting a rounded difference.
  defined = k_min < n
  headroom = oracle_area - random_area
  with np.errstate(divide="ignore", invalid="ignore"):
    value = np.where(defined, (area - random_area) / headroom, np.nan)
  reason = f"max_rejection={max_rejection} keeps only k = N = {n}, where oracle = random"
  return _finish(value, y, "prr", extra_nan_reason=reason)


def ap_correct(u, y):
  """The paper's "PRR": average precision of "correct" ranked by confidence -u.

  Step-wise (no interpolation) with tied confidences forming one threshold, i.e.
  AP = sum over distinct thresholds of (recall gain) x (precision there). This equals the official
  code's AP(y, 1 - u) / AP(y, y) because the denominator is 1. It tracks base accuracy, so always
  report it as "paper PRR (AP)", never as the Malinin-Gales `prr`.

  Args:
    u: uncertainties [..., N].
    y: labels [..., N], 1 = correct.

  Returns:
    A float for one set, else an array [...]; NaN (with a warning) where a class is absent.
  """
  u, y = _check_scores_labels(u, y)
  u_sorted, y_sorted = _sort_by_uncertainty(u, y)
  _, end = _tie_bounds(u_sorted)
  true_positives = np.cumsum(y_sorted, axis=-1)
  # Every correct answer adds 1/num_correct recall at the end of its tie group.
  precision_at_group_end = np.take_along_axis(true_positives, end, -1) / (end + 1.0)
  with np.errstate(divide="ignore", invalid="ignore"):
    value = (y_sorted * precision_at_group_end).sum(axis=-1) / y.sum(axis=-1)
  return _finish(value, y, "ap_correct")


# ----------------------------------------------------------------------------------------------
# Rank metrics (JAX, one set; vmap over resamples)
# ----------------------------------------------------------------------------------------------


def _sorted_groups_jax(u: jax.Array, y: jax.Array):
  """Sorted labels as floats, tie-group start and end positions, and the float dtype."""
  u = jnp.asarray(u)
  dtype = jnp.promote_types(u.dtype, jnp.float32)
  order = jnp.argsort(u, stable=True)
  u_sorted = u[order]
  y_sorted = jnp.asarray(y)[order].astype(dtype)
  start = jnp.searchsorted(u_sorted, u_sorted, side="left")
  end = jnp.searchsorted(u_sorted, u_sorted, side="right") - 1
  return y_sorted, start, end, dtype


def auroc_jax(u: jax.Array, y: jax.Array) -> jax.Array:
  """`auroc` for one set u[N], y[N] as a pure jittable function; NaN if a class is absent.

  No value checks happen here (NaN scores give undefined results); use `auroc` on the host.
  """
  y_sorted, start, end, dtype = _sorted_groups_jax(u, y)
  n = y_sorted.shape[0]
  mid_rank = (start + end).astype(dtype) / 2 + 1
  num_correct = y_sorted.sum()
  num_wrong = n - num_correct
  wrong_rank_sum = ((1 - y_sorted) * mid_rank).sum()
  defined = (num_correct > 0) & (num_wrong > 0)
  denominator = jnp.where(defined, num_correct * num_wrong, 1)
  value = (wrong_rank_sum - num_wrong * (num_wrong + 1) / 2) / denominator
  return jnp.where(defined, value, jnp.nan).astype(dtype)


def prr_jax(u: jax.Array, y: jax.Array, max_rejection: float | None = None) -> jax.Array:
  """`prr` for one set u[N], y[N] as a pure jittable function (max_rejection is static)."""
  y_sorted, start, end, dtype = _sorted_groups_jax(u, y)
  n = y_sorted.shape[0]
  k_min = _min_retained(n, max_rejection)
  cumulative = jnp.concatenate([jnp.zeros((1,), dtype), jnp.cumsum(y_sorted)])
  expected_label = (cumulative[end + 1] - cumulative[start]) / (end - start + 1).astype(dtype)
  retained = jnp.arange(1, n + 1, dtype=dtype)
  accuracy = jnp.cumsum(expected_label) / retained
  num_correct = y_sorted.sum()
  oracle_accuracy = jnp.minimum(retained, num_correct) / retained
  area = accuracy[k_min - 1 :].mean()
  random_area = num_correct / n
  headroom = oracle_accuracy[k_min - 1 :].mean() - random_area
  defined = (num_correct > 0) & (num_correct < n) & (k_min < n)
  value = (area - random_area) / jnp.where(defined, headroom, 1)
  return jnp.where(defined, value, jnp.nan).astype(dtype)


def ap_correct_jax(u: jax.Array, y: jax.Array) -> jax.Array:
  """`ap_correct` (the paper's "PRR") for one set u[N], y[N] as a pure jittable function."""
  y_sorted, _, end, dtype = _sorted_groups_jax(u, y)
  n = y_sorted.shape[0]
  true_positives = jnp.cumsum(y_sorted)
  precision_at_group_end = true_positives[end] / (end + 1).astype(dtype)
  num_correct = y_sorted.sum()
  defined = (num_correct > 0) & (num_correct < n)
  value = (y_sorted * precision_at_group_end).sum() / jnp.where(defined, num_correct, 1)
  return jnp.where(defined, value, jnp.nan).astype(dtype)


# ----------------------------------------------------------------------------------------------
# Isotonic calibration and label-free normalisers
# ----------------------------------------------------------------------------------------------


def _pava(means: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """Weighted least-squares non-decreasing fit to means[K] (pool adjacent violators), [K]."""
  block_value: list[float] = []
  block_weight: list[float] = []
  block_size: list[int] = []
  for mean, weight in zip(means.tolist(), weights.tolist(), strict=True):
    value, total, size = mean, weight, 1
    while block_value and block_value[-1] > value:
      previous_weight = block_weight.pop()
      value = (block_value.pop() * previous_weight + value * total) / (previous_weight + total)
      total += previous_weight
      size += block_size.pop()
    block_value.append(value)
    block_weight.append(total)
    block_size.append(size)
  return np.repeat(np.asarray(block_value, dtype=np.float64), block_size)


class IsotonicCalibrator:
  """Non-decreasing map from confidence c to P(correct), fitted by PAVA.

  Equal confidences are pooled first. `predict` interpolates linearly between the fitted
  confidences (as scikit-learn's IsotonicRegression does) and clips outside their range.
  """

  def __init__(self):
    self.thresholds: np.ndarray | None = None  # [K] distinct fitted confidences, ascending
    self.values: np.ndarray | None = None  # [K] fitted P(correct), non-decreasing

  def fit(self, c, y) -> IsotonicCalibrator:
    """Fits on confidences c[N] and labels y[N] in [0, 1]; returns self."""
    c = np.asarray(c, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if c.ndim != 1 or c.shape != y.shape or c.size == 0:
      raise ValueError(f"c and y must be non-empty [N] arrays, got c {c.shape} and y {y.shape}")
    if not np.isfinite(c).all():
      raise ValueError(f"c must be finite, got {c[~np.isfinite(c)][0]!r}")
    outside = ~((y >= 0) & (y <= 1))
    if outside.any():
      raise ValueError(f"y must lie in [0, 1], got {y[outside][0]!r}")
    thresholds, group, counts = np.unique(c, return_inverse=True, return_counts=True)
    means = np.bincount(group, weights=y, minlength=thresholds.size) / counts
    self.thresholds = thresholds
    self.values = _pava(means, counts.astype(np.float64))
    return self

  def predict(self, c) -> np.ndarray:
    """Calibrated P(correct) for confidences c[...], same shape."""
    if self.thresholds is None:
      raise ValueError("IsotonicCalibrator.predict called before fit")
    c = np.asarray(c, dtype=np.float64)
    return np.interp(c, self.thresholds, self.values)


class Calibrator:
  """Maps uncertainties u to confidences in [0, 1] (spec section 10).

  kinds:
    "isotonic": `fit(u, y)`; confidence = IsotonicCalibrator on c = -u, i.e. P(correct).
    "minmax": `fit(u)` on unlabelled scores; confidence = 1 - (u - min) / (max - min), clipped.
    "quantile": `fit(u)` on unlabelled scores; confidence = 1 - F(u), F the empirical CDF with
      ties and repeated values counted half (mid-distribution), so the fitted median maps to 0.5.
  The label-free kinds preserve the ranking (so AUROC and PRR) but are not probabilities.
  """

  KINDS = ("isotonic", "minmax", "quantile")

  def __init__(self, kind: str = "isotonic"):
    if kind not in self.KINDS:
      raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
    self.kind = kind
    self._isotonic: IsotonicCalibrator | None = None
    self._fitted_scores: np.ndarray | None = None  # sorted u[N] (quantile) or [min, max] (minmax)

  def fit(self, u, y=None) -> Calibrator:
    """Fits on uncertainties u[N] (and labels y[N] for "isotonic"); returns self."""
    u = np.asarray(u, dtype=np.float64)
    if u.ndim != 1 or u.size == 0:
      raise ValueError(f"u must be a non-empty [N] array, got shape {u.shape}")
    if not np.isfinite(u).all():
      raise ValueError(f"u must be finite, got {u[~np.isfinite(u)][0]!r}")
    if self.kind == "isotonic":
      if y is None:
        raise ValueError("y is required for kind='isotonic'; 'minmax' and 'quantile' need none")
      u, y = _check_scores_labels(u, y)
      self._isotonic = IsotonicCalibrator().fit(-u, y)
    elif self.kind == "minmax":
      low, high = float(u.min()), float(u.max())
      if high == low:
        raise ValueError(f"u is constant ({low!r}); minmax needs two distinct values")
      self._fitted_scores = np.array([low, high])
    else:
      self._fitted_scores = np.sort(u)
    return self

  def confidence(self, u) -> np.ndarray:
    """Confidence in [0, 1] for uncertainties u[...], same shape (higher = more reliable)."""
    if self._isotonic is None and self._fitted_scores is None:
      raise ValueError("Calibrator.confidence called before fit")
    u = np.asarray(u, dtype=np.float64)
    if self.kind == "isotonic":
      return self._isotonic.predict(-u)
    if self.kind == "minmax":
      low, high = self._fitted_scores
      return 1.0 - np.clip((u - low) / (high - low), 0.0, 1.0)
    below = np.searchsorted(self._fitted_scores, u, side="left")
    at_or_below = np.searchsorted(self._fitted_scores, u, side="right")
    return 1.0 - (below + at_or_below) / (2.0 * self._fitted_scores.size)


def _rowwise(fn_1d: Callable[[np.ndarray, np.ndarray], float], u, y):
  """Applies fn_1d to every [N] row of checked u, y[..., N]; a float for one set."""
  u, y = _check_scores_labels(u, y)
  if u.ndim == 1:
    return float(fn_1d(u, y))
  n = u.shape[-1]
  pairs = zip(u.reshape(-1, n), y.reshape(-1, n), strict=True)
  rows = [fn_1d(u_row, y_row) for u_row, y_row in pairs]
  return np.asarray(rows, dtype=np.float64).reshape(u.shape[:-1])


def _fold_ids(n: int, num_folds: int, seed: int) -> np.ndarray:
  if not isinstance(num_folds, int) or num_folds < 2:
    raise ValueError(f"num_folds must be an int >= 2, got {num_folds!r}")
  if num_folds > n:
    raise ValueError(f"num_folds={num_folds} exceeds the number of answers N={n}")
  folds = np.empty(n, dtype=np.int64)
  folds[np.random.default_rng(seed).permutation(n)] = np.arange(n) % num_folds
  return folds


def _cross_fitted_1d(u: np.ndarray, y: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
  folds = _fold_ids(u.size, num_folds, seed)
  probability = np.empty_like(u)
  for fold in range(num_folds):
    held_out = folds == fold
    calibrator = IsotonicCalibrator().fit(-u[~held_out], y[~held_out])
    probability[held_out] = calibrator.predict(-u[held_out])
  return probability


def cross_fitted_probabilities(u, y, num_folds: int = 5, seed: int = 0) -> np.ndarray:
  """Isotonic P(correct)[N] for u[N], each fold predicted by a fit on the other folds.

  Folds are a seeded random partition into num_folds near-equal parts.
  """
  u, y = _check_scores_labels(u, y)
  if u.ndim != 1:
    raise ValueError(f"u must be one set [N], got shape {u.shape}")
  return _cross_fitted_1d(u, y, num_folds, seed)


def brier_iso(u, y, num_folds: int = 5, seed: int = 0):
  """Brier score mean (p - y)^2 of cross-fitted isotonic probabilities; u, y [..., N] -> [...]."""

  def cross_fitted_1d(u, y):
    return np.mean((_cross_fitted_1d(u, y, num_folds, seed) - y) ** 2)

  return _rowwise(cross_fitted_1d, u, y)


def _loo_brier_1d(u: np.ndarray, y: np.ndarray) -> float:
  keep = np.ones(u.size, dtype=bool)
  squared_errors = np.empty_like(u)
  for i in range(u.size):
    keep[i] = False
    probability = IsotonicCalibrator().fit(-u[keep], y[keep]).predict(-u[i])
    squared_errors[i] = (probability - y[i]) ** 2
    keep[i] = True
  return float(squared_errors.mean())


def brier_iso_loo(u, y):
  """Brier score of leave-one-out isotonic probabilities; u, y [..., N] -> [...], N >= 2.

  Costs N isotonic fits per set (O(N^2)); `brier_iso` is the cheap default.
  """
  if np.shape(u)[-1:] == (1,):
    raise ValueError("brier_iso_loo needs N >= 2 answers, got N = 1")
  return _rowwise(_loo_brier_1d, u, y)


def brier_iso_insample(u, y):
  """Brier score with isotonic fitted and scored on the same answers (paper/code parity).

  Optimistic: PAVA overfits its own labels. u, y [..., N] -> [...].
  """

  def insample_1d(u, y):
    return np.mean((IsotonicCalibrator().fit(-u, y).predict(-u) - y) ** 2)

  return _rowwise(insample_1d, u, y)


def ece(probability, y, num_bins: int = 15):
  """Expected calibration error with num_bins equal-width bins on [0, 1].

  ECE = sum_b (n_b / N) |mean(y in b) - mean(p in b)|, the last bin closed at 1.

  Args:
    probability: calibrated P(correct) [..., N] in [0, 1].
    y: labels [..., N].
    num_bins: number of bins.
  """
  if not isinstance(num_bins, int) or num_bins < 1:
    raise ValueError(f"num_bins must be a positive int, got {num_bins!r}")
  p = np.asarray(probability, dtype=np.float64)
  outside = ~((p >= 0) & (p <= 1))
  if outside.any():
    raise ValueError(f"probability must lie in [0, 1], got {p[outside][0]!r}")

  def ece_1d(p, y):
    bins = np.minimum((p * num_bins).astype(np.int64), num_bins - 1)
    count = np.bincount(bins, minlength=num_bins)
    gap = np.bincount(bins, weights=y, minlength=num_bins) - np.bincount(
      bins, weights=p, minlength=num_bins
    )
    return np.abs(gap).sum() / count.sum()

  return _rowwise(ece_1d, p, y)


def ece_iso(u, y, num_bins: int = 15, num_folds: int = 5, seed: int = 0):
  """`ece` of cross-fitted isotonic probabilities of uncertainties u, y [..., N] -> [...]."""
  return _rowwise(
    lambda u, y: ece(_cross_fitted_1d(u, y, num_folds, seed), y, num_bins=num_bins), u, y
  )


# ----------------------------------------------------------------------------------------------
# Paired bootstrap
# ----------------------------------------------------------------------------------------------


class BootstrapStat(NamedTuple):
  """One metric of one method under the paired bootstrap."""

  point: float  # metric on the full set of questions
  mean: float  # mean over the usable resamples
  std: float  # standard deviation (ddof = 0) over the usable resamples
  num_used: int  # resamples with both classes and a finite value
  num_skipped: int  # resamples with one class only (not scored)


STANDARD_METRICS: dict[str, Callable] = {
  "auroc": auroc,
  "prr": prr,
  "prr@0.5": functools.partial(prr, max_rejection=0.5),
  "ap_correct": ap_correct,
  "brier_iso": brier_iso,
}


def per_row(fn_1d: Callable[[np.ndarray, np.ndarray], float]) -> Callable:
  """Lifts a metric of one set u[N], y[N] to the [B, N] stacks that `bootstrap` passes."""

  @functools.wraps(fn_1d)
  def batched(u, y):
    return _rowwise(fn_1d, u, y)

  return batched


def bootstrap_indices(num_questions: int, num: int = 40, seed: int = 0) -> np.ndarray:
  """Resampled question indices [num, num_questions], drawn with replacement from a seed."""
  if not isinstance(num_questions, int) or num_questions < 1:
    raise ValueError(f"num_questions must be a positive int, got {num_questions!r}")
  if not isinstance(num, int) or num < 1:
    raise ValueError(f"num must be a positive int, got {num!r}")
  return np.random.default_rng(seed).integers(0, num_questions, size=(num, num_questions))


def bootstrap(
  metric_fns: Mapping[str, Callable],
  u_by_method: Mapping[str, Sequence[float] | np.ndarray],
  y,
  *,
  num: int = 40,
  seed: int = 0,
) -> dict[str, dict[str, BootstrapStat]]:
  """Paired bootstrap of every metric for every method.

  All methods see the same resampled questions, so differences between methods are paired.
  Resamples in which every answer is correct (or every one wrong) are skipped and counted.

  Args:
    metric_fns: name -> fn(u[B, N], y[B, N]) -> [B] (and fn(u[N], y[N]) -> float for the point
      value); every metric of this module qualifies, and `per_row` lifts a one-set function.
    u_by_method: method name -> uncertainties u[N] over the same N questions.
    y: labels [N], 1 = correct.
    num: number of resamples (paper: 40).
    seed: seed of the resampling.

  Returns:
    result[method][metric] = BootstrapStat(point, mean, std, num_used, num_skipped).
  """
  if not metric_fns:
    raise ValueError("metric_fns is empty")
  if not u_by_method:
    raise ValueError("u_by_method is empty")
  y = _check_labels(y)
  if y.ndim != 1 or y.size == 0:
    raise ValueError(f"y must have shape [N] with N >= 1, got {y.shape}")
  scores = {}
  for method, u in u_by_method.items():
    if np.shape(u) != y.shape:
      raise ValueError(f"u_by_method[{method!r}] has shape {np.shape(u)}, expected {y.shape}")
    scores[method], _ = _check_scores_labels(u, y)
  indices = bootstrap_indices(y.size, num, seed)
  y_resampled = y[indices]
  num_correct = y_resampled.sum(axis=1)
  usable = (num_correct > 0) & (num_correct < y.size)
  y_usable = y_resampled[usable]
  num_skipped = int(num - usable.sum())

  result: dict[str, dict[str, BootstrapStat]] = {}
  for method, u in scores.items():
    u_usable = u[indices[usable]]
    result[method] = {}
    for metric, fn in metric_fns.items():
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricUndefinedWarning)
        point = float(fn(u, y))
        values = np.asarray(fn(u_usable, y_usable), dtype=np.float64) if usable.any() else None
      if values is not None and values.shape != (int(usable.sum()),):
        raise ValueError(
          f"metric_fns[{metric!r}] returned shape {values.shape} for {int(usable.sum())} "
          "resamples; metric functions must map [B, N] to [B] (wrap one-set functions in per_row)"
        )
      finite = values[np.isfinite(values)] if values is not None else np.zeros(0)
      mean = float(finite.mean()) if finite.size else math.nan
      std = float(finite.std()) if finite.size else math.nan
      result[method][metric] = BootstrapStat(point, mean, std, int(finite.size), num_skipped)
  return result


# ----------------------------------------------------------------------------------------------
# TSU: temperature sensitivity of uncertainty
# ----------------------------------------------------------------------------------------------


def _check_tsu(uq, chain) -> tuple[np.ndarray, tuple[int, ...]]:
  uq = np.asarray(uq, dtype=np.float64)
  if uq.ndim != 2 or uq.shape[0] == 0:
    raise ValueError(f"uq must have shape [Q, T] with Q >= 1, got {uq.shape}")
  chain = tuple(chain)
  if len(chain) < 2:
    raise ValueError(f"chain must name at least 2 temperature columns, got {chain!r}")
  for column in chain:
    if not isinstance(column, int | np.integer) or not 0 <= column < uq.shape[1]:
      raise ValueError(f"chain entries must be column indices in [0, {uq.shape[1]}), got {chain!r}")
  if len(set(chain)) != len(chain):
    raise ValueError(f"chain must not repeat a column, got {chain!r}")
  nan = np.isnan(uq)
  if nan.any():
    raise ValueError(f"uq contains NaN at index {_first_index(nan)}")
  return uq, tuple(int(c) for c in chain)


def tsu(uq, chain: Sequence[int]) -> float:
  """Percentage of questions whose uncertainty rises strictly along the chain.

  Args:
    uq: uncertainties [Q, T], one column per temperature.
    chain: column indices listed from the lowest temperature to the highest, e.g. (0, 3) for the
      pair (0.3, 1.4) or (0, 1, 2, 3) for the chain 0.3-1.4. Ties count as failures.

  Returns:
    TSU in percent.
  """
  uq, chain = _check_tsu(uq, chain)
  values = uq[:, list(chain)]
  rising = np.all(values[:, 1:] > values[:, :-1], axis=1)
  return 100.0 * float(rising.mean())


def tsu_chance(uq, chain: Sequence[int]) -> float:
  """Tie-aware chance level of `tsu` in percent: mean over questions of [k values distinct] / k!.

  A random order of k distinct values is rising with probability 1/k!; tied values never are.
  """
  uq, chain = _check_tsu(uq, chain)
  values = np.sort(uq[:, list(chain)], axis=1)
  distinct = np.all(values[:, 1:] != values[:, :-1], axis=1)
  return 100.0 * float(distinct.mean()) / math.factorial(len(chain))


def tsu_iid_chance(chain_length: int) -> float:
  """Chance level of `tsu` in percent for i.i.d. continuous scores: 100 / k!."""
  if not isinstance(chain_length, int) or chain_length < 2:
    raise ValueError(f"chain_length must be an int >= 2, got {chain_length!r}")
  return 100.0 / math.factorial(chain_length)


def tsu_jax(uq: jax.Array, chain: Sequence[int]) -> jax.Array:
  """`tsu` as a pure jittable function of uq[Q, T]; chain is a static tuple of columns."""
  uq = jnp.asarray(uq)
  dtype = jnp.promote_types(uq.dtype, jnp.float32)
  values = uq[:, jnp.asarray(chain)]
  rising = jnp.all(values[:, 1:] > values[:, :-1], axis=1)
  return 100 * rising.astype(dtype).mean()


def tsu_chance_jax(uq: jax.Array, chain: Sequence[int]) -> jax.Array:
  """`tsu_chance` as a pure jittable function of uq[Q, T]; chain is a static tuple of columns."""
  uq = jnp.asarray(uq)
  dtype = jnp.promote_types(uq.dtype, jnp.float32)
  values = jnp.sort(uq[:, jnp.asarray(chain)], axis=1)
  distinct = jnp.all(values[:, 1:] != values[:, :-1], axis=1)
  return 100 * distinct.astype(dtype).mean() / math.factorial(len(chain))
