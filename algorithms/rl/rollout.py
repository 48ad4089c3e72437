"""Rollouts for GRPO: G sampled responses per prompt, rewarded, packed into fixed-shape groups.

  sampler = Sampler(tokenizer, group_size=8, max_new_tokens=8, chunk_prompts=8)
  groups = sampler.rollout((graphdef, params), prompt_ids, pool, key)   # Groups, host numpy
  batch = pack(groups_list, num_groups=32, prompt_len=sampler.prompt_len)  # RolloutBatch

Sampling runs `lib.models.llama.generate` (KV cache, `lax.while_loop` decode with early exit)
on fixed chunks of `chunk_prompts` prompts, so one rollout of any size compiles once; a short
last chunk is filled with copies of its first prompt whose outputs are dropped and never
counted as rollouts (spec section 4, quirk 5 [R]). Generation stops at any of the tokenizer's
EOS ids. Each response is decoded and scored by the pool's reward (`pool.reward`, else binary
exact match; a reward given to the Sampler wins); the groups stay on the host until `pack`
lays them out for the training step: every prompt left-padded to `prompt_len`, followed by its
response, so a full forward pass sees the same positions as the sampler did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.struct
import jax
import numpy as np

from jaxsys.algorithms.rl import tasks
from jaxsys.lib.models import llama


class Groups(NamedTuple):
  """Rolled-out groups on the host; P prompts x G responses."""

  prompt_ids: np.ndarray  # [P] int32 pool index of each prompt
  prompts: list[list[int]]  # [P] prompt token ids (unpadded)
  responses: np.ndarray  # [P, G, T] int32 response tokens, pad after the end (EOS included)
  response_mask: np.ndarray  # [P, G, T] bool True on response tokens (EOS included)
  rewards: np.ndarray  # [P, G] float32

  def take(self, rows: np.ndarray | slice) -> Groups:
    rows_list = range(len(self.prompt_ids))[rows] if isinstance(rows, slice) else rows
    return Groups(
      self.prompt_ids[rows],
      [self.prompts[int(i)] for i in rows_list],
      self.responses[rows],
      self.response_mask[rows],
      self.rewards[rows],
    )

  def __len__(self) -> int:
    return len(self.prompt_ids)


def concat(groups: Sequence[Groups], group_size: int, max_new_tokens: int) -> Groups:
  """One Groups from several (an empty list gives zero groups of the right trailing shapes)."""
  if not groups:
    return Groups(
      np.zeros((0,), np.int32),
      [],
      np.zeros((0, group_size, max_new_tokens), np.int32),
      np.zeros((0, group_size, max_new_tokens), bool),
      np.zeros((0, group_size), np.float32),
    )
  return Groups(
    np.concatenate([g.prompt_ids for g in groups]),
    [p for g in groups for p in g.prompts],
    np.concatenate([g.responses for g in groups]),
    np.concatenate([g.response_mask for g in groups]),
    np.concatenate([g.rewards for g in groups]),
  )


@flax.struct.dataclass
class RolloutBatch:
  """The training step's input: B groups of G rows, fixed shapes, padding groups masked.

  Row b * G + i is response i of group b; L = prompt_len + max_new_tokens.
  """

  tokens: jax.Array  # [B * G, L] int32 left-padded prompt, then the response
  pad_lengths: jax.Array  # [B * G] int32 left padding of each row's prompt
  response_mask: jax.Array  # [B * G, L - 1] bool: target t + 1 is a response token (loss mask)
  rewards: jax.Array  # [B, G] float32 (0 in padding groups)
  group_mask: jax.Array  # [B] bool False for padding groups


def pack(groups: Groups, num_groups: int, prompt_len: int, pad_id: int) -> RolloutBatch:
  """The first `num_groups` groups as a RolloutBatch; fewer groups are padded and masked."""
  real = min(len(groups), num_groups)
  g, t = groups.responses.shape[1], groups.responses.shape[2]
  length = prompt_len + t
  tokens = np.full((num_groups, g, length), pad_id, np.int32)
  pad_lengths = np.zeros((num_groups, g), np.int32)
  target_mask = np.zeros((num_groups, g, length - 1), bool)
  rewards = np.zeros((num_groups, g), np.float32)
  for b in range(real):
    prompt = groups.prompts[b]
    if len(prompt) > prompt_len:
      raise ValueError(f"prompt of {len(prompt)} tokens exceeds prompt_len={prompt_len}")
    tokens[b, :, prompt_len - len(prompt) : prompt_len] = prompt
    tokens[b, :, prompt_len:] = groups.responses[b]
    pad_lengths[b] = prompt_len - len(prompt)
    # logits at position s predict token s + 1: response token k sits at prompt_len + k
    target_mask[b, :, prompt_len - 1 :] = groups.response_mask[b]
    rewards[b] = groups.rewards[b]
  return RolloutBatch(
    tokens=tokens.reshape(num_groups * g, length),
    pad_lengths=pad_lengths.reshape(-1),
    response_mask=target_mask.reshape(num_groups * g, length - 1),
    rewards=rewards,
    group_mask=np.arange(num_groups) < real,
  )


class Sampler:
  """Rolls out prompts of a pool with a Llama policy in fixed-size chunks.

  A pool has `prompts` [N] and `answers` [N] (`algorithms.rl.tasks.Pool`); `reward(text,
  answer) -> float` scores a decoded response.

  Args:
    tokenizer: has encode(prompt) -> ids, decode(ids) -> text, eos_id (or eos_ids, all of which
      end a response), pad_id: `tasks.CharTokenizer` or `tasks.ChatTokenizer`.
    reward: scorer of one response; None (default) uses the pool's own (`pool.reward`), or
      `tasks.reward` (binary exact match) for pools without one.
    group_size: G responses per prompt (GRPO needs >= 2; the loop checks its config).
    max_new_tokens: response budget T.
    chunk_prompts: prompts per `generate` call (rows = chunk_prompts * G).
    temperature, top_p: sampling settings (spec: 1.0 / 1.0).
  """

  def __init__(
    self,
    tokenizer,
    *,
    group_size: int,
    max_new_tokens: int,
    chunk_prompts: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    reward: Callable[[str, Any], float] | None = None,
  ):
    if min(group_size, chunk_prompts, max_new_tokens) < 1:
      raise ValueError(
        f"group_size={group_size}, chunk_prompts={chunk_prompts}, "
        f"max_new_tokens={max_new_tokens}: each must be >= 1"
      )
    self.tokenizer = tokenizer
    self.group_size = group_size
    self.max_new_tokens = max_new_tokens
    self.chunk_prompts = chunk_prompts
    self.temperature = temperature
    self.top_p = top_p
    self.reward = reward
    self.eos_ids = tuple(int(i) for i in getattr(tokenizer, "eos_ids", (tokenizer.eos_id,)))

  def generate(self, policy, prompts: list[list[int]], key, n: int, temperature: float):
    """(tokens [P, n, T], mask [P, n, T]) numpy; every call samples chunk_prompts * G rows."""
    tokens, masks = [], []
    per_call = max(1, self.chunk_prompts * self.group_size // n)
    for start in range(0, len(prompts), per_call):
      chunk = prompts[start : start + per_call]
      real = len(chunk)
      chunk = chunk + [chunk[0]] * (per_call - real)
      out = llama.generate(
        policy,
        chunk,
        key=jax.random.fold_in(key, start),
        max_new_tokens=self.max_new_tokens,
        temperature=temperature,
        top_p=self.top_p,
        n=n,
        eos_ids=self.eos_ids,
        pad_id=self.tokenizer.pad_id,
      )
      shape = (per_call, n, self.max_new_tokens)
      tokens.append(np.asarray(out.tokens).reshape(shape)[:real])
      masks.append(np.asarray(out.mask).reshape(shape)[:real])
    return np.concatenate(tokens), np.concatenate(masks)

  def rollout(self, policy, prompt_ids: np.ndarray, pool, key) -> Groups:
    """G responses to each pool prompt in prompt_ids, with their rewards."""
    prompt_ids = np.asarray(prompt_ids, np.int32)
    prompts = [self.tokenizer.encode(pool.prompts[int(i)]) for i in prompt_ids]
    if not prompts:
      return concat([], self.group_size, self.max_new_tokens)
    tokens, mask = self.generate(policy, prompts, key, self.group_size, self.temperature)
    answers = [pool.answers[int(i)] for i in prompt_ids]
    rewards = self._score(tokens, mask, answers, self.reward_for(pool))
    return Groups(prompt_ids, prompts, tokens, mask, rewards)

  def reward_for(self, pool) -> Callable[[str, Any], float]:
    """The scorer of `pool`'s responses: the Sampler's, else the pool's, else exact match."""
    if self.reward is not None:
      return self.reward
    return getattr(pool, "reward", None) or tasks.reward

  def _score(self, tokens, mask, answers, reward) -> np.ndarray:
    """[P, n] rewards of the decoded responses."""
    rewards = np.zeros(tokens.shape[:2], np.float32)
    for p, answer in enumerate(answers):
      for i in range(tokens.shape[1]):
        text = self.tokenizer.decode(tokens[p, i][mask[p, i]].tolist())
        rewards[p, i] = reward(text, answer)
    return rewards

  def rewards(self, policy, pool, key, *, n: int, temperature: float) -> np.ndarray:
    """[N, n] rewards of n responses to every prompt of `pool` (temperature 0: greedy)."""
    prompts = [self.tokenizer.encode(p) for p in pool.prompts]
    tokens, mask = self.generate(policy, prompts, key, n, temperature)
    return self._score(tokens, mask, pool.answers, self.reward_for(pool))

  def accuracy(self, policy, pool, key, *, greedy: bool, n: int = 1) -> np.ndarray:
    """[N] mean reward per prompt of `pool`: greedy, or n samples at the rollout temperature."""
    temperature = 0.0 if greedy else self.temperature
    return self.rewards(policy, pool, key, n=n, temperature=temperature).mean(axis=1)
