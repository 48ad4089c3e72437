"""Inv-Entropy: the dual random walk of Song et al. (NeurIPS 2025) and its family of measures.

Per question there are m inputs x_0..x_{m-1} (the original and its perturbations) and r sampled
responses per input. A bootstrap draw picks one response y_i per input, which pairs state i with
(x_i, y_i). Two row-stochastic walks on the m states, P_x on inputs and P_y on outputs, give the
output marginal, the inverse model P(X | Y) and, by Bayes, the forward model P(Y | X) (spec §1.1).
The scores (all uncertainties, higher = less reliable) are averaged over draws:

  sim_x = self_similarity(emb_x)                                  # [m, m]
  scores = inv_entropy_bootstrap(key, sim_x, emb_y, num_bootstrap=30)
  scores.mean.inv_entropy, scores.std.inv_entropy                 # scalars
  table = score_dataset(key, emb_x, emb_y)                        # every leaf [Q]

Choices that are ours rather than the paper's ([R] in the spec):
  * `px_formula="bayes"` (default) takes P(X) = pi_U P_y P_y P_x, i.e. sum_j P(y_j) P(x | y_j),
    as the official code does; with it the columns of P(Y | X) sum to 1. `"paper"` takes the
    paper's text, P(X) = pi_U P_y P_x, for ablations. Only ni_entropy, wd_px_py, tv_px_py and
    max_py_x depend on it.
  * `tv_px_py` (total variation between P(X) and P(Y)) and `inv_entropy_norm` (Shannon entropy
    of p / sum(p), an ablation of the paper's unnormalised entropy) are additions.
  * `nr_inv_entropy` (no replication) uses replicate 0 of every input in a single draw.
  * Bootstrap draws are i.i.d. from a `jax.random` key; the per-draw std uses ddof = 0.
  * Similarity matrices of a set with itself get an exact unit diagonal (`self_similarity`,
    `nli_mean`), as the official code does for DeBERTa; every transform maps cos = 1 to 1, so this
    only removes rounding and keeps rows positive for a degenerate (zero) embedding.

Quirks of the measure itself, kept as defined: p_i = P(x_i | y_i) do not sum to 1; identical
inputs (no perturbation) give p_i = 1/m whatever the outputs, so Inv-Entropy is then the constant
ln m; and P_x = P_y = I gives p_i = 1 and entropy 0 (the paper's monotonicity argument needs
p_i < 1/e).

Every function is pure JAX with static shapes, so it jits and vmaps over questions. Arguments
that select code (`transform`, `px_formula`, `num_bootstrap`, `r`) are static. Inputs are checked
before any work: shapes and Python hyperparameters always, array values (NaN, negative
similarities) whenever they are concrete, i.e. not while being traced.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from jaxsys.lib import checks

TRANSFORMS = ("shift", "abs", "clip")
PX_FORMULAS = ("bayes", "paper")

_HIGHEST = jax.lax.Precision.HIGHEST


class Measures(NamedTuple):
  """The scalar measures of spec §1.2 for one draw (or their mean/std over draws)."""

  inv_entropy: jax.Array  # -sum_i p_i ln p_i, p_i = P(x_i | y_i) (Eq. 5)
  ni_entropy: jax.Array  # -sum_i q_i ln q_i, q_i = P(y_i | x_i) (Bayes)
  wd_px_py: jax.Array  # mean |sort(P(X)) - sort(P(Y))| (scipy 1-D W1 on the values, as the code)
  max_py_x: jax.Array  # max_i P(y_i | x_i)
  max_py: jax.Array  # max_j P(Y = y_j) (the official code's "MAX" column)
  tv_px_py: jax.Array  # 1/2 sum_i |P(X)_i - P(Y)_i|  [R]
  inv_entropy_norm: jax.Array  # Shannon entropy of p / sum(p)  [R]


MEASURE_NAMES = Measures._fields


class DualWalk(NamedTuple):
  """Everything one draw of the dual random walk yields; m states."""

  p: jax.Array  # [m] P(x_i | y_i), the paired diagonal of P(X | Y)
  q: jax.Array  # [m] P(y_i | x_i), by Bayes
  px: jax.Array  # [m] input marginal P(X = x_i) (per px_formula)
  py: jax.Array  # [m] output marginal P(Y = y_j) = (pi_U P_y)[j]
  px_given_y: jax.Array  # [m, m] row j, column i: P(x_i | y_j) = (P_y P_x)[j, i]
  py_given_x: jax.Array  # [m, m] row j, column i: P(y_j | x_i); columns sum to 1 with "bayes"
  inv_entropy: jax.Array  # [] see Measures for the scalar fields
  ni_entropy: jax.Array  # []
  wd_px_py: jax.Array  # []
  max_py_x: jax.Array  # []
  max_py: jax.Array  # []
  tv_px_py: jax.Array  # []
  inv_entropy_norm: jax.Array  # []

  def measures(self) -> Measures:
    """The scalar measures alone."""
    return Measures(*(getattr(self, name) for name in MEASURE_NAMES))


class InvEntropyScores(NamedTuple):
  """Bootstrap summary for one question (leaves gain a leading [Q] axis in score_dataset)."""

  mean: Measures  # each [] mean over the B draws: inv_entropy here is the paper's Inv-Entropy
  std: Measures  # each [] std over the B draws (ddof = 0), for diagnostics


class DatasetScores(NamedTuple):
  """Per-question scores of a dataset; every leaf is [Q]."""

  mean: Measures  # bootstrap means over B draws
  std: Measures  # bootstrap stds over B draws (ddof = 0)
  nr: Measures  # one draw of replicate 0 per input: nr.inv_entropy is NR-Inv-Entropy


# ------------------------------------------------------------------------------------------------
# Input checks. Shapes and Python-level choices are static, so these also run under jit and vmap;
# value checks run only on concrete arrays (a tracer has no values to look at).


def _as_float(x) -> jax.Array:
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  return x


def _as_float_array(x):
  """`_as_float`, except that numpy (and list) inputs stay on the host, uncopied if float."""
  if isinstance(x, jax.Array):
    return _as_float(x)
  x = np.asarray(x)
  return x if np.issubdtype(x.dtype, np.floating) else x.astype(jnp.result_type(float))


def _check_square(x: jax.Array, name: str) -> int:
  """Raises unless x is [m, m] with m >= 2; returns m."""
  if x.ndim != 2 or x.shape[0] != x.shape[1]:
    raise ValueError(f"{name} must be a square [m, m] matrix, got shape {tuple(x.shape)}")
  if x.shape[0] < 2:
    raise ValueError(
      f"{name} needs m >= 2 states (the original and a perturbation), got m = {x.shape[0]}"
    )
  return x.shape[0]


def _check_values(x: jax.Array, name: str, nonnegative: bool = False) -> None:
  """Rejects non-finite (and optionally negative) entries of a concrete array."""
  checks.finite(x, name)
  if nonnegative and not isinstance(x, jax.core.Tracer):
    values = np.asarray(x)
    if (values < 0).any():
      first = tuple(int(i) for i in np.argwhere(values < 0)[0])
      raise ValueError(f"{name} must be >= 0 (a similarity), got {values[first]} at index {first}")


# ------------------------------------------------------------------------------------------------
# Similarities and walks.


def _unit(emb: jax.Array) -> jax.Array:
  norms = jnp.linalg.norm(emb, axis=-1, keepdims=True)
  # A zero vector has no direction: leave it zero (cos 0 with everything) instead of dividing by 0.
  return emb / jnp.maximum(norms, jnp.finfo(emb.dtype).tiny)


def _apply_transform(cos: jax.Array, transform: str) -> jax.Array:
  if transform == "shift":
    return (1.0 + cos) / 2.0
  if transform == "abs":
    return jnp.abs(cos)
  return jnp.maximum(cos, 0.0)


def similarity(emb_a: jax.Array, emb_b: jax.Array, transform: str = "shift") -> jax.Array:
  """Pairwise similarity a(z, z') >= 0 between two sets of embeddings.

  Args:
    emb_a: [..., na, d] embeddings (L2-normalised here; they need not be).
    emb_b: [..., nb, d] embeddings; leading axes broadcast against emb_a's.
    transform: static; "shift" = (1 + cos)/2 (paper), "abs" = |cos| (official code and
      `inventropy` package), "clip" = max(cos, 0).

  Returns:
    [..., na, nb] similarities in [0, 1].
  """
  checks.choice(transform, "transform", TRANSFORMS)
  emb_a, emb_b = _as_float(emb_a), _as_float(emb_b)
  if emb_a.ndim < 2 or emb_b.ndim < 2:
    raise ValueError(
      f"emb_a and emb_b must be [..., n, d], got shapes {emb_a.shape} and {emb_b.shape}"
    )
  if emb_a.shape[-1] != emb_b.shape[-1]:
    raise ValueError(
      f"emb_a and emb_b must share the embedding size d, got {emb_a.shape[-1]} and "
      f"{emb_b.shape[-1]}"
    )
  return _similarity(emb_a, emb_b, transform)


@functools.partial(jax.jit, static_argnames="transform")
def _similarity(emb_a: jax.Array, emb_b: jax.Array, transform: str) -> jax.Array:
  cos = jnp.matmul(_unit(emb_a), jnp.swapaxes(_unit(emb_b), -1, -2), precision=_HIGHEST)
  return _apply_transform(jnp.clip(cos, -1.0, 1.0), transform)


def self_similarity(emb: jax.Array, transform: str = "shift") -> jax.Array:
  """Similarity of a set with itself, diagonal exactly 1 (every transform maps cos = 1 to 1).

  Fixing the diagonal removes rounding in cos(z, z) and keeps every row sum > 0, so the
  transition matrix is defined even with `abs`/`clip` and a degenerate embedding.

  Args:
    emb: [..., n, d] embeddings.
    transform: static, see `similarity`.

  Returns:
    [..., n, n] symmetric similarities.
  """
  similarity(emb, emb, transform)  # the same checks
  return _self_similarity(_as_float(emb), transform)


@functools.partial(jax.jit, static_argnames="transform")
def _self_similarity(emb: jax.Array, transform: str) -> jax.Array:
  # Normalising the Gram matrix by its own diagonal, not the embeddings before the product,
  # touches n^2 values instead of n * d (a tenth of the scoring time at d = 384).
  gram = jnp.matmul(emb, jnp.swapaxes(emb, -1, -2), precision=_HIGHEST)
  norms = jnp.sqrt(jnp.diagonal(gram, axis1=-2, axis2=-1))
  scale = jnp.maximum(norms[..., :, None] * norms[..., None, :], jnp.finfo(gram.dtype).tiny)
  cos = jnp.clip(gram / scale, -1.0, 1.0)
  return _with_unit_diagonal(_apply_transform(cos, transform))


@jax.jit
def _with_unit_diagonal(sim: jax.Array) -> jax.Array:
  eye = jnp.eye(sim.shape[-1], dtype=bool)
  return jnp.where(eye, jnp.ones((), sim.dtype), sim)


def nli_mean(p_ent: jax.Array) -> jax.Array:
  """Symmetric NLI similarity (P + P^T)/2 with diagonal 1, for pairwise scorers.

  Args:
    p_ent: [..., n, n] P(z_i entails z_j) (row = premise).

  Returns:
    [..., n, n] symmetric similarities.
  """
  p_ent = _as_float(p_ent)
  if p_ent.ndim < 2 or p_ent.shape[-1] != p_ent.shape[-2]:
    raise ValueError(f"p_ent must be [..., n, n], got shape {tuple(p_ent.shape)}")
  return _with_unit_diagonal((p_ent + jnp.swapaxes(p_ent, -1, -2)) / 2.0)


def transition(sim: jax.Array) -> jax.Array:
  """Row-normalised random walk P[i, j] = a_ij / sum_k a_ik, self-loops kept (Eq. 2).

  Args:
    sim: [..., m, m] non-negative similarities with positive row sums.

  Returns:
    [..., m, m] row-stochastic matrix.
  """
  sim = _as_float(sim)
  if sim.ndim < 2 or sim.shape[-1] != sim.shape[-2]:
    raise ValueError(f"sim must be [..., m, m], got shape {tuple(sim.shape)}")
  return _transition(sim)


@jax.jit
def _transition(sim: jax.Array) -> jax.Array:
  return sim / jnp.sum(sim, axis=-1, keepdims=True)


def _entropy_terms(v: jax.Array) -> jax.Array:
  return -jnp.sum(xlogy(v, v), axis=-1)


_COUNTING_SORT_MAX = 64  # up to here, m^2 comparisons beat XLA's CPU sort


def _sorted(v: jax.Array) -> jax.Array:
  """jnp.sort(v) for a short vector without a sort: XLA's CPU sort of 10 values took half a draw.

  The k-th smallest value is the least v_i with #{j: v_j <= v_i} > k (ties need no care).
  """
  m = v.shape[-1]
  if m > _COUNTING_SORT_MAX:
    return jnp.sort(v)
  at_most = jnp.sum(v[None, :] <= v[:, None], axis=1)  # [i] #{j: v_j <= v_i}
  rank = jnp.arange(m)
  return jnp.min(jnp.where(at_most[:, None] > rank[None, :], v[:, None], jnp.inf), axis=0)


def _measures(p, q, px, py) -> Measures:
  """The scalar measures of one draw from its paired diagonals and marginals (spec 1.2)."""
  return Measures(
    inv_entropy=_entropy_terms(p),
    ni_entropy=_entropy_terms(q),
    wd_px_py=_wasserstein_1d(px, py),
    max_py_x=jnp.max(q),
    max_py=jnp.max(py),
    tv_px_py=0.5 * jnp.sum(jnp.abs(px - py)),
    inv_entropy_norm=_entropy_terms(p / jnp.sum(p)),
  )


def _wasserstein_1d(a: jax.Array, b: jax.Array) -> jax.Array:
  """W1 between the empirical distributions of two equal-length vectors of values."""
  return jnp.mean(jnp.abs(_sorted(a) - _sorted(b)))


def dual_walk(p_x: jax.Array, p_y: jax.Array, px_formula: str = "bayes") -> DualWalk:
  """One draw of the dual random walk and all §1.2 measures.

  Args:
    p_x: [m, m] row-stochastic walk on the inputs (`transition(S_x)`).
    p_y: [m, m] row-stochastic walk on the paired outputs; state i of both is (x_i, y_i).
    px_formula: static; "bayes" (default, [R] following the official code): P(X) = P(Y) P(X|Y),
      the law of total probability, so P(Y | X) is a proper conditional. "paper": P(X) = pi_U P_x
      after one P_y step, as in the paper's text (ablation).

  Returns:
    DualWalk with vectors [m], conditionals [m, m] and scalar measures [].
  """
  checks.choice(px_formula, "px_formula", PX_FORMULAS)
  p_x, p_y = _as_float(p_x), _as_float(p_y)
  m = _check_square(p_x, "p_x")
  if p_y.shape != (m, m):
    raise ValueError(f"p_y must have p_x's shape {(m, m)}, got {tuple(p_y.shape)}")
  dtype = jnp.result_type(p_x, p_y)
  return _dual_walk(p_x.astype(dtype), p_y.astype(dtype), px_formula)


@functools.partial(jax.jit, static_argnames="px_formula")
def _dual_walk(p_x: jax.Array, p_y: jax.Array, px_formula: str) -> DualWalk:
  py = jnp.mean(p_y, axis=0)  # pi_U P_y (Eq. 3)
  px_given_y = jnp.matmul(p_y, p_x, precision=_HIGHEST)  # (Eq. 4)
  if px_formula == "bayes":
    px = jnp.matmul(py, px_given_y, precision=_HIGHEST)
  else:
    px = jnp.matmul(py, p_x, precision=_HIGHEST)
  py_given_x = px_given_y * py[:, None] / px[None, :]
  p = jnp.diagonal(px_given_y)
  q = jnp.diagonal(py_given_x)
  return DualWalk(
    p=p,
    q=q,
    px=px,
    py=py,
    px_given_y=px_given_y,
    py_given_x=py_given_x,
    **_measures(p, q, px, py)._asdict(),
  )


# ------------------------------------------------------------------------------------------------
# Bootstrap over replicate draws.


def _draw_submatrix(sim_y_full: jax.Array, chosen: jax.Array, r: int) -> jax.Array:
  """S_y for one draw: rows/columns i*r + chosen[i] of the [m*r, m*r] replicate similarity."""
  flat = jnp.arange(chosen.shape[0]) * r + chosen
  # Rows, then columns: two row gathers vectorise better than one 2-D point gather.
  return jnp.take(sim_y_full[flat], flat, axis=1)


def _walk_measures(p_x: jax.Array, p_y: jax.Array, px_formula: str) -> Measures:
  """`_dual_walk(...).measures()` without the m x m conditionals: O(m^2) per draw.

  p_i = (P_y P_x)[i, i] = sum_k P_y[i, k] P_x[k, i], and P(X) = (pi_U P_y P_y) P_x ("bayes")
  or (pi_U P_y) P_x ("paper") are vector-matrix products, so the bootstrap never forms P_y P_x.
  """
  py = jnp.mean(p_y, axis=0)
  p = jnp.sum(p_y * p_x.T, axis=1)
  after_y = jnp.matmul(py, p_y, precision=_HIGHEST) if px_formula == "bayes" else py
  px = jnp.matmul(after_y, p_x, precision=_HIGHEST)
  q = p * py / px
  return _measures(p, q, px, py)


def _walk_for_draw(sim_x, sim_y_full, chosen, r, px_formula) -> Measures:
  p_y = _transition(_draw_submatrix(sim_y_full, chosen, r))
  return _walk_measures(_transition(sim_x), p_y, px_formula)


def _draw_replicates(key: jax.Array, num_bootstrap: int, m: int, r: int) -> jax.Array:
  """[B, m] replicate indices, i.i.d. uniform on {0..r-1}.

  Each index is a base-r digit of a uniform integer in [0, r^k), k digits per integer: the
  base-r digits of such an integer are independent and uniform, and drawing one integer per
  k indices instead of one per index cut the bootstrap's random-number time by ~10x.
  """
  if r == 1:
    return jnp.zeros((num_bootstrap, m), jnp.int32)
  k = 1
  while r ** (k + 1) < 2**31:
    k += 1
  packed = jax.random.randint(key, (num_bootstrap, -(-m // k), 1), 0, r**k)
  digits = (packed // (r ** jnp.arange(k, dtype=jnp.int32))) % r
  return digits.reshape(num_bootstrap, -1)[:, :m]


@functools.partial(jax.jit, static_argnames=("r", "num_bootstrap", "px_formula"))
def _bootstrap(key, sim_x, sim_y_full, r, num_bootstrap, px_formula) -> InvEntropyScores:
  m = sim_x.shape[0]
  chosen = _draw_replicates(key, num_bootstrap, m, r)  # i.i.d. across draws
  per_draw = jax.vmap(lambda c: _walk_for_draw(sim_x, sim_y_full, c, r, px_formula))(chosen)
  return InvEntropyScores(
    mean=jax.tree.map(lambda v: jnp.mean(v, axis=0), per_draw),
    std=jax.tree.map(lambda v: jnp.std(v, axis=0), per_draw),
  )


@functools.partial(jax.jit, static_argnames=("r", "px_formula"))
def _first_replicates(sim_x, sim_y_full, r, px_formula) -> Measures:
  chosen = jnp.zeros((sim_x.shape[0],), dtype=jnp.int32)
  return _walk_for_draw(sim_x, sim_y_full, chosen, r, px_formula)


def _check_pairwise_inputs(sim_x, sim_y_full, r) -> tuple[jax.Array, jax.Array, int]:
  sim_x, sim_y_full = _as_float(sim_x), _as_float(sim_y_full)
  m = _check_square(sim_x, "sim_x")
  r = checks.count(r, "r", 1)
  if sim_y_full.shape != (m * r, m * r):
    raise ValueError(
      f"sim_y_full must be [m*r, m*r] = {(m * r, m * r)} for m = {m} (from sim_x) and r = {r}, "
      f"got shape {tuple(sim_y_full.shape)}"
    )
  _check_values(sim_x, "sim_x", nonnegative=True)
  _check_values(sim_y_full, "sim_y_full", nonnegative=True)
  dtype = jnp.result_type(sim_x, sim_y_full)
  return sim_x.astype(dtype), sim_y_full.astype(dtype), r


def _check_embedding_inputs(sim_x, emb_y, transform) -> tuple[jax.Array, jax.Array]:
  """Checks sim_x [m, m] against emb_y [m, r, d]; returns both as floats."""
  checks.choice(transform, "transform", TRANSFORMS)
  sim_x, emb_y = _as_float(sim_x), _as_float(emb_y)
  m = _check_square(sim_x, "sim_x")
  if emb_y.ndim != 3:
    raise ValueError(f"emb_y must be [m, r, d], got shape {tuple(emb_y.shape)}")
  if emb_y.shape[0] != m:
    raise ValueError(f"emb_y has m = {emb_y.shape[0]} inputs but sim_x has m = {m}")
  checks.count(emb_y.shape[1], "r (emb_y.shape[1])", 1)
  _check_values(sim_x, "sim_x", nonnegative=True)
  _check_values(emb_y, "emb_y")
  return sim_x, emb_y


@functools.partial(jax.jit, static_argnames="transform")
def _all_response_similarity(emb_y: jax.Array, transform: str) -> jax.Array:
  """[m*r, m*r] input-major similarity of every response: the paper's 50x50, computed once."""
  m, r, d = emb_y.shape
  flat = emb_y.reshape(m * r, d)
  return _self_similarity(flat, transform)


def inv_entropy_bootstrap_pairwise(
  key: jax.Array,
  sim_x: jax.Array,
  sim_y_full: jax.Array,
  r: int,
  *,
  num_bootstrap: int = 30,
  px_formula: str = "bayes",
) -> InvEntropyScores:
  """Inv-Entropy and its family from precomputed similarities (pairwise scorers such as NLI).

  Draw b picks replicate idx[b, i] ~ U{0..r-1} of every input i (i.i.d. across draws and inputs,
  spec §3 #6; `_draw_replicates`)
  and runs `dual_walk` on the gathered S_y; all B draws run in one vmap.

  Args:
    key: typed key, consumed.
    sim_x: [m, m] similarities of the m unique inputs, m >= 2.
    sim_y_full: [m*r, m*r] similarities of all responses, input-major (row i*r + k is replicate k
      of input i); only the entries between chosen replicates are read.
    r: static, replicates per input (>= 1).
    num_bootstrap: static B >= 1 (paper 30).
    px_formula: static, "bayes" (default, [R]) or "paper"; see `dual_walk`.

  Returns:
    InvEntropyScores: mean and std (ddof = 0) over the B draws of every measure, each [].
  """
  checks.typed_key(key)
  checks.choice(px_formula, "px_formula", PX_FORMULAS)
  num_bootstrap = checks.count(num_bootstrap, "num_bootstrap", 1)
  sim_x, sim_y_full, r = _check_pairwise_inputs(sim_x, sim_y_full, r)
  return _bootstrap(key, sim_x, sim_y_full, r, num_bootstrap, px_formula)


def inv_entropy_bootstrap(
  key: jax.Array,
  sim_x: jax.Array,
  emb_y: jax.Array,
  *,
  num_bootstrap: int = 30,
  transform: str = "shift",
  px_formula: str = "bayes",
) -> InvEntropyScores:
  """Inv-Entropy (Algorithm 1) and its family for one question, from response embeddings.

  Draw b uses replicates idx[b] = `_draw_replicates(key, B, m, r)`[b] (i.i.d. uniform), i.e.
  S_y^(b) is the similarity of emb_y[i, idx[b, i]]. The [m*r, m*r] similarity of all responses
  is computed once and each draw gathers its [m, m] submatrix, which gives the same S_y as
  embedding-level gathering.

  Args:
    key: typed key, consumed.
    sim_x: [m, m] input similarities (e.g. `self_similarity(emb_x, transform)`), m >= 2.
    emb_y: [m, r, d] embeddings of the r responses to each input.
    num_bootstrap: static B >= 1 (paper 30).
    transform: static, similarity transform for the responses; see `similarity`.
    px_formula: static, "bayes" (default, [R]) or "paper"; see `dual_walk`.

  Returns:
    InvEntropyScores: mean and std (ddof = 0) over the B draws of every measure, each [].
    `mean.inv_entropy` is the paper's Inv-Entropy.
  """
  checks.typed_key(key)
  checks.choice(px_formula, "px_formula", PX_FORMULAS)
  num_bootstrap = checks.count(num_bootstrap, "num_bootstrap", 1)
  sim_x, emb_y = _check_embedding_inputs(sim_x, emb_y, transform)
  dtype = jnp.result_type(sim_x, emb_y)
  sim_y_full = _all_response_similarity(emb_y.astype(dtype), transform)
  return _bootstrap(key, sim_x.astype(dtype), sim_y_full, emb_y.shape[1], num_bootstrap, px_formula)


def nr_inv_entropy(
  sim_x: jax.Array, emb_y: jax.Array, *, transform: str = "shift", px_formula: str = "bayes"
) -> Measures:
  """No-replication measures: replicate 0 of every input, one draw, no randomness ([R]).

  Args:
    sim_x: [m, m] input similarities, m >= 2.
    emb_y: [m, r, d] response embeddings; only emb_y[:, 0] is read.
    transform: static, see `similarity`.
    px_formula: static, see `dual_walk`.

  Returns:
    Measures, each []; `.inv_entropy` is NR-Inv-Entropy.
  """
  checks.choice(px_formula, "px_formula", PX_FORMULAS)
  sim_x, emb_y = _check_embedding_inputs(sim_x, emb_y, transform)
  dtype = jnp.result_type(sim_x, emb_y)
  return _nr_from_embeddings(sim_x.astype(dtype), emb_y.astype(dtype), transform, px_formula)


@functools.partial(jax.jit, static_argnames=("transform", "px_formula"))
def _nr_from_embeddings(sim_x, emb_y, transform, px_formula) -> Measures:
  sim_y = _self_similarity(emb_y[:, 0], transform)
  return _dual_walk(_transition(sim_x), _transition(sim_y), px_formula).measures()


def nr_inv_entropy_pairwise(
  sim_x: jax.Array, sim_y_full: jax.Array, r: int, *, px_formula: str = "bayes"
) -> Measures:
  """`nr_inv_entropy` for pairwise scorers: sim_y_full [m*r, m*r] input-major, r static."""
  checks.choice(px_formula, "px_formula", PX_FORMULAS)
  sim_x, sim_y_full, r = _check_pairwise_inputs(sim_x, sim_y_full, r)
  return _first_replicates(sim_x, sim_y_full, r, px_formula)


@functools.partial(jax.jit, static_argnames=("num_bootstrap", "transform", "px_formula"))
def _score_dataset(key, emb_x, emb_y, num_bootstrap, transform, px_formula):
  """(DatasetScores, finite [Q]): finite[q] is False if question q's embeddings hold NaN/inf."""
  num_questions, r = emb_y.shape[0], emb_y.shape[2]
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(num_questions))

  def one_question(key_q, emb_x_q, emb_y_q):
    sim_x = _self_similarity(emb_x_q, transform)
    sim_y_full = _all_response_similarity(emb_y_q, transform)
    scores = _bootstrap(key_q, sim_x, sim_y_full, r, num_bootstrap, px_formula)
    nr = _first_replicates(sim_x, sim_y_full, r, px_formula)
    # A NaN or inf in any embedding fills its row of the similarity with NaN (m, m * r >= 2),
    # so checking the similarities checks the inputs at a tenth of the cost.
    finite = jnp.all(jnp.isfinite(sim_x)) & jnp.all(jnp.isfinite(sim_y_full))
    return DatasetScores(mean=scores.mean, std=scores.std, nr=nr), finite

  return jax.vmap(one_question)(keys, emb_x, emb_y)


def _raise_unless_finite(finite, emb_x, emb_y) -> None:
  """Names the bad input after the fact; costs nothing when every question is finite."""
  if isinstance(finite, jax.core.Tracer) or bool(np.all(finite)):
    return
  _check_values(emb_x, "emb_x")
  _check_values(emb_y, "emb_y")
  bad = np.flatnonzero(~np.asarray(finite))
  raise ValueError(
    f"the similarities of questions {bad[:10].tolist()} overflow: embedding values too large "
    "for float32 products; rescale them"
  )


def score_dataset(
  key: jax.Array,
  emb_x: jax.Array,
  emb_y: jax.Array,
  *,
  num_bootstrap: int = 30,
  transform: str = "shift",
  px_formula: str = "bayes",
  mesh=None,
) -> DatasetScores:
  """Inv-Entropy family for Q questions at once (one compile, vmapped over questions).

  Question q uses key `fold_in(key, q)` and S_x = `self_similarity(emb_x[q], transform)`, so
  its scores equal `inv_entropy_bootstrap(fold_in(key, q), S_x, emb_y[q], ...)`.

  Args:
    key: typed key, consumed.
    emb_x: [Q, m, d] embeddings of the m inputs (original + perturbations) per question, m >= 2.
    emb_y: [Q, m, r, d] embeddings of the r responses to each input.
    num_bootstrap: static B >= 1.
    transform: static, used for both S_x and S_y; see `similarity`.
    px_formula: static, "bayes" (default, [R]) or "paper"; see `dual_walk`.
    mesh: optional `lib.sharding.make_mesh()`: questions are split over its first axis (Q is
      padded to a multiple of its size); the scores equal the unsharded ones.

  Returns:
    DatasetScores; every leaf [Q]: bootstrap mean and std, and the NR (replicate 0) measures.
  """
  checks.typed_key(key)
  checks.choice(transform, "transform", TRANSFORMS)
  checks.choice(px_formula, "px_formula", PX_FORMULAS)
  num_bootstrap = checks.count(num_bootstrap, "num_bootstrap", 1)
  # numpy inputs stay numpy: jit takes them without the extra copy of jnp.asarray (~2 ms for
  # 200 questions of MiniLM embeddings, a sixth of the scoring)
  emb_x, emb_y = _as_float_array(emb_x), _as_float_array(emb_y)
  if emb_x.ndim != 3:
    raise ValueError(f"emb_x must be [Q, m, d], got shape {tuple(emb_x.shape)}")
  if emb_y.ndim != 4:
    raise ValueError(f"emb_y must be [Q, m, r, d], got shape {tuple(emb_y.shape)}")
  if emb_x.shape[0] != emb_y.shape[0]:
    raise ValueError(f"emb_x has Q = {emb_x.shape[0]} questions but emb_y has Q = {emb_y.shape[0]}")
  if emb_x.shape[1] != emb_y.shape[1]:
    raise ValueError(f"emb_x has m = {emb_x.shape[1]} inputs but emb_y has m = {emb_y.shape[1]}")
  if emb_x.shape[2] != emb_y.shape[3]:
    raise ValueError(f"emb_x has d = {emb_x.shape[2]} but emb_y has d = {emb_y.shape[3]}")
  if emb_x.shape[0] < 1:
    raise ValueError("emb_x needs Q >= 1 questions, got Q = 0")
  if emb_x.shape[1] < 2:
    raise ValueError(f"emb_x needs m >= 2 inputs per question, got m = {emb_x.shape[1]}")
  checks.count(emb_y.shape[2], "r (emb_y.shape[2])", 1)
  dtype = jnp.result_type(emb_x, emb_y)
  emb_x, emb_y = emb_x.astype(dtype, copy=False), emb_y.astype(dtype, copy=False)
  if mesh is None:
    scores, finite = _score_dataset(key, emb_x, emb_y, num_bootstrap, transform, px_formula)
    _raise_unless_finite(finite, emb_x, emb_y)
    return scores
  from jaxsys.lib import sharding  # only sharded callers need it

  (emb_x, emb_y), num_questions = sharding.pad_leading((emb_x, emb_y), mesh.devices.size)
  emb_x, emb_y = sharding.shard_leading((emb_x, emb_y), mesh)
  scores, finite = _score_dataset(key, emb_x, emb_y, num_bootstrap, transform, px_formula)
  _raise_unless_finite(finite, emb_x, emb_y)
  return jax.tree.map(lambda v: v[:num_questions], scores)
