"""GAAP: a genetic algorithm over word-level edits that perturbs a question (spec section 4).

Host-side Python: the population is a set of token sequences, and the only numeric work is
embedding them (batched through `embed`). Fitness of a text x is its similarity to the original
question x0 under the same encoder and transform as Inv-Entropy, so later generations drift
further from x0 and the sampled outputs span a similarity spectrum.

The paper (Song et al. 2025, section 2.6 and appendix C) gives the operators; everything it
leaves open is ours and marked [R] on `GaapConfig`: key words scored KeyBERT-style with the
local encoder (never numbers, so arithmetic questions keep their meaning), WordNet
substitutions ranked by encoder similarity (algorithms/uq/wordnet.py, with an
embedding-neighbour fallback), a population cap, and how the n outputs are drawn from the
sampled generations.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from jaxsys.algorithms.uq import inv_entropy

Embed = Callable[[Sequence[str]], np.ndarray]  # texts -> [N, d] embeddings

# A small English stopword list (articles, pronouns, auxiliaries, prepositions, question words):
# editing these changes grammar, not content.
STOPWORDS = frozenset(
  """a about above after again against all am an and any are as at be because been before being
  below between both but by can could did do does doing down during each few for from further had
  has have having he her here hers herself him himself his how i if in into is it its itself just
  me more most my myself no nor not now of off on once only or other our ours ourselves out over
  own same she should so some such than that the their theirs them themselves then there these
  they this those through to too under until up very was we were what when where which while who
  whom why will with would you your yours yourself yourselves""".split()
)
_TOKEN = re.compile(r"\w+|[^\w\s]")
DELETE = ""  # the empty substitution: the token is removed


@dataclasses.dataclass(frozen=True)
class GaapConfig:
  """GAAP settings. Paper values: n = 9, stop threshold 0.7; the rest are ours [R]."""

  n: int = 9  # perturbed questions returned
  key_ratio: float = 0.2  # [R] rho: key tokens = max(1, int(rho * tokens))
  population_cap: int = 64  # [R] after dedup, a uniform subset of this size survives
  generations: int = 10  # [R] Num: most generations run
  gap: int = 2  # [R] tau: outputs come from generations 0, tau, 2 tau, ...
  stop_below: float = 0.7  # paper delta: stop once the best fitness falls below it
  max_substitutes: int = 20  # [R] per word, the closest WordNet relatives by the encoder
  transform: str = "shift"  # similarity transform, as for Inv-Entropy

  def __post_init__(self):
    for name in ("n", "population_cap", "generations", "gap", "max_substitutes"):
      if getattr(self, name) < 1:
        raise ValueError(f"GaapConfig.{name} must be >= 1, got {getattr(self, name)}")
    if not 0.0 < self.key_ratio <= 1.0:
      raise ValueError(f"GaapConfig.key_ratio must be in (0, 1], got {self.key_ratio}")


class GaapResult(NamedTuple):
  texts: list[str]  # exactly config.n perturbed questions
  generation: list[int]  # the generation each text was sampled from
  fitness: list[float]  # its similarity to the original question
  degenerate: bool  # no edit was possible: the original repeated n times


def tokenize(text: str) -> list[str]:
  return _TOKEN.findall(text)


def detokenize(tokens: Sequence[str]) -> str:
  """Joins tokens with spaces, none before closing punctuation or after an opening bracket
  (operators such as "+" keep theirs); deleted (empty) tokens vanish."""
  out = ""
  for tok in filter(None, tokens):
    glue = "" if not out or re.fullmatch(r"[.,!?;:)\]}%']", tok) or out[-1] in "([{$'" else " "
    out += glue + tok
  return out


def is_mutable(token: str) -> bool:
  """A token GAAP may edit: a word of 3+ letters, not a stopword. Numbers never qualify."""
  return token.isalpha() and len(token) >= 3 and token.lower() not in STOPWORDS


class Substitutions:
  """SUB(t): related words of t (WordNet, else encoder neighbours), closest first, cached.

  `wordnet`: an `algorithms.uq.wordnet.WordNet` or None. Without it (or for words WordNet does
  not know) the fallback is the nearest `vocabulary` words by the encoder with cosine >= 0.5,
  the spec's embedding-neighbour source; `source` tells which one produced a word's set.
  """

  def __init__(
    self, embed: Embed, wordnet=None, vocabulary: Sequence[str] = (), limit=20, max_candidates=60
  ):
    self.embed, self.wordnet, self.limit = embed, wordnet, limit
    # [R] Only the first `max_candidates` WordNet relatives (synonyms of the first senses come
    # first) are ranked: mutations reach new words every generation, and embedding every
    # relative of each (often 100+) dominated GAAP's cost.
    self.max_candidates = max_candidates
    self.vocabulary = [w for w in dict.fromkeys(vocabulary) if w.isalpha()]
    self._vocab_emb = None
    self._cache: dict[str, list[str]] = {}
    self._word_emb: dict[str, np.ndarray] = {}  # mutations keep meeting the same relatives
    self.source: dict[str, str] = {}

  def __call__(self, word: str) -> list[str]:
    key = word.lower()
    if key not in self._cache:
      related = self.wordnet.related(key) if self.wordnet is not None else []
      if related:
        self._cache[key] = self._closest(key, related[: self.max_candidates])
        self.source[key] = "wordnet"
      else:
        self._cache[key] = self._neighbours(key)
        self.source[key] = "embedding"
    return self._cache[key]

  def _closest(self, word, candidates):
    words = [word, *candidates]
    new = [w for w in dict.fromkeys(words) if w not in self._word_emb]
    if new:
      self._word_emb.update(zip(new, self.embed(new), strict=True))
    emb = np.stack([self._word_emb[w] for w in words])
    order = np.argsort(-(emb[1:] @ emb[0]), kind="stable")
    return [candidates[i] for i in order[: self.limit]]

  def _neighbours(self, word):
    if not self.vocabulary:
      return []
    if self._vocab_emb is None:
      self._vocab_emb = self.embed(self.vocabulary)
    cos = self._vocab_emb @ self.embed([word])[0]
    order = np.argsort(-cos, kind="stable")
    keep = [self.vocabulary[i] for i in order if cos[i] >= 0.5 and self.vocabulary[i] != word]
    return keep[: min(self.limit, 10)]


def key_token_positions(tokens: Sequence[str], embed: Embed, key_ratio: float) -> list[int]:
  """Positions of the max(1, int(rho * len)) mutable tokens closest to the whole sentence."""
  candidates = [i for i, t in enumerate(tokens) if is_mutable(t)]
  if not candidates:
    return []
  emb = embed([detokenize(tokens), *(tokens[i] for i in candidates)])
  scores = emb[1:] @ emb[0]
  q = max(1, int(key_ratio * len(tokens)))
  best = np.argsort(-scores, kind="stable")[:q]
  return sorted(candidates[i] for i in best)


def gaap(
  question: str,
  embed: Embed,
  subs: Substitutions,
  rng: np.random.Generator,
  config: GaapConfig = GaapConfig(),
) -> GaapResult:
  """Perturbs `question` by GAAP (spec section 4); `rng` carries all the randomness."""
  x0 = tuple(tokenize(question))
  fitness_of = _Fitness(question, embed, config.transform)
  keys = key_token_positions(x0, embed, config.key_ratio)
  # Pop_0: every single-key-token substitution or deletion of x0.
  population = [x0[:i] + (s,) + x0[i + 1 :] for i in keys for s in (*subs(x0[i]), DELETE)]
  population = _dedup(p for p in population if detokenize(p) != detokenize(x0))
  if not population:
    return GaapResult([question] * config.n, [0] * config.n, [1.0] * config.n, True)
  population = _cap(population, config.population_cap, rng)
  generations = [population]
  for _ in range(config.generations):
    fit = fitness_of(population)
    if fit.max() < config.stop_below:
      break
    population = _next_generation(population, fit, subs, rng, config)
    population = [p for p in population if detokenize(p) != detokenize(x0)] or generations[-1]
    generations.append(population)
  return _sample_outputs(generations, fitness_of, rng, config)


def _next_generation(population, fit, subs, rng, config):
  """Pop_{t+1} = parents + their crossovers + mutated crossovers (paper Eq. 20), capped."""
  n_parents = min(config.population_cap // 2, len(population))
  chosen = rng.choice(len(population), size=n_parents, replace=True, p=fit / fit.sum())
  parents = [population[i] for i in chosen]
  offspring = []
  order = rng.permutation(len(parents))
  for a, b in zip(order[0::2], order[1::2], strict=False):
    pa, pb = parents[a], parents[b]
    shorter = min(len(pa), len(pb))
    if shorter < 2:
      continue
    h = int(rng.integers(1, shorter))  # U{1..p-1}
    offspring += [pa[:h] + pb[h:], pb[:h] + pa[h:]]
  mutated = [_mutate(child, subs, rng) for child in offspring]
  return _cap(_dedup([*parents, *offspring, *mutated]), config.population_cap, rng)


def _mutate(tokens, subs, rng):
  """One random mutable token replaced by a uniform draw from SUB(t), deletion included."""
  positions = [i for i, t in enumerate(tokens) if is_mutable(t)]
  if not positions:
    return tokens
  i = positions[int(rng.integers(len(positions)))]
  choices = [*subs(tokens[i]), DELETE]
  return tokens[:i] + (choices[int(rng.integers(len(choices)))],) + tokens[i + 1 :]


def _sample_outputs(generations, fitness_of, rng, config):
  """n texts spread evenly over generations 0, tau, 2 tau, ...; earlier ones get the rest."""
  sampled = list(range(0, len(generations), config.gap))
  share = [config.n // len(sampled) + (k < config.n % len(sampled)) for k in range(len(sampled))]
  texts, gens, seen = [], [], set()
  for g, want in zip(sampled, share, strict=True):
    pool = [t for t in dict.fromkeys(detokenize(p) for p in generations[g]) if t not in seen]
    take = [pool[i] for i in rng.permutation(len(pool))[:want]]
    seen.update(take)
    texts += take
    gens += [g] * len(take)
  # Too few distinct texts: repeat random ones (the paper's padding rule).
  while len(texts) < config.n:
    i = int(rng.integers(len(texts)))
    texts.append(texts[i])
    gens.append(gens[i])
  fit = fitness_of([tuple(tokenize(t)) for t in texts])
  return GaapResult(texts, gens, [float(f) for f in fit], False)


class _Fitness:
  """f(x) = a(x0, x) with the Inv-Entropy similarity; embeddings cached by text."""

  def __init__(self, question, embed, transform):
    self.embed, self.transform = embed, transform
    self.cache: dict[str, np.ndarray] = {}
    self.x0 = embed([question])[0]

  def __call__(self, population) -> np.ndarray:
    texts = [detokenize(p) for p in population]
    new = [t for t in dict.fromkeys(texts) if t not in self.cache]
    if new:
      self.cache.update(zip(new, self.embed(new), strict=True))
    emb = np.stack([self.cache[t] for t in texts])
    sim = inv_entropy.similarity(self.x0[None], emb, self.transform)
    return np.maximum(np.asarray(sim, np.float64)[0], 1e-12)  # roulette needs positive mass


def _dedup(population):
  return list(dict.fromkeys(population))


def _cap(population, cap, rng):
  if len(population) <= cap:
    return population
  keep = np.sort(rng.choice(len(population), size=cap, replace=False))
  return [population[i] for i in keep]
