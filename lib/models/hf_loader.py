"""Loads Llama / Qwen2 / SmolLM checkpoints from a local Hugging Face folder, without torch.

A folder holds config.json, one or more *.safetensors files (read with safetensors' numpy
backend; bfloat16 comes through ml_dtypes) and tokenizer.json, optionally tokenizer_config.json
(special tokens, chat template) and generation_config.json (EOS ids).

`model_from_tensors` is also the target of the GGUF loader: it takes tensors under Hugging Face
names and layouts (`model.layers.0.self_attn.q_proj.weight`, [out, in]) and fills an abstract
`Llama`, so no random initialisation runs and every parameter must be present.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file

from jaxsys.lib.models import llama, tokenizer

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
# Buffers some checkpoints save that the model recomputes.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def config_from_hf(hf_config: Mapping, *, dtype: str = "float32") -> llama.LlamaConfig:
  """A `LlamaConfig` from the contents of a Hugging Face config.json."""
  model_type = hf_config.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(
      f"config.json model_type must be one of {SUPPORTED_MODEL_TYPES}, got {model_type!r}"
    )
  activation = hf_config.get("hidden_act", "silu")
  if activation != "silu":
    raise ValueError(f"config.json hidden_act must be 'silu', got {activation!r}")
  if hf_config.get("mlp_bias", False):
    raise ValueError("config.json mlp_bias=true is not supported")
  if hf_config.get("use_sliding_window", False):
    raise ValueError("config.json use_sliding_window=true is not supported")
  return llama.LlamaConfig(
    vocab_size=hf_config["vocab_size"],
    dim=hf_config["hidden_size"],
    n_layers=hf_config["num_hidden_layers"],
    n_heads=hf_config["num_attention_heads"],
    n_kv_heads=hf_config.get("num_key_value_heads") or hf_config["num_attention_heads"],
    hidden_dim=hf_config["intermediate_size"],
    head_dim=hf_config.get("head_dim"),
    rope_theta=float(hf_config.get("rope_theta", 10_000.0)),
    rope_scaling=_rope_scaling(hf_config.get("rope_scaling")),
    norm_eps=float(hf_config.get("rms_norm_eps", 1e-6)),
    # Both HF config classes default to untied embeddings when the field is absent.
    tie_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
    qkv_bias=model_type == "qwen2" or bool(hf_config.get("attention_bias", False)),
    max_seq_len=int(hf_config.get("max_position_embeddings", 2048)),
    dtype=dtype,
  )


def _rope_scaling(entry: Mapping | None) -> llama.RopeScaling | None:
  if not entry:
    return None
  kind = entry.get("rope_type", entry.get("type"))
  if kind == "default":
    return None
  if kind != "llama3":
    raise ValueError(f"config.json rope_scaling type must be 'llama3' or 'default', got {kind!r}")
  return llama.RopeScaling(
    factor=float(entry["factor"]),
    low_freq_factor=float(entry["low_freq_factor"]),
    high_freq_factor=float(entry["high_freq_factor"]),
    original_max_seq_len=int(entry["original_max_position_embeddings"]),
  )


def _hf_name(path: tuple) -> tuple[str, bool]:
  """The checkpoint name of an nnx parameter path, and whether its array is transposed."""
  *module_path, leaf = (str(part) for part in path)
  suffix = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}[leaf]
  prefix = "" if module_path == ["lm_head"] else "model."
  return prefix + ".".join([*module_path, suffix]), leaf == "kernel"


def model_from_tensors(config: llama.LlamaConfig, tensors: Mapping[str, np.ndarray]) -> llama.Llama:
  """A `Llama` whose parameters are the given HF-named tensors ([out, in] linear weights).

  Raises ValueError naming any missing, unexpected or wrongly shaped tensor.
  """
  abstract = nnx.eval_shape(lambda: llama.Llama(config, rngs=nnx.Rngs(0)))
  graphdef, abstract_state = nnx.split(abstract)
  flat_state = nnx.to_flat_state(abstract_state)
  used = set()
  for path, variable in flat_state:
    name, transpose = _hf_name(path)
    if name not in tensors:
      raise ValueError(f"checkpoint is missing tensor {name!r}")
    array = np.asarray(tensors[name])
    array = array.T if transpose else array
    expected = variable.get_value().shape
    if array.shape != expected:
      raise ValueError(f"tensor {name!r} has shape {array.shape}, expected {expected}")
    variable.set_value(jnp.asarray(array, dtype=config.jnp_dtype))
    used.add(name)
  unexpected = {
    name
    for name in tensors
    if name not in used
    and not name.endswith(_IGNORED_SUFFIXES)
    # Tied checkpoints sometimes also save the (identical) output projection.
    and not (config.tie_embeddings and name == "lm_head.weight")
  }
  if unexpected:
    raise ValueError(f"checkpoint has unexpected tensors: {sorted(unexpected)[:8]}")
  return nnx.merge(graphdef, nnx.from_flat_state(flat_state))


def read_safetensors(folder: str | pathlib.Path) -> dict[str, np.ndarray]:
  """All tensors of the *.safetensors files in folder, as numpy arrays."""
  files = sorted(pathlib.Path(folder).glob("*.safetensors"))
  if not files:
    raise ValueError(f"no *.safetensors files in {str(folder)!r}")
  tensors = {}
  for file in files:
    tensors.update(load_file(file))
  return tensors


def _read_json(path: pathlib.Path) -> dict:
  if not path.exists():
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def load_tokenizer(folder: str | pathlib.Path) -> tokenizer.Tokenizer:
  """The tokenizer of a HF folder: tokenizer.json plus special ids and the chat template."""
  folder = pathlib.Path(folder)
  if not (folder / "tokenizer.json").exists():
    raise ValueError(f"no tokenizer.json in {str(folder)!r}")
  config = _read_json(folder / "config.json")
  generation = _read_json(folder / "generation_config.json")
  eos = generation.get("eos_token_id", config.get("eos_token_id"))
  eos_ids = None if eos is None else tuple(eos) if isinstance(eos, list) else (eos,)
  return tokenizer.load_tokenizer_json(
    folder / "tokenizer.json",
    eos_ids=eos_ids,
    bos_id=config.get("bos_token_id"),
    tokenizer_config=_read_json(folder / "tokenizer_config.json"),
  )


def load_hf_folder(
  folder: str | pathlib.Path, *, dtype: str = "float32"
) -> tuple[llama.Llama, tokenizer.Tokenizer]:
  """The model (parameters in dtype) and tokenizer stored in a local Hugging Face folder."""
  folder = pathlib.Path(folder)
  if not (folder / "config.json").exists():
    raise ValueError(f"no config.json in {str(folder)!r}")
  config = config_from_hf(_read_json(folder / "config.json"), dtype=dtype)
  model = model_from_tensors(config, read_safetensors(folder))
  return model, load_tokenizer(folder)
