"""Inv-Entropy as a researcher would write it in numpy: a loop over questions and draws.

The speed baseline of `launch/benchmark.py --suite=uq` and an independent check of the JAX
version: the same formulas (spec section 1; `shift` transform, `bayes` P(X)) and the same
outputs as `inv_entropy.score_dataset` (every measure's bootstrap mean and std, and the
no-replication draw), so the benchmark compares like with like. Each draw builds the m x m
output similarity from the drawn responses' embeddings, as the paper describes.
"""

from __future__ import annotations

import numpy as np

MEASURES = (
  "inv_entropy",
  "ni_entropy",
  "wd_px_py",
  "max_py_x",
  "max_py",
  "tv_px_py",
  "inv_entropy_norm",
)  # the fields of inv_entropy.Measures, in order


def _similarity(a, b):
  a = a / np.linalg.norm(a, axis=-1, keepdims=True)
  b = b / np.linalg.norm(b, axis=-1, keepdims=True)
  s = (1.0 + a @ b.T) / 2.0
  np.fill_diagonal(s, 1.0)
  return s


def _transition(s):
  return s / s.sum(axis=1, keepdims=True)


def _entropy(v):
  return -np.sum(v * np.log(v))


def one_draw(p_x, p_y):
  """Every measure of one draw (in MEASURES order) from the two transition matrices."""
  m = p_x.shape[0]
  px_given_y = p_y @ p_x  # [j, i] = P(x_i | y_j)
  p = np.diag(px_given_y)
  py = np.full(m, 1.0 / m) @ p_y
  px = py @ px_given_y  # bayes: sum_j P(y_j) P(x_i | y_j)
  q = p * py / px  # P(y_i | x_i) by Bayes on the paired diagonal
  return (
    _entropy(p),
    _entropy(q),
    np.mean(np.abs(np.sort(px) - np.sort(py))),
    np.max(q),
    np.max(py),
    0.5 * np.sum(np.abs(px - py)),
    _entropy(p / p.sum()),
  )


def score_question(rng, emb_x, emb_y, num_bootstrap):
  """(mean, std, no-replication) of every measure for one question; each a [7] array."""
  m, r, _ = emb_y.shape
  p_x = _transition(_similarity(emb_x, emb_x))
  draws = []
  for _ in range(num_bootstrap):
    pick = rng.integers(0, r, size=m)
    ys = emb_y[np.arange(m), pick]
    draws.append(one_draw(p_x, _transition(_similarity(ys, ys))))
  first = emb_y[:, 0]
  nr = one_draw(p_x, _transition(_similarity(first, first)))
  return np.mean(draws, axis=0), np.std(draws, axis=0), np.asarray(nr)


def score_dataset(seed, emb_x, emb_y, num_bootstrap=30):
  """{"mean" | "std" | "nr": {measure: [Q]}}, one question at a time."""
  rng = np.random.default_rng(seed)
  rows = [score_question(rng, x, y, num_bootstrap) for x, y in zip(emb_x, emb_y, strict=True)]
  return {
    part: dict(zip(MEASURES, np.stack([row[i] for row in rows], axis=1), strict=True))
    for i, part in enumerate(("mean", "std", "nr"))
  }
