"""A Llama-family decoder (Llama, Qwen2, SmolLM) in flax.nnx, with a KV cache and batched sampling.

The model follows the Hugging Face layout and parameter names (`embed_tokens`, `layers[i].self_attn
.q_proj`, `mlp.gate_proj`, `input_layernorm`, `norm`, `lm_head`), so a loader maps checkpoint
names mechanically. Rotary embeddings use the Hugging Face "rotate half" convention: the two
halves of each head's vector form the rotary pairs (i, i + head_dim / 2). GGUF files store q/k
weights with interleaved pairs instead; `gguf_loader` undoes that permutation.

Generation (`generate`) works on left-padded prompts: every prompt ends at the same cache slot,
so a decode step writes one cache column for the whole batch. A row's rotary position is its cache
slot minus its padding, and the attention mask hides the padding slots. Prompt lengths are padded
to power-of-two buckets so that new lengths do not recompile. The model is split once
(`nnx.split`) and merged inside `jax.jit`; prefill runs once per prompt, the cache is repeated for
the `n` samples, and decoding is one `lax.while_loop` that stops when every row has emitted EOS.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_MIN_PROMPT_BUCKET = 16


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama 3 frequency-dependent rotary scaling ("rope_type": "llama3" in HF configs)."""

  factor: float  # low frequencies are divided by this
  low_freq_factor: float  # wavelengths above original_max_seq_len / low_freq_factor are scaled
  high_freq_factor: float  # wavelengths below original_max_seq_len / high_freq_factor are kept
  original_max_seq_len: int  # context length the model was pretrained with


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Shape and numerics of a Llama-family decoder; hashable, so it can be a static jit argument."""

  vocab_size: int  # number of token embeddings
  dim: int  # residual stream width
  n_layers: int  # number of decoder blocks
  n_heads: int  # query heads
  n_kv_heads: int  # key/value heads (grouped-query attention); divides n_heads
  hidden_dim: int  # SwiGLU inner width
  head_dim: int | None = None  # per-head width; None means dim // n_heads
  rope_theta: float = 10_000.0  # rotary base
  rope_scaling: RopeScaling | None = None  # Llama 3 long-context scaling, or None
  norm_eps: float = 1e-5  # RMSNorm epsilon
  tie_embeddings: bool = True  # logits use the input embedding matrix (no separate lm_head)
  qkv_bias: bool = False  # biases on q/k/v projections (Qwen2)
  max_seq_len: int = 2048  # longest prompt + generation that `generate` accepts
  dtype: str = "float32"  # parameter, activation and KV-cache dtype: "float32" or "bfloat16"

  def __post_init__(self):
    for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"LlamaConfig.{name} must be a positive int, got {value!r}")
    if self.n_heads % self.n_kv_heads:
      raise ValueError(
        f"LlamaConfig.n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}"
      )
    if self.head_dim is None:
      if self.dim % self.n_heads:
        raise ValueError(
          f"LlamaConfig.dim={self.dim} is not divisible by n_heads={self.n_heads}; set head_dim"
        )
      object.__setattr__(self, "head_dim", self.dim // self.n_heads)
    if self.head_dim <= 0 or self.head_dim % 2:
      raise ValueError(f"LlamaConfig.head_dim must be a positive even int, got {self.head_dim}")
    if self.rope_theta <= 0:
      raise ValueError(f"LlamaConfig.rope_theta must be positive, got {self.rope_theta}")
    if self.norm_eps <= 0:
      raise ValueError(f"LlamaConfig.norm_eps must be positive, got {self.norm_eps}")
    if self.max_seq_len <= 0:
      raise ValueError(f"LlamaConfig.max_seq_len must be positive, got {self.max_seq_len}")
    if self.dtype not in _DTYPES:
      raise ValueError(f"LlamaConfig.dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")

  @property
  def jnp_dtype(self):
    return _DTYPES[self.dtype]


def rope_inverse_frequencies(config: LlamaConfig) -> np.ndarray:
  """Rotary angular frequency of each pair, [head_dim // 2] float32 (Llama 3 scaling applied)."""
  exponents = np.arange(0, config.head_dim, 2, dtype=np.float64) / config.head_dim
  inv_freq = 1.0 / config.rope_theta**exponents
  scaling = config.rope_scaling
  if scaling is not None:
    wavelength = 2 * math.pi / inv_freq
    long_wavelength = scaling.original_max_seq_len / scaling.low_freq_factor
    short_wavelength = scaling.original_max_seq_len / scaling.high_freq_factor
    # Between the two thresholds, blend the scaled and unscaled frequency linearly in 1/wavelength.
    smooth = (scaling.original_max_seq_len / wavelength - scaling.low_freq_factor) / (
      scaling.high_freq_factor - scaling.low_freq_factor
    )
    blended = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
    inv_freq = np.where(
      wavelength < short_wavelength,
      inv_freq,
      np.where(wavelength > long_wavelength, inv_freq / scaling.factor, blended),
    )
  return inv_freq.astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
  """Rotates pairs (i, i + head_dim/2) of x [B, T, H, head_dim] by positions [B, T] * inv_freq."""
  angles = positions.astype(jnp.float32)[:, :, None, None] * inv_freq  # [B, T, 1, head_dim/2]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  first, second = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
  return rotated.astype(x.dtype)


def attention_mask(query_slots: jax.Array, num_keys: int, pad_lengths: jax.Array) -> jax.Array:
  """Causal mask over left-padded rows: [B, T, num_keys] bool.

  query_slots: [T] int, the cache slot (or sequence index) of each query token.
  pad_lengths: [B] int, number of padding slots at the start of each row; they are never attended.
  """
  key_slots = jnp.arange(num_keys, dtype=jnp.int32)
  causal = key_slots[None, :] <= query_slots[:, None]  # [T, K]
  not_padding = key_slots[None, :] >= pad_lengths[:, None]  # [B, K]
  return causal[None] & not_padding[:, None, :]


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------


@flax.struct.dataclass
class KVCache:
  """Preallocated keys and values, one array per layer (separate buffers update in place)."""

  keys: tuple[jax.Array, ...]  # n_layers x [B, n_kv_heads, size, head_dim]
  values: tuple[jax.Array, ...]  # n_layers x [B, n_kv_heads, size, head_dim]

  @property
  def size(self) -> int:
    return self.keys[0].shape[2]


class RMSNorm(nnx.Module):
  """x / rms(x) * scale, computed in float32."""

  def __init__(self, dim: int, eps: float, dtype):
    self.scale = nnx.Param(jnp.ones((dim,), dtype))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * self.scale[...].astype(jnp.float32)).astype(x.dtype)


class Attention(nnx.Module):
  """Grouped-query self-attention with rotary positions and an optional KV cache."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    self.n_heads, self.n_kv_heads, self.head_dim = (
      config.n_heads,
      config.n_kv_heads,
      config.head_dim,
    )
    dtype = config.jnp_dtype

    def linear(n_in, n_out, bias):
      return nnx.Linear(n_in, n_out, use_bias=bias, dtype=dtype, param_dtype=dtype, rngs=rngs)

    self.q_proj = linear(config.dim, config.n_heads * config.head_dim, config.qkv_bias)
    self.k_proj = linear(config.dim, config.n_kv_heads * config.head_dim, config.qkv_bias)
    self.v_proj = linear(config.dim, config.n_kv_heads * config.head_dim, config.qkv_bias)
    self.o_proj = linear(config.n_heads * config.head_dim, config.dim, False)

  def __call__(self, x, positions, mask, inv_freq, layer_cache=None, cache_index=None):
    """x [B, T, dim], positions [B, T], mask [B, T, K] -> ([B, T, dim], (keys, values) or None).

    Without a cache the keys are the T input tokens (K = T). With a cache (keys, values), each
    [B, n_kv_heads, K, head_dim], the new keys/values are written at slots cache_index ...
    cache_index + T - 1 and the queries attend over all K slots.
    """
    batch, length, _ = x.shape
    group = self.n_heads // self.n_kv_heads
    q = self.q_proj(x).reshape(batch, length, self.n_heads, self.head_dim)
    k = self.k_proj(x).reshape(batch, length, self.n_kv_heads, self.head_dim)
    v = self.v_proj(x).reshape(batch, length, self.n_kv_heads, self.head_dim)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq).transpose(0, 2, 1, 3)  # [B, n_kv_heads, T, head_dim]
    v = v.transpose(0, 2, 1, 3)
    if layer_cache is not None:
      cache_k, cache_v = layer_cache
      zero = jnp.int32(0)
      start = (zero, zero, jnp.asarray(cache_index, jnp.int32), zero)
      k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), start)
      v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), start)
      layer_cache = (k, v)

    q = q.reshape(batch, length, self.n_kv_heads, group, self.head_dim)
    scores = jnp.einsum("btkgd,bksd->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(self.head_dim)
    # A finite fill keeps fully masked rows (queries on padding) free of NaNs; they are ignored.
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bksd->btkgd", weights, v)
    return self.o_proj(out.reshape(batch, length, self.n_heads * self.head_dim)), layer_cache


class MLP(nnx.Module):
  """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    dtype = config.jnp_dtype

    def linear(n_in, n_out):
      return nnx.Linear(n_in, n_out, use_bias=False, dtype=dtype, param_dtype=dtype, rngs=rngs)

    self.gate_proj = linear(config.dim, config.hidden_dim)
    self.up_proj = linear(config.dim, config.hidden_dim)
    self.down_proj = linear(config.hidden_dim, config.dim)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
  """Pre-norm residual block: attention, then SwiGLU MLP."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    dtype = config.jnp_dtype
    self.input_layernorm = RMSNorm(config.dim, config.norm_eps, dtype)
    self.self_attn = Attention(config, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(config.dim, config.norm_eps, dtype)
    self.mlp = MLP(config, rngs=rngs)

  def __call__(self, x, positions, mask, inv_freq, layer_cache=None, cache_index=None):
    attended, layer_cache = self.self_attn(
      self.input_layernorm(x), positions, mask, inv_freq, layer_cache, cache_index
    )
    x = x + attended
    return x + self.mlp(self.post_attention_layernorm(x)), layer_cache


class Llama(nnx.Module):
  """Llama-family decoder. `model(tokens, positions, mask)` gives logits [B, T, vocab] float32."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    self.config = config
    dtype = config.jnp_dtype
    self.embed_tokens = nnx.Embed(
      config.vocab_size, config.dim, dtype=dtype, param_dtype=dtype, rngs=rngs
    )
    self.layers = nnx.List([DecoderLayer(config, rngs=rngs) for _ in range(config.n_layers)])
    self.norm = RMSNorm(config.dim, config.norm_eps, dtype)
    if not config.tie_embeddings:
      self.lm_head = nnx.Linear(
        config.dim, config.vocab_size, use_bias=False, dtype=dtype, param_dtype=dtype, rngs=rngs
      )

  def init_cache(self, batch_size: int, size: int, dtype=None) -> KVCache:
    """An empty cache for batch_size rows of `size` slots (dtype defaults to the model's)."""
    config = self.config
    shape = (batch_size, config.n_kv_heads, size, config.head_dim)
    dtype = dtype or config.jnp_dtype
    return KVCache(
      keys=tuple(jnp.zeros(shape, dtype) for _ in range(config.n_layers)),
      values=tuple(jnp.zeros(shape, dtype) for _ in range(config.n_layers)),
    )

  def hidden_states(self, tokens, positions, mask, cache=None, cache_index=None):
    """Final-normed hidden states [B, T, dim] and the updated cache (None without one).

    tokens, positions: [B, T] int; mask: [B, T, K] bool, K = T without a cache, else cache.size;
    cache_index: int32 scalar, the cache slot of tokens[:, 0].
    """
    inv_freq = jnp.asarray(rope_inverse_frequencies(self.config))
    x = self.embed_tokens(tokens)
    new_keys, new_values = [], []
    for i, layer in enumerate(self.layers):
      layer_cache = None if cache is None else (cache.keys[i], cache.values[i])
      x, layer_cache = layer(x, positions, mask, inv_freq, layer_cache, cache_index)
      if cache is not None:
        new_keys.append(layer_cache[0])
        new_values.append(layer_cache[1])
    cache = None if cache is None else KVCache(keys=tuple(new_keys), values=tuple(new_values))
    return self.norm(x), cache

  def logits(self, hidden: jax.Array) -> jax.Array:
    """Vocabulary logits [..., vocab] float32 from hidden states [..., dim]."""
    if self.config.tie_embeddings:
      out = self.embed_tokens.attend(hidden)
    else:
      out = self.lm_head(hidden)
    return out.astype(jnp.float32)

  def __call__(self, tokens, positions, mask, cache=None, cache_index=None):
    """Logits [B, T, vocab] float32 and the updated cache; arguments as in `hidden_states`."""
    hidden, cache = self.hidden_states(tokens, positions, mask, cache, cache_index)
    return self.logits(hidden), cache


def full_forward(model: Llama, tokens: jax.Array, pad_lengths: jax.Array | None = None):
  """Logits [B, T, vocab] of left-padded sequences tokens [B, T] without a cache.

  pad_lengths [B] (default zeros) counts the padding tokens at the start of each row; positions
  start at 0 after the padding. Logits at padding positions are meaningless.
  """
  batch, length = tokens.shape
  if pad_lengths is None:
    pad_lengths = jnp.zeros((batch,), jnp.int32)
  slots = jnp.arange(length, dtype=jnp.int32)
  positions = jnp.maximum(slots[None, :] - pad_lengths[:, None], 0)
  logits, _ = model(tokens, positions, attention_mask(slots, length, pad_lengths))
  return logits


# ------------------------------------------------------------------------------------------------
# Sampling
# ------------------------------------------------------------------------------------------------


@flax.struct.dataclass
class Generation:
  """Sampled continuations; row b * n + i is sample i of prompt b."""

  tokens: jax.Array  # [B * n, max_new_tokens] int32, pad_id after the end of each row
  mask: jax.Array  # [B * n, max_new_tokens] bool, True up to and including the first EOS
  logprobs: jax.Array  # [B * n, max_new_tokens] float32, log p(token | prefix) at temperature 1
  lengths: jax.Array  # [B * n] int32, number of True entries of mask


def sample_tokens(
  key: jax.Array,
  logits: jax.Array,
  temperature: jax.Array,
  top_p: jax.Array,
  *,
  greedy: bool,
  use_top_p: bool,
  top_k: int,
) -> jax.Array:
  """Draws one token per row from logits [B, V] float32: [B] int32.

  greedy takes the argmax. Otherwise the logits are divided by temperature, cut to the top_k
  (0: all) and then to the smallest set whose probability reaches top_p (if use_top_p).
  """
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k:
    kth_largest = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
  if use_top_p:
    descending = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(descending, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # The most likely token always stays (mass_before = 0 < top_p).
    cutoff = jnp.min(jnp.where(mass_before < top_p, descending, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def prompt_bucket(length: int) -> int:
  """Padded prompt length: the next power of two, at least 16, so few shapes get compiled."""
  return max(_MIN_PROMPT_BUCKET, 1 << max(length - 1, 0).bit_length())


def _generate_impl(
  graphdef,
  state,
  prompts,
  pad_lengths,
  key,
  temperature,
  top_p,
  eos_ids,
  pad_id,
  *,
  n,
  max_new_tokens,
  greedy,
  use_top_p,
  top_k,
  cache_dtype,
):
  """Jitted body of `generate`; prompts [B, P] left-padded, pad_lengths [B]."""
  model = nnx.merge(graphdef, state)
  batch, prompt_len = prompts.shape
  rows = batch * n
  cache = model.init_cache(batch, prompt_len + max_new_tokens, cache_dtype)

  # Prefill every prompt once, then copy its cache and last logits for the n samples.
  slots = jnp.arange(prompt_len, dtype=jnp.int32)
  positions = jnp.maximum(slots[None, :] - pad_lengths[:, None], 0)
  mask = attention_mask(slots, cache.size, pad_lengths)
  hidden, cache = model.hidden_states(prompts, positions, mask, cache, jnp.int32(0))
  logits = model.logits(hidden[:, -1])
  repeat = lambda x: jnp.repeat(x, n, axis=0, total_repeat_length=rows)
  cache, logits, pad_lengths = jax.tree.map(repeat, (cache, logits, pad_lengths))

  def choose(step, logits, done):
    """Samples token `step` of every row; rows already done emit pad_id."""
    token = sample_tokens(
      jax.random.fold_in(key, step),
      logits,
      temperature,
      top_p,
      greedy=greedy,
      use_top_p=use_top_p,
      top_k=top_k,
    )
    logprob = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], axis=-1)[:, 0]
    token = jnp.where(done, pad_id, token)
    logprob = jnp.where(done, 0.0, logprob)
    return token, logprob, done | jnp.isin(token, eos_ids)

  def record(outputs, step, token, logprob):
    tokens, logprobs = outputs
    start = (jnp.int32(0), jnp.asarray(step, jnp.int32))
    tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], start)
    logprobs = jax.lax.dynamic_update_slice(logprobs, logprob[:, None], start)
    return tokens, logprobs

  outputs = (
    jnp.full((rows, max_new_tokens), pad_id, jnp.int32),
    jnp.zeros((rows, max_new_tokens), jnp.float32),
  )
  not_done = jnp.zeros((rows,), bool)
  token, logprob, done = choose(jnp.int32(0), logits, not_done)
  lengths = jnp.ones((rows,), jnp.int32)
  outputs = record(outputs, 0, token, logprob)

  def keep_going(carry):
    step, _, _, done, _, _ = carry
    return (step < max_new_tokens) & ~jnp.all(done)

  def decode_step(carry):
    step, token, cache, done, lengths, outputs = carry
    slot = prompt_len + step - 1  # cache slot of the previous token
    positions = (slot - pad_lengths)[:, None]
    mask = attention_mask(slot[None], cache.size, pad_lengths)
    logits, cache = model(token[:, None], positions, mask, cache, slot)
    lengths = lengths + (~done).astype(jnp.int32)
    token, logprob, done = choose(step, logits[:, 0], done)
    return step + 1, token, cache, done, lengths, record(outputs, step, token, logprob)

  carry = (jnp.int32(1), token, cache, done, lengths, outputs)
  _, _, _, _, lengths, (tokens, logprobs) = jax.lax.while_loop(keep_going, decode_step, carry)
  mask = jnp.arange(max_new_tokens, dtype=jnp.int32)[None, :] < lengths[:, None]
  return Generation(tokens=tokens, mask=mask, logprobs=logprobs, lengths=lengths)


_generate_jit = jax.jit(
  _generate_impl,
  static_argnames=(
    "graphdef",
    "n",
    "max_new_tokens",
    "greedy",
    "use_top_p",
    "top_k",
    "cache_dtype",
  ),
)


def generate(
  model_or_state: Llama | tuple[nnx.GraphDef, nnx.State],
  prompt_token_ids: Sequence[Sequence[int]],
  *,
  key: jax.Array,
  max_new_tokens: int,
  temperature: float = 1.0,
  top_p: float = 1.0,
  top_k: int = 0,
  n: int = 1,
  eos_ids: Sequence[int] = (),
  pad_id: int = 0,
  cache_dtype: str | None = None,
) -> Generation:
  """Samples n continuations of each prompt; returns a `Generation` with B * n rows.

  model_or_state: a `Llama` or its `nnx.split` (graphdef, state); pass the split form in loops
    so the model is not split on every call.
  prompt_token_ids: B lists of token ids (lengths may differ; each at least 1).
  key: typed PRNG key; step t uses fold_in(key, t), so the same key gives the same tokens.
  temperature: 0 means greedy decoding; otherwise logits are divided by it before sampling.
  top_p, top_k: nucleus and top-k truncation of the tempered distribution (1.0 / 0 disable).
  eos_ids: tokens that end a row; the EOS token is included in mask, lengths and logprobs.
  cache_dtype: "float32" or "bfloat16" (default: the model dtype).
  The returned logprobs are those of the sampled tokens under the untempered, untruncated model
  (log_softmax of the raw logits), the quantity RL ratios and likelihood-based UQ scores need.
  """
  if isinstance(model_or_state, Llama):
    graphdef, state = nnx.split(model_or_state)
    config = model_or_state.config
  else:
    graphdef, state = model_or_state
    config = nnx.merge(graphdef, state).config
  if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
    raise ValueError(f"generate: key must be a typed key from jax.random.key, got {key!r}")
  prompts = [list(p) for p in prompt_token_ids]
  if not prompts:
    raise ValueError("generate: prompt_token_ids is empty")
  for i, prompt in enumerate(prompts):
    if not prompt:
      raise ValueError(f"generate: prompt_token_ids[{i}] is empty")
    if min(prompt) < 0 or max(prompt) >= config.vocab_size:
      raise ValueError(
        f"generate: prompt_token_ids[{i}] has ids outside [0, {config.vocab_size}): "
        f"min {min(prompt)}, max {max(prompt)}"
      )
  if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
    raise ValueError(f"generate: max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
  if not isinstance(n, int) or n < 1:
    raise ValueError(f"generate: n must be an int >= 1, got {n!r}")
  if not temperature >= 0:
    raise ValueError(f"generate: temperature must be >= 0, got {temperature!r}")
  if not 0 < top_p <= 1:
    raise ValueError(f"generate: top_p must be in (0, 1], got {top_p!r}")
  if not isinstance(top_k, int) or not 0 <= top_k <= config.vocab_size:
    raise ValueError(f"generate: top_k must be an int in [0, vocab_size], got {top_k!r}")
  if any(not 0 <= e < config.vocab_size for e in eos_ids):
    raise ValueError(f"generate: eos_ids must lie in [0, {config.vocab_size}), got {eos_ids!r}")
  if cache_dtype is not None and cache_dtype not in _DTYPES:
    raise ValueError(f"generate: cache_dtype must be one of {sorted(_DTYPES)}, got {cache_dtype!r}")
  longest = max(len(p) for p in prompts)
  if longest + max_new_tokens > config.max_seq_len:
    raise ValueError(
      f"generate: longest prompt ({longest}) + max_new_tokens ({max_new_tokens}) exceeds "
      f"max_seq_len={config.max_seq_len}"
    )

  prompt_len = prompt_bucket(longest)
  padded = np.full((len(prompts), prompt_len), pad_id, np.int32)
  for row, prompt in zip(padded, prompts, strict=True):
    row[prompt_len - len(prompt) :] = prompt
  pad_lengths = np.array([prompt_len - len(p) for p in prompts], np.int32)
  # -1 never matches a token, so an empty eos_ids list still has a valid (non-empty) shape.
  eos = np.array(list(eos_ids) or [-1], np.int32)
  greedy = temperature == 0
  return _generate_jit(
    graphdef,
    state,
    jnp.asarray(padded),
    jnp.asarray(pad_lengths),
    key,
    jnp.float32(temperature if not greedy else 1.0),
    jnp.float32(top_p),
    jnp.asarray(eos),
    jnp.int32(pad_id),
    n=n,
    max_new_tokens=max_new_tokens,
    greedy=greedy,
    use_top_p=top_p < 1 and not greedy,
    top_k=top_k,
    cache_dtype=_DTYPES[cache_dtype] if cache_dtype else None,
  )
