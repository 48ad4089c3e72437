"""Every uncertainty estimator behind one interface: `(UQInputs, key) -> f32[Q]`.

`UQInputs` holds what the estimators read, computed once per dataset (embeddings of the
perturbed inputs, of their responses and of the baseline samples; pair probabilities; and the
few host-side values that need a model call or raw text). Each estimator is registered by name
in `lib.registry.UQ_SCORES` and returns one uncertainty per question (higher = less reliable).

  inputs = UQInputs.from_embeddings(emb_x, emb_y, emb_b, texts_b=answers)
  scores = score_all(inputs, jax.random.key(0), ["inv_entropy", "degmat", "lexsim"])

Baselines score the r0 samples of the original question (spec section 5); the Inv-Entropy
family scores all m x r responses. With the `embedding` pair proxy (no NLI model offline),
the pair-based baselines are reported with the suffix "[emb]" (`display_name`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.algorithms.uq import baselines, inv_entropy
from jaxsys.lib.registry import UQ_SCORES


@flax.struct.dataclass
class UQInputs:
  """Per-dataset inputs shared by all estimators (leading axis Q = questions)."""

  emb_x: jax.Array  # [Q, m, d] inputs: the original question (index 0) and its perturbations
  emb_y: jax.Array  # [Q, m, r, d] r sampled responses to each input
  emb_b: jax.Array  # [Q, r0, d] baseline samples: r0 responses to the original question
  pair_b: baselines.PairProbs  # each [Q, r0, r0]: entail / neutral / contradict probabilities
  same_b: jax.Array  # bool [Q, r0, r0]: normalised texts of two baseline samples are equal
  host: dict  # name -> f[Q]: values computed outside JAX (verbalized, p_true, msp, ...)
  texts_b: tuple = flax.struct.field(pytree_node=False, default=())  # [Q][r0] sample texts
  pair_source: str = flax.struct.field(pytree_node=False, default="embedding")

  @classmethod
  def from_embeddings(cls, emb_x, emb_y, emb_b, *, texts_b=(), host=None, normalise=None):
    """Inputs with the embedding pair proxy (spec section 5) and exact-text equality."""
    emb_x, emb_y, emb_b = (jnp.asarray(a, jnp.float32) for a in (emb_x, emb_y, emb_b))
    if emb_x.ndim != 3 or emb_y.ndim != 4 or emb_b.ndim != 3:
      raise ValueError(
        f"need emb_x [Q,m,d], emb_y [Q,m,r,d], emb_b [Q,r0,d]; got shapes {emb_x.shape}, "
        f"{emb_y.shape}, {emb_b.shape}"
      )
    q = emb_x.shape[0]
    if emb_y.shape[0] != q or emb_b.shape[0] != q:
      raise ValueError(f"question counts differ: {q}, {emb_y.shape[0]}, {emb_b.shape[0]}")
    r0 = emb_b.shape[1]
    if texts_b:
      if len(texts_b) != q or any(len(t) != r0 for t in texts_b):
        raise ValueError(f"texts_b must be [Q={q}][r0={r0}] strings")
      same = np.stack([baselines.same_text_matrix(t, normalise) for t in texts_b])
    else:
      same = np.eye(r0, dtype=bool)[None].repeat(q, 0)
    pair = jax.vmap(baselines.embedding_pair_probs)(emb_b)
    host = {k: jnp.asarray(v, jnp.float32) for k, v in (host or {}).items()}
    for name, values in host.items():
      if values.shape != (q,):
        raise ValueError(f"host[{name!r}] must have shape ({q},), got {values.shape}")
    texts = tuple(tuple(t) for t in texts_b)
    return cls(emb_x, emb_y, emb_b, pair, jnp.asarray(same), host, texts, "embedding")

  @property
  def num_questions(self) -> int:
    return self.emb_x.shape[0]


class Estimator(NamedTuple):
  fn: Callable  # (UQInputs, key) -> f32[Q]
  needs: tuple[str, ...]  # UQInputs fields (or "host:<name>") it reads
  uses_pairs: bool  # reads pair_b: reported with the pair source as suffix


def register(name: str, needs: Sequence[str], uses_pairs: bool = False):
  def wrap(fn):
    UQ_SCORES.register(name, Estimator(fn, tuple(needs), uses_pairs))
    return fn

  return wrap


def display_name(name: str, inputs: UQInputs | None = None) -> str:
  """The name a table shows: pair-based baselines carry their pair source, e.g. degmat[emb]."""
  est = UQ_SCORES.get(name)
  source = "embedding" if inputs is None else inputs.pair_source
  return f"{name}[{source[:3]}]" if est.uses_pairs else name


# --- the Inv-Entropy family (spec sections 1.2 and 3) -------------------------------------------


@functools.lru_cache(maxsize=8)
def _family_measure(field: str, replicated: bool, num_bootstrap, transform, px_formula):
  def fn(inputs: UQInputs, key):
    scores = inv_entropy.score_dataset(
      key,
      inputs.emb_x,
      inputs.emb_y,
      num_bootstrap=num_bootstrap,
      transform=transform,
      px_formula=px_formula,
    )
    return getattr(scores.mean if replicated else scores.nr, field)

  return fn


def inv_family(field: str, *, replicated=True, num_bootstrap=30, transform="shift", px="bayes"):
  """One measure of the dual walk as an estimator function (for ablations by name)."""
  return _family_measure(field, replicated, num_bootstrap, transform, px)


for _field in inv_entropy.MEASURE_NAMES:
  register(_field, ("emb_x", "emb_y"))(inv_family(_field))
register("nr_inv_entropy", ("emb_x", "emb_y"))(inv_family("inv_entropy", replicated=False))
register("inv_entropy[abs]", ("emb_x", "emb_y"))(inv_family("inv_entropy", transform="abs"))
register("ni_entropy[paper_px]", ("emb_x", "emb_y"))(inv_family("ni_entropy", px="paper"))


# --- baselines on the r0 samples of the original question (spec section 5) ----------------------


def _per_question(fn):
  return lambda *args: jax.vmap(fn)(*args)


def _equivalence(inputs: UQInputs):
  return jax.vmap(baselines.equivalence)(inputs.pair_b, same_text=inputs.same_b)


def _affinity(inputs: UQInputs):
  return jax.vmap(baselines.affinity)(inputs.pair_b)


@register("semantic_entropy", ("pair_b", "same_b"), uses_pairs=True)
def _semantic_entropy(inputs, key):
  return _per_question(baselines.semantic_entropy)(_equivalence(inputs))


@register("numsets", ("pair_b", "same_b"), uses_pairs=True)
def _numsets(inputs, key):
  return _per_question(baselines.numsets)(_equivalence(inputs)).astype(jnp.float32)


@register("degmat", ("pair_b",), uses_pairs=True)
def _degmat(inputs, key):
  return _per_question(baselines.degmat)(_affinity(inputs))


@register("eigv", ("pair_b",), uses_pairs=True)
def _eigv(inputs, key):
  return _per_question(baselines.eigv)(_affinity(inputs))


@register("eccentricity", ("pair_b",), uses_pairs=True)
def _eccentricity(inputs, key):
  return _per_question(baselines.eccentricity)(_affinity(inputs))


@register("luq", ("pair_b",), uses_pairs=True)
def _luq(inputs, key):
  return _per_question(baselines.luq)(inputs.pair_b)


@register("kle", ("pair_b",), uses_pairs=True)
def _kle(inputs, key):
  return _per_question(baselines.kle)(inputs.pair_b)


@register("kernel_entropy", ("emb_b",))
def _kernel_entropy(inputs, key):
  return _per_question(baselines.kernel_entropy)(inputs.emb_b)


@register("lexsim", ("texts_b",))
def _lexsim(inputs, key):
  if not inputs.texts_b:
    raise ValueError("lexsim needs the baseline sample texts (UQInputs.texts_b)")
  return jnp.asarray([baselines.lexsim(t) for t in inputs.texts_b], jnp.float32)


def _host_value(name: str):
  def fn(inputs: UQInputs, key):
    if name not in inputs.host:
      raise ValueError(f"{name} needs UQInputs.host[{name!r}] (computed with a model call)")
    return inputs.host[name]

  return fn


for _name in (
  "verbalized",
  "p_true",
  "p_true_empirical",
  "msp",
  "perplexity",
  "mean_token_entropy",
):
  register(_name, (f"host:{_name}",))(_host_value(_name))


def available(inputs: UQInputs, names: Sequence[str] | None = None) -> list[str]:
  """The registered estimators (or those of `names`) whose inputs `inputs` holds."""
  out = []
  for name in UQ_SCORES.names() if names is None else names:
    needs = UQ_SCORES.get(name).needs
    ok = all(
      (n[5:] in inputs.host) if n.startswith("host:") else (n != "texts_b" or inputs.texts_b)
      for n in needs
    )
    if ok:
      out.append(name)
  return out


def score_all(inputs: UQInputs, key, names: Sequence[str]) -> dict[str, np.ndarray]:
  """{name: f32[Q]} for each estimator in `names`.

  Every estimator gets the same key, so the Inv-Entropy measures share their bootstrap draws
  (NI vs Inv compares the two entropies on the same responses).
  """
  for name in names:
    UQ_SCORES.get(name)  # unknown names fail before any work
  return {name: np.asarray(UQ_SCORES.get(name).fn(inputs, key), np.float32) for name in names}
