"""Inv-Entropy as a researcher would write it in numpy: a loop over questions and draws.

The speed baseline of `launch/benchmark.py --suite=uq` and an independent check of the JAX
version (same formulas, spec section 1.1; `shift` transform, `bayes` P(X)). Each draw builds
the m x m output similarity from the drawn responses' embeddings, as the paper describes.
"""

from __future__ import annotations

import numpy as np


def _similarity(a, b):
  a = a / np.linalg.norm(a, axis=-1, keepdims=True)
  b = b / np.linalg.norm(b, axis=-1, keepdims=True)
  return (1.0 + a @ b.T) / 2.0


def _transition(s):
  return s / s.sum(axis=1, keepdims=True)


def one_draw(p_x, p_y):
  """(Inv-Entropy, NI-Entropy) of one draw from the two transition matrices."""
  m = p_x.shape[0]
  px_given_y = p_y @ p_x  # [j, i] = P(x_i | y_j)
  p = np.diag(px_given_y)
  py = np.full(m, 1.0 / m) @ p_y
  px = py @ px_given_y  # bayes: sum_j P(y_j) P(x_i | y_j)
  q = p * py / px  # P(y_i | x_i) by Bayes on the paired diagonal
  inv = -np.sum(p * np.log(p))
  ni = -np.sum(q * np.log(q))
  return inv, ni


def score_question(rng, emb_x, emb_y, num_bootstrap):
  """Mean Inv- and NI-Entropy over `num_bootstrap` draws for one question."""
  m, r, _ = emb_y.shape
  p_x = _transition(_similarity(emb_x, emb_x))
  inv = ni = 0.0
  for _ in range(num_bootstrap):
    pick = rng.integers(0, r, size=m)
    ys = emb_y[np.arange(m), pick]
    a, b = one_draw(p_x, _transition(_similarity(ys, ys)))
    inv, ni = inv + a, ni + b
  return inv / num_bootstrap, ni / num_bootstrap


def score_dataset(seed, emb_x, emb_y, num_bootstrap=30):
  """[Q] Inv-Entropy and [Q] NI-Entropy, one question at a time."""
  rng = np.random.default_rng(seed)
  out = np.array(
    [score_question(rng, x, y, num_bootstrap) for x, y in zip(emb_x, emb_y, strict=True)]
  )
  return out[:, 0], out[:, 1]
