"""The `uq` suite of launch/benchmark.py: Inv-Entropy scoring, encoder and decoder throughput.

(1) Scoring Q questions x m inputs x r answers x B bootstrap draws (default 200 x 10 x 5 x 30,
    384-d embeddings like MiniLM's): `inv_entropy.score_dataset` (one jitted call, vmapped over
    questions and draws) vs `inv_entropy_reference.score_dataset` (a numpy loop over questions
    and draws), from the same embeddings; compile time apart. With more than one device, also
    with the questions split over all of them.
(2) MiniLM sentences per second at batch 1 and 64 (lib/models/bert.Encoder).
(3) Decoder tokens per second at batch 1 and 64 with SmolLM2-135M (lib/models), when the
    weights are installed.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import logging

from jaxsys.algorithms.uq import inv_entropy, inv_entropy_reference
from jaxsys.lib import sharding, stopwatch


def scoring(q=200, m=10, r=5, d=384, num_bootstrap=30, seed=0):
  """Jitted vs numpy Inv-Entropy on random unit embeddings; returns a dict of timings."""
  rng = np.random.default_rng(seed)
  emb_x = rng.normal(size=(q, m, d)).astype(np.float32)
  emb_y = rng.normal(size=(q, m, r, d)).astype(np.float32)
  key = jax.random.key(seed)
  run = lambda: inv_entropy.score_dataset(key, emb_x, emb_y, num_bootstrap=num_bootstrap)  # noqa: E731
  _, first = stopwatch.timed(run)
  scores, wall = stopwatch.timed(run, repeats=3)
  # The same call on embeddings already on the device (as the JAX encoder returns them): no
  # host-to-device copy, and the value checks read device memory.
  on_device = jax.device_put((emb_x, emb_y))
  _, device_wall = stopwatch.timed(
    lambda: inv_entropy.score_dataset(key, *on_device, num_bootstrap=num_bootstrap), repeats=3
  )
  ref, ref_wall = stopwatch.timed(
    lambda: inv_entropy_reference.score_dataset(seed, emb_x, emb_y, num_bootstrap)
  )
  # Different random draws: the means agree to the bootstrap noise, not bit for bit.
  gap = float(np.max(np.abs(np.asarray(scores.mean.inv_entropy) - ref["mean"]["inv_entropy"])))
  sharded = {}
  if jax.device_count() > 1:  # questions split over the host's devices (one per core)
    mesh = sharding.make_mesh()
    split = lambda: inv_entropy.score_dataset(  # noqa: E731
      key, emb_x, emb_y, num_bootstrap=num_bootstrap, mesh=mesh
    )
    stopwatch.timed(split)
    _, sharded_wall = stopwatch.timed(split, repeats=3)
    sharded = {
      "devices": jax.device_count(),
      "jit_wall_s": sharded_wall,
      "speedup": ref_wall / sharded_wall,
    }
  return {
    "sharded": sharded,
    "shape": {"questions": q, "inputs": m, "answers": r, "dim": d, "bootstrap": num_bootstrap},
    "jit_wall_s": wall,
    "jit_device_inputs_wall_s": device_wall,
    "speedup_device_inputs": ref_wall / device_wall,
    "jit_compile_s": max(first - wall, 0.0),
    "numpy_loop_wall_s": ref_wall,
    "speedup": ref_wall / wall,
    "max_abs_gap_inv_entropy": gap,
  }


def encoder_throughput(batch_sizes=(1, 64), n=256):
  from jaxsys.lib.models import bert

  try:
    encoder = bert.Encoder.load()
  except ModuleNotFoundError as e:
    logging.warning("encoder skipped: %s", e)
    return {"skipped": str(e)}
  words = "the model answered every question about rivers mountains and cities quickly".split()
  rng = np.random.default_rng(0)
  texts = [" ".join(rng.choice(words, size=int(rng.integers(6, 16)))) for _ in range(n)]
  out = {}
  for bs in batch_sizes:
    count = min(n, 16 * bs)
    run = lambda bs=bs, count=count: encoder.encode(texts[:count], batch_size=bs)  # noqa: E731
    stopwatch.timed(run)  # compile every length bucket these texts use
    _, wall = stopwatch.timed(run, repeats=2)
    out[f"batch_{bs}"] = {"sentences": count, "wall_s": wall, "sentences_per_s": count / wall}
  return out


def decoder_throughput(batch_sizes=(1, 64), new_tokens=(8, 40)):
  """SmolLM2-135M decode tokens/s: the time difference of two generation lengths per token, so
  prompt processing and compile are left out."""
  from jaxsys.lib.models import gguf_loader, llama

  try:
    model, tok = gguf_loader.load_smollm2()
  except ImportError as e:
    logging.warning("decoder skipped: %s", e)
    return {"skipped": str(e)}
  prompt = tok.encode_chat([{"role": "user", "content": "Tell me about the history of Rome."}])
  out = {}
  for bs in batch_sizes:
    walls = []
    for steps in new_tokens:
      run = lambda steps=steps, bs=bs: (
        llama.generate(  # noqa: E731
          model, [prompt] * bs, key=jax.random.key(0), max_new_tokens=steps, temperature=1.0
        ).tokens
      )
      stopwatch.timed(run)  # compile this shape
      walls.append(stopwatch.timed(run, repeats=2)[1])
    per_step = (walls[1] - walls[0]) / (new_tokens[1] - new_tokens[0])
    out[f"batch_{bs}"] = {"s_per_step": per_step, "tokens_per_s": bs / per_step}
  return out


def run(quick: bool) -> dict:
  shape = dict(q=40, num_bootstrap=10) if quick else {}
  return {
    "scoring": scoring(**shape),
    "encoder": encoder_throughput(),
    "decoder": decoder_throughput(),
  }


def summary(result: dict) -> list[str]:
  s = result["scoring"]
  lines = [
    f"Inv-Entropy {s['shape']}: jit {s['jit_wall_s'] * 1e3:.1f} ms (+{s['jit_compile_s']:.1f} s "
    f"compile) vs numpy loop {s['numpy_loop_wall_s']:.2f} s: {s['speedup']:.0f}x; "
    f"embeddings already on the device: {s['jit_device_inputs_wall_s'] * 1e3:.1f} ms, "
    f"{s['speedup_device_inputs']:.0f}x"
  ]
  if s["sharded"]:
    sh = s["sharded"]
    lines.append(
      f"  sharded over {sh['devices']} CPU devices: {sh['jit_wall_s'] * 1e3:.1f} ms "
      f"({sh['speedup']:.0f}x the one-core numpy loop)"
    )
  for name in ("encoder", "decoder"):
    for batch, row in result.get(name, {}).items():
      if isinstance(row, dict):
        unit = "sentences_per_s" if name == "encoder" else "tokens_per_s"
        lines.append(f"{name} {batch}: {row[unit]:.0f} {unit.replace('_per_s', '')}/s")
  return lines
