"""Baseline uncertainty estimators on one question's sample set s_1..s_m (spec §5).

Every function returns an *uncertainty*: higher means less reliable. The estimators that work on
numbers (pair probabilities, similarity matrices, embeddings, token log-probabilities) are pure
JAX functions of one question with fixed shapes, so they can be jitted and vmapped over questions:

  pair = embedding_pair_probs(emb)                 # PairProbs, each [m, m]
  w = affinity(pair, "entail")                     # symmetric similarity W [m, m]
  eq = equivalence(pair, tau_eq=0.9)               # bidirectional semantic equivalence [m, m]
  u = jax.vmap(semantic_entropy)(eq_per_question)  # [Q]

Pairwise inputs come from one `PairProbs` per question (an NLI model, an LLM judge or the
embedding proxy of the spec); every estimator reads them, none recomputes them. Python-level
arguments that pick code (`kind`, `normalise`) are static under `jax.jit`.

The estimators on text (`lexsim`, `parse_verbalized`, `p_true_prompt`, `p_true_empirical`) run on
the host in plain Python: strings have no fixed shape, and for the few dozen short answers of one
question a Python LCS costs microseconds, so padding token ids into arrays for a JAX kernel would
add a vocabulary and a length cap without saving any time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.algorithms.uq import inv_entropy

# Prompt suffix of verbalised uncertainty (Tian et al. 2023, as used by the paper).
VERBALIZED_SUFFIX = "And use a percentage to tell me your confidence in your answer."

# Eigenvalues of the normalised KLE kernel at or below this are treated as zero.
KLE_EIGENVALUE_FLOOR = 1e-12

_HIGHEST = jax.lax.Precision.HIGHEST


class PairProbs(NamedTuple):
  """NLI-style probabilities for every ordered pair of samples (row i = premise s_i)."""

  ent: jax.Array  # [m, m] P(s_i entails s_j)
  neu: jax.Array  # [m, m] P(neutral)
  con: jax.Array  # [m, m] P(s_i contradicts s_j)


# ------------------------------------------------------------------------------------------------
# Input checks (static: shapes and Python hyperparameters, so they also run under jit and vmap).


def _as_float(x) -> jax.Array:
  """`x` as a JAX array of a floating dtype (integers and bools go to JAX's default float)."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  return x


def _check_square(x: jax.Array, name: str, min_size: int = 1) -> int:
  """Raises ValueError unless `x` is [m, m] with m >= min_size; returns m."""
  if x.ndim != 2 or x.shape[0] != x.shape[1]:
    raise ValueError(f"{name} must be a square [m, m] matrix, got shape {tuple(x.shape)}")
  if x.shape[0] < min_size:
    raise ValueError(f"{name} needs at least {min_size} samples, got m = {x.shape[0]}")
  return x.shape[0]


def _check_pair(pair: PairProbs, min_size: int = 1) -> int:
  if not isinstance(pair, PairProbs):
    raise ValueError(f"pair must be a PairProbs(ent, neu, con), got {type(pair).__name__}")
  shapes = {f: tuple(jnp.shape(getattr(pair, f))) for f in PairProbs._fields}
  if len(set(shapes.values())) != 1:
    raise ValueError(f"pair fields must share one [m, m] shape, got {shapes}")
  return _check_square(jnp.asarray(pair.ent), "pair.ent", min_size)


def _check_positive(value, name: str) -> None:
  """Checks a hyperparameter that arrived as a Python number (a traced one cannot be checked)."""
  if isinstance(value, int | float) and not (math.isfinite(value) and value > 0):
    raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_text(text, name: str) -> str:
  if not isinstance(text, str):
    raise ValueError(f"{name} must be a string, got {type(text).__name__} {text!r}")
  return text


def _check_embeddings(emb, min_size: int) -> jax.Array:
  emb = _as_float(emb)
  if emb.ndim != 2:
    raise ValueError(f"emb must be [m, d], got shape {tuple(emb.shape)}")
  if emb.shape[0] < min_size:
    raise ValueError(f"emb needs at least {min_size} samples, got m = {emb.shape[0]}")
  return emb


# ------------------------------------------------------------------------------------------------
# Pairwise inputs.


def embedding_pair_probs(emb: jax.Array) -> PairProbs:
  """The spec's `embedding` pair scorer: P_ent = (1 + cos)/2, P_con = 1 - P_ent, P_neu = 0.

  Args:
    emb: [m, d] sentence embeddings of the samples (need not be L2-normalised).

  Returns:
    PairProbs with each field [m, m], symmetric. Scores computed with this proxy are not NLI
    scores (the spec tags them `[emb]`).
  """
  emb = _check_embeddings(emb, min_size=1)
  ent = inv_entropy.similarity(emb, emb, "shift")  # the same (1 + cos)/2 as Inv-Entropy's S_x
  return PairProbs(ent=ent, neu=jnp.zeros_like(ent), con=1.0 - ent)


def affinity(pair: PairProbs, kind: str = "entail") -> jax.Array:
  """Symmetric similarity W [m, m] from pair probabilities.

  Args:
    pair: PairProbs, each [m, m].
    kind: "entail" -> W = (E + E^T)/2 with E = P_ent; "contra" -> W = 1 - (C + C^T)/2 with
      C = P_con. Static under jit.

  Returns:
    W [m, m]; the diagonal is whatever the scorer gave for self-pairs (1 for the embedding proxy).
  """
  _check_pair(pair)
  if kind == "entail":
    w = _as_float(pair.ent)
  elif kind == "contra":
    w = 1.0 - _as_float(pair.con)
  else:
    raise ValueError(f"kind must be 'entail' or 'contra', got {kind!r}")
  return (w + w.T) / 2.0


def equivalence(
  pair: PairProbs, tau_eq: float = 0.9, same_text: jax.Array | None = None
) -> jax.Array:
  """Bidirectional semantic equivalence: P_ent >= tau_eq both ways, or identical normalised text.

  Args:
    pair: PairProbs, each [m, m].
    tau_eq: entailment threshold in (0, 1].
    same_text: optional bool [m, m], True where the normalised strings are equal (see
      `same_text_matrix`); it is symmetrised.

  Returns:
    bool [m, m], symmetric, True on the diagonal.
  """
  m = _check_pair(pair)
  if isinstance(tau_eq, int | float) and not 0.0 < tau_eq <= 1.0:
    raise ValueError(f"tau_eq must be in (0, 1], got {tau_eq!r}")
  ent = jnp.asarray(pair.ent)
  equiv = (ent >= tau_eq) & (ent.T >= tau_eq)
  if same_text is not None:
    same_text = jnp.asarray(same_text, dtype=bool)
    if same_text.shape != (m, m):
      raise ValueError(f"same_text must be bool [{m}, {m}], got shape {tuple(same_text.shape)}")
    equiv = equiv | same_text | same_text.T
  return equiv | jnp.eye(m, dtype=bool)


def same_text_matrix(
  texts: Sequence[str], normalise: Callable[[str], str] | None = None
) -> np.ndarray:
  """Host-side bool [m, m]: True where `normalise(texts[i]) == normalise(texts[j])`.

  `normalise` defaults to the identity; pass the answer normaliser of the labels module to get
  the spec's "normalised strings equal" rule.
  """
  keys = [_check_text(t, f"texts[{i}]") for i, t in enumerate(texts)]
  if normalise is not None:
    keys = [normalise(k) for k in keys]
  keys = np.array(keys, dtype=object)
  return keys[:, None] == keys[None, :]


def _bidirectional(equiv: jax.Array) -> jax.Array:
  """Equivalence both ways (AND of the two directions), with every sample equal to itself."""
  equiv = jnp.asarray(equiv, dtype=bool)
  m = _check_square(equiv, "equiv")
  return (equiv & equiv.T) | jnp.eye(m, dtype=bool)


# ------------------------------------------------------------------------------------------------
# Clustering estimators.


def greedy_clusters(equiv: jax.Array) -> jax.Array:
  """Greedy semantic clustering: each sample joins the first cluster whose first member it equals.

  Samples are visited in order; a sample equivalent (both ways) to no earlier cluster founder
  founds a new cluster. For a non-transitive relation the result depends on the order, exactly
  like the reference implementation of semantic entropy.

  Args:
    equiv: bool [m, m] equivalence (both directions are required).

  Returns:
    int32 [m]: the cluster of each sample, named by the index of its founding sample.
  """
  return _greedy_labels(_bidirectional(equiv))


# Jitted so that eager callers compile the loop once per shape, not once per call.
@jax.jit
def _greedy_labels(equiv: jax.Array) -> jax.Array:
  m = equiv.shape[0]

  def visit(i, state):
    labels, is_founder = state
    # Founders are created in sample order, so the lowest matching index is the first cluster.
    matches = is_founder & equiv[i]
    joins = jnp.any(matches)
    label = jnp.where(joins, jnp.argmax(matches).astype(jnp.int32), i)
    return labels.at[i].set(label), is_founder.at[i].set(~joins)

  initial = (jnp.arange(m, dtype=jnp.int32), jnp.zeros(m, dtype=bool))
  labels, _ = jax.lax.fori_loop(0, m, visit, initial)
  return labels


def _entropy(p: jax.Array) -> jax.Array:
  """-sum p ln p with 0 ln 0 = 0."""
  # 0 - sum rather than -sum: a single cluster gives +0.0, not -0.0, in logs and tables.
  return 0.0 - jnp.sum(jax.scipy.special.xlogy(p, p))


def semantic_entropy(equiv: jax.Array, dtype=None) -> jax.Array:
  """Discrete semantic entropy: greedy clusters, p_c = |c|/m, -sum_c p_c ln p_c.

  Args:
    equiv: bool [m, m] bidirectional equivalence (from `equivalence`).
    dtype: float dtype of the result; None gives JAX's default float.

  Returns:
    scalar in [0, ln m].
  """
  labels = greedy_clusters(equiv)
  m = labels.shape[0]
  dtype = jnp.result_type(float) if dtype is None else dtype
  sizes = jnp.zeros(m, dtype=dtype).at[labels].add(1.0)
  return _entropy(sizes / m)


def semantic_entropy_lik(equiv: jax.Array, seq_logprob: jax.Array) -> jax.Array:
  """Semantic entropy with cluster mass proportional to sum_{s in c} exp(seq_logprob[s]).

  Args:
    equiv: bool [m, m] bidirectional equivalence.
    seq_logprob: [m] length-normalised log-probability of each sample (mean token log-prob).

  Returns:
    scalar in [0, ln m].
  """
  m = _check_square(jnp.asarray(equiv), "equiv")
  seq_logprob = _as_float(seq_logprob)
  if seq_logprob.shape != (m,):
    raise ValueError(f"seq_logprob must be [{m}] (one per sample), got {tuple(seq_logprob.shape)}")
  labels = greedy_clusters(equiv)
  member = labels[:, None] == jnp.arange(m)[None, :]  # [sample, cluster]
  # Masses in log space: exp of a mean log-prob of a long answer underflows in float32.
  log_mass = jax.nn.logsumexp(jnp.where(member, seq_logprob[:, None], -jnp.inf), axis=0)
  log_p = log_mass - jax.nn.logsumexp(seq_logprob)
  p = jnp.exp(log_p)
  return 0.0 - jnp.sum(jnp.where(p > 0, p * log_p, 0.0))


def numsets(equiv: jax.Array, dtype=None) -> jax.Array:
  """Number of connected components of the graph "i ~ j iff equivalent both ways" (NumSets).

  Reachability by repeated boolean squaring of (A | I): after k squarings it covers paths of
  length 2^k, so (m - 1).bit_length() squarings (a static count, 2^k >= m - 1) reach every node
  of a component.
  Each component is then counted once, at its lowest-indexed node.

  Args:
    equiv: bool [m, m] equivalence.
    dtype: float dtype of the result; None gives JAX's default float.

  Returns:
    scalar in [1, m].
  """
  adjacency = _bidirectional(equiv)
  dtype = jnp.result_type(float) if dtype is None else dtype
  return _count_components(adjacency).astype(dtype)


# Jitted so that eager callers compile the loop once per shape, not once per call.
@jax.jit
def _count_components(adjacency: jax.Array) -> jax.Array:
  m = adjacency.shape[0]

  def square(_, reach):
    # Counts of 0/1 products stay exact integers in float32 up to m = 2^24.
    paths = jnp.matmul(reach, reach, precision=_HIGHEST)
    return (paths > 0).astype(jnp.float32)

  reach = jax.lax.fori_loop(0, (m - 1).bit_length(), square, adjacency.astype(jnp.float32))
  lowest_reachable = jnp.argmax(reach > 0, axis=1)
  return jnp.sum(lowest_reachable == jnp.arange(m, dtype=lowest_reachable.dtype))


# ------------------------------------------------------------------------------------------------
# Spectral estimators on a similarity matrix W (Lin et al. 2023).


def degmat(w: jax.Array) -> jax.Array:
  """Degree-matrix uncertainty 1 - sum_ij W_ij / m^2 (diagonal included).

  Args:
    w: [m, m] similarity in [0, 1].

  Returns:
    scalar; 0 when all samples agree.
  """
  w = _as_float(w)
  m = _check_square(w, "w")
  return 1.0 - jnp.sum(w) / (m * m)


def _normalised_laplacian(w: jax.Array) -> jax.Array:
  """I - D^{-1/2} W D^{-1/2} of the symmetrised W; a zero-degree row becomes a row of I."""
  w = (w + w.T) / 2.0
  degree = jnp.sum(w, axis=1)
  positive = degree > 0
  inv_sqrt = jnp.where(positive, 1.0 / jnp.sqrt(jnp.where(positive, degree, 1.0)), 0.0)
  return jnp.eye(w.shape[0], dtype=w.dtype) - inv_sqrt[:, None] * w * inv_sqrt[None, :]


def eigv(w: jax.Array) -> jax.Array:
  """Sum of eigenvalues of the graph: sum_k max(0, 1 - lambda_k) of the normalised Laplacian.

  Args:
    w: [m, m] similarity (symmetrised internally).

  Returns:
    scalar in [1, m]: about the number of semantic clusters.
  """
  w = _as_float(w)
  _check_square(w, "w")
  eigenvalues = jnp.linalg.eigvalsh(_normalised_laplacian(w))
  return jnp.sum(jnp.maximum(0.0, 1.0 - eigenvalues))


def eccentricity(w: jax.Array, threshold: float = 0.9) -> jax.Array:
  """Eccentricity: spread of the samples' spectral embeddings around their mean.

  The spectral embedding of sample i is row i of V, the eigenvectors of the normalised
  Laplacian with eigenvalue < threshold (a mask over all m columns keeps the shape static;
  masked columns are zero and stay zero after centring).

  Args:
    w: [m, m] similarity (symmetrised internally).
    threshold: eigenvalue cut (0.9 as in lm-polygraph).

  Returns:
    scalar ||V - mean_rows(V)||_F in [0, sqrt(m - 1)].
  """
  w = _as_float(w)
  _check_square(w, "w")
  _check_positive(threshold, "threshold")
  eigenvalues, vectors = jnp.linalg.eigh(_normalised_laplacian(w))
  kept = vectors * (eigenvalues < threshold)[None, :]
  centred = kept - jnp.mean(kept, axis=0, keepdims=True)
  return jnp.sqrt(jnp.sum(centred * centred))


# ------------------------------------------------------------------------------------------------
# Pairwise-average estimators.


def _off_diagonal_mean(x: jax.Array) -> jax.Array:
  """mean_{i != j} x_ij of an [m, m] matrix, m >= 2."""
  m = x.shape[0]
  return (jnp.sum(x) - jnp.trace(x)) / (m * (m - 1))


def luq(pair: PairProbs) -> jax.Array:
  """LUQ without sentence splitting: 1 - mean_i mean_{j != i} P_ent / (P_ent + P_con).

  P_ent/(P_ent + P_con) equals e^{l_ent}/(e^{l_ent} + e^{l_con}) for softmax probabilities; a pair
  with neither entailment nor contradiction (both 0) counts as 1/2, no evidence either way.

  Args:
    pair: PairProbs, each [m, m], m >= 2.

  Returns:
    scalar in [0, 1].
  """
  _check_pair(pair, min_size=2)
  ent = _as_float(pair.ent)
  con = _as_float(pair.con)
  total = ent + con
  support = jnp.where(total > 0, ent / jnp.where(total > 0, total, 1.0), 0.5)
  return 1.0 - _off_diagonal_mean(support)


def kernel_entropy(emb: jax.Array) -> jax.Array:
  """Negative average kernel value -mean_{i != j} (1 + cos(e_i, e_j))/2 over sample embeddings.

  Args:
    emb: [m, d] sentence embeddings, m >= 2.

  Returns:
    scalar in [-1, 0].
  """
  emb = _check_embeddings(emb, min_size=2)
  return -_off_diagonal_mean(embedding_pair_probs(emb).ent)


def _heat_kernel_entropy(laplacian: jax.Array, t, normalise: bool) -> jax.Array:
  """Von Neumann entropy of the unit-diagonal heat kernel expm(-t L) divided by m."""
  m = laplacian.shape[0]
  # L is symmetric, so expm(-t L) = V diag(exp(-t lambda)) V^T from one eigh: the same kernel
  # as a Pade expm, and it compiles several times faster.
  lam, vec = jnp.linalg.eigh((laplacian + laplacian.T) / 2.0)
  kernel = (vec * jnp.exp(-t * lam)[None, :]) @ vec.T
  root_diagonal = jnp.sqrt(jnp.diagonal(kernel))
  kernel = kernel / (root_diagonal[:, None] * root_diagonal[None, :]) / m
  eigenvalues = jnp.linalg.eigvalsh((kernel + kernel.T) / 2.0)
  positive = eigenvalues > KLE_EIGENVALUE_FLOOR
  safe = jnp.where(positive, eigenvalues, 1.0)
  entropy = 0.0 - jnp.sum(jnp.where(positive, safe * jnp.log(safe), 0.0))
  if normalise:
    # One sample has zero entropy; keep it 0 rather than 0/0.
    return entropy / math.log(m) if m > 1 else jnp.zeros_like(entropy)
  return entropy


def kle(pair: PairProbs, t: float = 0.3, normalise: bool = False) -> jax.Array:
  """Kernel language entropy (Nikitin et al. 2024) with the heat kernel of the semantic graph.

  W = sym(P_ent + P_neu / 2), L = D - W (the positive semi-definite Laplacian; the sign W - D of
  older lm-polygraph reverses the ranking), K = expm(-t L), K <- K / (sqrt diag sqrt diag^T) / m
  so that trace K = 1, U = -sum lambda ln lambda over eigenvalues of K above 1e-12.

  Args:
    pair: PairProbs, each [m, m].
    t: heat-kernel time > 0.
    normalise: divide by ln m so the range is [0, 1] (static under jit).

  Returns:
    scalar in [0, ln m] (or [0, 1] when normalised).
  """
  _check_pair(pair)
  _check_positive(t, "t")
  if not isinstance(normalise, bool):
    raise ValueError(f"normalise must be a Python bool (static), got {normalise!r}")
  w = _as_float(pair.ent) + 0.5 * _as_float(pair.neu)
  w = (w + w.T) / 2.0
  laplacian = jnp.diag(jnp.sum(w, axis=1)) - w
  return _heat_kernel_entropy(laplacian, t, normalise)


# ------------------------------------------------------------------------------------------------
# White-box estimators on the token log-probabilities of one answer.


def _token_mask(values: jax.Array, mask, name: str) -> jax.Array:
  if values.ndim < 1:
    raise ValueError(f"{name} must have a token axis [T, ...], got shape {tuple(values.shape)}")
  if mask is None:
    return jnp.ones(values.shape[:1], dtype=bool)
  mask = jnp.asarray(mask, dtype=bool)
  if mask.shape != values.shape[:1]:
    raise ValueError(f"mask must be bool [{values.shape[0]}], got shape {tuple(mask.shape)}")
  return mask


def msp(token_logprobs: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Maximum sequence probability uncertainty: -log P(answer) = -sum of masked token log-probs.

  Args:
    token_logprobs: [T] log-probability of each generated token.
    mask: optional bool [T], True on the answer's tokens (padding False).
  """
  token_logprobs = _as_float(token_logprobs)
  mask = _token_mask(token_logprobs, mask, "token_logprobs")
  return -jnp.sum(jnp.where(mask, token_logprobs, 0.0))


def perplexity(token_logprobs: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """exp(-mean masked token log-prob); 1 for an empty answer.

  Args:
    token_logprobs: [T] log-probability of each generated token.
    mask: optional bool [T], True on the answer's tokens.
  """
  token_logprobs = _as_float(token_logprobs)
  mask = _token_mask(token_logprobs, mask, "token_logprobs")
  count = jnp.maximum(jnp.sum(mask), 1)
  return jnp.exp(-jnp.sum(jnp.where(mask, token_logprobs, 0.0)) / count)


def mean_token_entropy(token_logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean over masked positions of the entropy of the next-token distribution; 0 if empty.

  Args:
    token_logits: [T, V] logits (or log-probabilities) at each generated position.
    mask: optional bool [T], True on the answer's tokens.
  """
  token_logits = _as_float(token_logits)
  if token_logits.ndim != 2:
    raise ValueError(f"token_logits must be [T, V], got shape {tuple(token_logits.shape)}")
  mask = _token_mask(token_logits, mask, "token_logits")
  log_p = jax.nn.log_softmax(token_logits, axis=-1)
  p = jnp.exp(log_p)
  # Tokens with logit -inf (banned or masked vocabulary) contribute 0, not 0 * -inf = NaN.
  entropy = -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1)
  count = jnp.maximum(jnp.sum(mask), 1)
  return jnp.sum(jnp.where(mask, entropy, 0.0)) / count


# ------------------------------------------------------------------------------------------------
# P(True) (Kadavath et al. 2022).


def p_true_prompt(question: str, proposed: str) -> str:
  """The P(True) self-evaluation prompt for a question and its proposed (greedy) answer."""
  question = _check_text(question, "question").strip()
  proposed = _check_text(proposed, "proposed").strip()
  return (
    f"Question: {question}\n"
    f"Proposed Answer: {proposed}\n"
    "Is the proposed answer:\n"
    " (A) True\n"
    " (B) False\n"
    "The proposed answer is:"
  )


def p_true_from_logits(logit_a: jax.Array, logit_b: jax.Array) -> jax.Array:
  """-ln P(A) with P = softmax over the next-token logits of "A" and "B" (any matching shapes)."""
  logit_a = _as_float(logit_a)
  logit_b = _as_float(logit_b)
  if logit_a.shape != logit_b.shape:
    raise ValueError(
      f"logit_a and logit_b must have one shape, got {tuple(logit_a.shape)} and "
      f"{tuple(logit_b.shape)}"
    )
  return jnp.logaddexp(logit_a, logit_b) - logit_a


_CHOICE = re.compile(r"^\W*(?:\(?([ab])\)?(?![a-z])|(true|false)\b)")


def parse_choice(text: str) -> str | None:
  """The option named by a P(True) answer: "A" or "B" ("(A) True", "B)", "true", ...), else None."""
  match = _CHOICE.match(_check_text(text, "text").strip().lower())
  if match is None:
    return None
  if match.group(1):
    return match.group(1).upper()
  return "A" if match.group(2) == "true" else "B"


def p_true_empirical(choices: Sequence[str]) -> float:
  """Black-box P(True): 1 - fraction of sampled answers choosing (A) True.

  An answer that names neither option counts as not choosing A (the model did not affirm).
  1 - fraction rather than -ln(fraction) keeps the score finite when no sample says A; the two
  rank questions identically.

  Args:
    choices: the sampled answers (e.g. 5) to `p_true_prompt`.
  """
  if isinstance(choices, str) or len(choices) == 0:
    raise ValueError(f"choices must be a non-empty sequence of strings, got {choices!r}")
  said_a = [parse_choice(c) == "A" for c in choices]
  return 1.0 - sum(said_a) / len(said_a)


# ------------------------------------------------------------------------------------------------
# Verbalised uncertainty (Tian et al. 2023).

# A number not glued to a preceding word, dot or digit ("GPT4" and the 5 of ".5" are not numbers);
# thousands separators allowed; a leading minus only when it is not a range dash as in "70-80".
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?")


def parse_verbalized(text: str) -> tuple[float, bool]:
  """Uncertainty from a verbalised confidence: the last number v in [0, 100] gives 1 - v/100.

  Numbers outside [0, 100] (years, negative numbers) are skipped. A fraction like 0.9 is read as
  0.9 %, as the rule says; the prompt asks for a percentage.

  Returns:
    (u, ok): u in [0, 1]; (0.5, False) when no number in range is found.
  """
  text = _check_text(text, "text")
  for token in reversed(_NUMBER.findall(text)):
    value = float(token.replace(",", ""))
    if 0.0 <= value <= 100.0:
      return 1.0 - value / 100.0, True
  return 0.5, False


# ------------------------------------------------------------------------------------------------
# Lexical similarity (Fomicheva et al. 2020).

_WORD = re.compile(r"[a-z0-9]+")
_VOWEL = re.compile(r"[aeiouy]")


def stem(word: str) -> str:
  """A small suffix-stripping stemmer (a subset of Porter's steps 1a-1c), for ROUGE matching.

  Words of up to 3 letters are kept (as rouge_score does). Then: plural "sses" -> "ss",
  "ies" -> "i", a final "s" dropped unless after "s" or "u"; "ing"/"ed" dropped when a vowel
  remains, with a doubled final consonant undoubled ("running" -> "run"; not l, s, z); a final
  "y" after a vowel-bearing stem -> "i" ("city", "cities" -> "citi"). Without Porter's later
  steps, derivational pairs ("connection", "connect") stay distinct, so ROUGE-L can be a little
  lower than rouge_score's on such words.
  """
  if len(word) <= 3:
    return word
  if word.endswith("sses"):
    word = word[:-2]
  elif word.endswith("ies"):
    word = word[:-2]
  elif word.endswith("s") and not word.endswith(("ss", "us")):
    word = word[:-1]
  for suffix in ("ing", "ed"):
    base = word[: -len(suffix)]
    if word.endswith(suffix) and len(base) >= 2 and _VOWEL.search(base):
      word = base
      if len(word) >= 2 and word[-1] == word[-2] and word[-1] not in "aeiouylsz":
        word = word[:-1]
      break
  if word.endswith("y") and len(word) > 2 and _VOWEL.search(word[:-1]):
    word = word[:-1] + "i"
  return word


def rouge_tokens(text: str) -> list[str]:
  """Lower-cased alphanumeric word tokens, stemmed (non-alphanumerics separate tokens)."""
  return [stem(w) for w in _WORD.findall(_check_text(text, "text").lower())]


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
  """Length of the longest common subsequence, dynamic programme over one row."""
  if len(a) < len(b):
    a, b = b, a
  row = [0] * (len(b) + 1)
  for x in a:
    diagonal = 0
    for j, y in enumerate(b, start=1):
      above = row[j]
      row[j] = diagonal + 1 if x == y else max(row[j], row[j - 1])
      diagonal = above
  return row[-1]


def _rouge_l_f_tokens(tokens_a: Sequence[str], tokens_b: Sequence[str]) -> float:
  if not tokens_a or not tokens_b:
    return 0.0
  common = _lcs_length(tokens_a, tokens_b)
  if common == 0:
    return 0.0
  precision, recall = common / len(tokens_a), common / len(tokens_b)
  return 2.0 * precision * recall / (precision + recall)


def rouge_l_f(a: str, b: str) -> float:
  """ROUGE-L F1 between two texts (symmetric); 0 when either has no tokens (as rouge_score)."""
  return _rouge_l_f_tokens(rouge_tokens(a), rouge_tokens(b))


def lexsim(texts: Sequence[str]) -> float:
  """Lexical similarity uncertainty -mean_{i<j} ROUGE-L F(s_i, s_j) over m >= 2 samples.

  Returns:
    a float in [-1, 0]; -1 when all samples have the same tokens.
  """
  if isinstance(texts, str):
    raise ValueError(f"texts must be a sequence of strings, got a string {texts!r}")
  if len(texts) < 2:
    raise ValueError(f"texts needs at least 2 samples, got m = {len(texts)}")
  tokens = [rouge_tokens(_check_text(t, f"texts[{i}]")) for i, t in enumerate(texts)]
  scores = [
    _rouge_l_f_tokens(tokens[i], tokens[j])
    for i in range(len(tokens))
    for j in range(i + 1, len(tokens))
  ]
  return -sum(scores) / len(scores)
