"""The `rl` suite of launch/benchmark.py: rollout tokens/s and GRPO update steps/s.

For each policy (the smoke and laptop character models of algorithms/rl/tasks.py, and
SmolLM2-135M-Instruct when its weights are installed) at batch P prompts x G samples:
(1) rollout: `llama.generate` of G samples per prompt (KV cache, early exit at EOS), tokens per
    second counted over the tokens actually generated; compile apart;
(2) update: `train_step.make_train_step` (forward, backward, Adam) on a RolloutBatch of P x G
    rows of prompt + response tokens, steps per second; compile apart.
No target on CPU (issue #4); the numbers say where the time of one RL step goes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from jaxsys.algorithms.rl import tasks, train_step
from jaxsys.algorithms.rl.rollout import RolloutBatch
from jaxsys.lib import stopwatch
from jaxsys.lib.models import llama


def _batch(rng, prompts, group, prompt_len, new_tokens, vocab, pad_id) -> RolloutBatch:
  rows, length = prompts * group, prompt_len + new_tokens
  tokens = rng.integers(3, vocab, size=(rows, length)).astype(np.int32)
  mask = np.zeros((rows, length - 1), bool)
  mask[:, prompt_len - 1 :] = True
  return RolloutBatch(
    tokens=jnp.asarray(tokens),
    pad_lengths=jnp.zeros((rows,), jnp.int32),
    response_mask=jnp.asarray(mask),
    rewards=jnp.asarray(rng.integers(0, 2, size=(prompts, group)).astype(np.float32)),
    group_mask=jnp.ones((prompts,), bool),
  )


def measure(model, prompt_ids, *, prompts, group, new_tokens, eos_ids, pad_id, repeats=2):
  """Rollout tokens/s and update steps/s of one policy at P x G."""
  graphdef, params = nnx.split(model)
  batch_prompts = [prompt_ids] * prompts
  key = jax.random.key(0)

  def rollout():
    return llama.generate(
      (graphdef, params),
      batch_prompts,
      key=key,
      max_new_tokens=new_tokens,
      temperature=1.0,
      n=group,
      eos_ids=eos_ids,
      pad_id=pad_id,
    ).lengths

  _, first = stopwatch.timed(rollout)
  lengths, wall = stopwatch.timed(rollout, repeats=repeats)
  generated = int(np.sum(lengths))
  tx = train_step.make_optimizer(1e-5)
  state = train_step.init_state(params, tx)
  step = train_step.make_train_step(graphdef, tx, train_step.LossConfig())
  prompt_len = llama.prompt_bucket(len(prompt_ids))
  batch = _batch(
    np.random.default_rng(0), prompts, group, prompt_len, new_tokens, model.config.vocab_size,
    pad_id,
  )  # fmt: skip
  holder = {"state": state}

  def update():
    holder["state"], metrics = step(holder["state"], batch)
    return metrics["loss/total"]

  _, update_first = stopwatch.timed(update)
  _, update_wall = stopwatch.timed(update, repeats=repeats)
  params_count = sum(x.size for x in jax.tree.leaves(params))
  return {
    "parameters": int(params_count),
    "prompts": prompts,
    "group": group,
    "prompt_tokens": len(prompt_ids),
    "new_tokens": new_tokens,
    "rollout_wall_s": wall,
    "rollout_compile_s": max(first - wall, 0.0),
    "rollout_tokens": generated,
    "rollout_tokens_per_s": generated / wall,
    "update_wall_s": update_wall,
    "update_compile_s": max(update_first - update_wall, 0.0),
    "update_tokens": prompts * group * (prompt_len + new_tokens),
    "update_steps_per_s": 1.0 / update_wall,
  }


def run(quick: bool) -> dict:
  tokenizer = tasks.CharTokenizer()
  prompt = tokenizer.encode("37+48=")
  out = {}
  sizes = {"smoke": (8, 8)} if quick else {"smoke": (8, 8), "laptop": (32, 8)}
  for size, (prompts, group) in sizes.items():
    model = llama.Llama(tasks.policy_config(size), rngs=nnx.Rngs(0))
    logging.info("rl bench: %s model", size)
    out[size] = measure(
      model, prompt, prompts=prompts, group=group, new_tokens=8,
      eos_ids=(tokenizer.eos_id,), pad_id=tokenizer.pad_id,
    )  # fmt: skip
  if not quick:
    out["smollm2_135m"] = _smollm2()
  return out


def _smollm2():
  from jaxsys.lib.models import gguf_loader

  try:
    model, tok = gguf_loader.load_smollm2()
  except ImportError as e:
    logging.warning("SmolLM2 skipped: %s", e)
    return {"skipped": str(e)}
  question = "Natalia sold 48 clips in April and half as many in May. How many clips in total?"
  prompt = tok.encode_chat([{"role": "user", "content": question}])
  logging.info("rl bench: SmolLM2-135M, %d prompt tokens", len(prompt))
  # batch 8 x group 8 (issue #4); 64 new tokens keeps one CPU update near a minute
  return measure(
    model, prompt, prompts=8, group=8, new_tokens=64, eos_ids=tuple(tok.eos_ids),
    pad_id=tok.pad_id, repeats=1,
  )  # fmt: skip


def summary(result: dict) -> list[str]:
  lines = []
  for name, r in result.items():
    if "skipped" in r:
      lines.append(f"{name}: skipped ({r['skipped']})")
      continue
    lines.append(
      f"{name} ({r['parameters'] / 1e6:.2f}M params, {r['prompts']} x {r['group']}): rollout "
      f"{r['rollout_tokens_per_s']:.0f} tokens/s, update {r['update_steps_per_s']:.2f} steps/s "
      f"({r['update_wall_s']:.2f} s, {r['update_tokens']} tokens)"
    )
  return lines
