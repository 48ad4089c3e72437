"""Tokenizer wrapper and chat templates for the Llama-family models, without jinja.

`Tokenizer` wraps a `tokenizers.Tokenizer` with the ids generation needs (BOS, EOS, padding) and a
chat template. Chat templates are Jinja programs in checkpoints; rather than depend on a Jinja
engine, `ChatTemplate.from_jinja` recognises the two formats our model families use and renders
them in Python:

- "chatml" (SmolLM2, Qwen2): `<|im_start|>{role}\\n{content}<|im_end|>\\n` per message, and a
  default system message (read from the template) when the conversation has none.
- "llama3": `<|begin_of_text|>` then `<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}
  <|eot_id|>` per message. The Llama 3.1+ default system text (tool and date preamble) is not
  reproduced.

`byte_level_bpe` rebuilds a GPT-2 style byte-level BPE tokenizer from a vocabulary and merge list
(as stored in GGUF metadata).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

_ROLES = ("system", "user", "assistant")
_CHATML_DEFAULT_SYSTEM = re.compile(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """A chat format rendered in Python."""

  style: str  # "chatml" or "llama3"
  default_system: str | None = None  # system message added when the chat has none (chatml)

  def __post_init__(self):
    if self.style not in ("chatml", "llama3"):
      raise ValueError(f"ChatTemplate.style must be 'chatml' or 'llama3', got {self.style!r}")

  @classmethod
  def from_jinja(cls, source: str) -> ChatTemplate:
    """Recognises a checkpoint's Jinja chat template; raises ValueError for unknown formats."""
    if "<|im_start|>" in source and "<|im_end|>" in source:
      match = _CHATML_DEFAULT_SYSTEM.search(source)
      default = None
      if match:
        # The text sits inside a Jinja string literal; undo its escapes.
        default = match.group(1).replace("\\n", "\n").replace("\\'", "'").replace('\\"', '"')
      return cls("chatml", default)
    if "<|start_header_id|>" in source and "<|eot_id|>" in source:
      return cls("llama3")
    raise ValueError(
      f"chat template not recognised (neither ChatML nor Llama 3): {source[:120]!r}..."
    )

  def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True):
    """The prompt text for messages [{"role": ..., "content": ...}, ...]."""
    _check_messages(messages)
    parts = []
    if self.style == "chatml":
      if messages[0]["role"] != "system" and self.default_system is not None:
        parts.append(f"<|im_start|>system\n{self.default_system}<|im_end|>\n")
      for message in messages:
        parts.append(f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n")
      if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    else:
      parts.append("<|begin_of_text|>")
      for message in messages:
        parts.append(
          f"<|start_header_id|>{message['role']}<|end_header_id|>\n\n"
          f"{message['content'].strip()}<|eot_id|>"
        )
      if add_generation_prompt:
        parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)


def _check_messages(messages):
  if not messages:
    raise ValueError("chat messages are empty")
  for i, message in enumerate(messages):
    if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
      raise ValueError(f"messages[{i}] must be a dict with keys role and content, got {message!r}")
    if message["role"] not in _ROLES:
      raise ValueError(f"messages[{i}].role must be one of {_ROLES}, got {message['role']!r}")
    if not isinstance(message["content"], str):
      raise ValueError(f"messages[{i}].content must be a str, got {message['content']!r}")


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """Text <-> token ids, plus the special ids and chat template a model was trained with."""

  backend: tokenizers.Tokenizer  # does the actual encoding
  eos_ids: tuple[int, ...]  # generation stops at any of these
  bos_id: int | None = None  # beginning-of-sequence id, if the model has one
  pad_id: int = 0  # id used to fill padding (never attended)
  chat_template: ChatTemplate | None = None  # None: the model has no chat format

  @property
  def vocab_size(self) -> int:
    return self.backend.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
    """Token ids of text; add_special_tokens applies the tokenizer's post-processor (e.g. BOS)."""
    return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> str:
    if self.chat_template is None:
      raise ValueError("this tokenizer has no chat template")
    return self.chat_template.render(messages, add_generation_prompt)

  def encode_chat(self, messages, add_generation_prompt: bool = True) -> list[int]:
    """Token ids of the rendered chat; the template already holds any BOS, so none is added."""
    text = self.apply_chat_template(messages, add_generation_prompt)
    return self.encode(text, add_special_tokens=False)


def byte_level_bpe(
  tokens: Sequence[str],
  merges: Sequence[str],
  special_ids: Sequence[int] = (),
  *,
  individual_digits: bool = True,
) -> tokenizers.Tokenizer:
  """A GPT-2 style byte-level BPE tokenizer from its vocabulary (index = id) and merges.

  merges: "left right" strings in priority order. special_ids: ids of control tokens
  (e.g. <|im_start|>) that are matched whole and never split. individual_digits splits every
  digit into its own piece before the GPT-2 regex (SmolLM's pre-tokenizer does).
  """
  vocab = {token: i for i, token in enumerate(tokens)}
  if len(vocab) != len(tokens):
    raise ValueError(f"tokens has {len(tokens) - len(vocab)} duplicate entries")
  pairs = []
  for merge in merges:
    left, sep, right = merge.partition(" ")
    if not sep:
      raise ValueError(f"merge {merge!r} is not of the form 'left right'")
    pairs.append((left, right))
  backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if individual_digits:
    digits = pre_tokenizers.Digits(individual_digits=True)
    backend.pre_tokenizer = pre_tokenizers.Sequence([digits, byte_level])
  else:
    backend.pre_tokenizer = byte_level
  backend.decoder = decoders.ByteLevel()
  backend.add_special_tokens(
    [tokenizers.AddedToken(tokens[i], special=True, normalized=False) for i in special_ids]
  )
  return backend


def load_tokenizer_json(
  tokenizer_json: str,
  *,
  eos_ids: Sequence[int] | None = None,
  bos_id: int | None = None,
  pad_id: int | None = None,
  chat_template: str | None = None,
  tokenizer_config: Mapping | None = None,
) -> Tokenizer:
  """A `Tokenizer` from a Hugging Face tokenizer.json path and tokenizer_config.json contents.

  Explicit eos_ids / bos_id / pad_id / chat_template (Jinja source) win over tokenizer_config.
  """
  backend = tokenizers.Tokenizer.from_file(str(tokenizer_json))
  tokenizer_config = dict(tokenizer_config or {})

  def token_id(entry):
    if isinstance(entry, Mapping):  # {"content": "<|im_end|>", ...}
      entry = entry.get("content")
    return None if entry is None else backend.token_to_id(entry)

  if eos_ids is None:
    eos = token_id(tokenizer_config.get("eos_token"))
    eos_ids = () if eos is None else (eos,)
  if bos_id is None:
    bos_id = token_id(tokenizer_config.get("bos_token"))
  if pad_id is None:
    pad_id = token_id(tokenizer_config.get("pad_token"))
    pad_id = pad_id if pad_id is not None else (eos_ids[0] if eos_ids else 0)
  if chat_template is None:
    chat_template = tokenizer_config.get("chat_template")
    if isinstance(chat_template, list):  # [{"name": "default", "template": ...}, ...]
      named = {entry["name"]: entry["template"] for entry in chat_template}
      chat_template = named.get("default")
  template = ChatTemplate.from_jinja(chat_template) if chat_template else None
  return Tokenizer(
    backend=backend,
    eos_ids=tuple(int(e) for e in eos_ids),
    bos_id=bos_id,
    pad_id=int(pad_id),
    chat_template=template,
  )
