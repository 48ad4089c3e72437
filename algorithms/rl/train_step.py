"""The GRPO update: one jitted step from a RolloutBatch, data-parallel or fsdp-sharded.

  tx = make_optimizer(lr=1e-4)
  state = init_state(params, tx)                       # TrainState(step, params, opt_state)
  step_fn = make_train_step(graphdef, tx, LossConfig(), mesh=mesh, fsdp=False)
  state, metrics = step_fn(state, batch)                # state is donated

Advantages come from the batch's rewards by the registered estimator (`ADVANTAGES`), are
broadcast over each response's tokens and enter the clipped surrogate of `losses.policy_loss`.
One PPO epoch with one mini-batch per rollout batch (the spec's laptop and GPU columns), so the
rollout policy is the current one: old log-probs are `stop_gradient` of the new ones and the
ratio is 1 in value (its gradient is the policy gradient) [R]. Padding groups (group_mask
False) have zero advantage and zero loss mask, and a batch with no real group leaves the
parameters and the optimizer state unchanged (spec section 4, quirk 4).

Sharding (`mesh` with one axis): the batch's leading axis is split over it; parameters and
optimizer state are replicated (`fsdp=False`, data parallel) or split on their largest
divisible dimension (`fsdp=True`, `lib.sharding.fsdp_shardings`). The compiler inserts the
collectives; results equal the single-device step to float rounding.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxsys.algorithms.rl import advantages as _advantages  # noqa: F401  (fills ADVANTAGES)
from jaxsys.algorithms.rl import losses
from jaxsys.algorithms.rl.rollout import RolloutBatch
from jaxsys.lib import sharding
from jaxsys.lib.models import llama
from jaxsys.lib.registry import ADVANTAGES


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Loss settings (spec section 1.2; laptop column of 3.5). Hashable: a static jit argument."""

  advantage: str = "grpo"  # ADVANTAGES name: "grpo", "drgrpo", "rloo"
  eps_low: float = 0.2
  eps_high: float = 0.28  # DAPO clip-higher
  dual_clip: float | None = 3.0
  aggregation: str = "token-mean"
  temperature: float = 1.0  # rollout temperature: log-probs use logits / temperature
  entropy_coef: float = 0.0
  micro_batches: int = 1  # gradient accumulation over this many row chunks (exact)

  def __post_init__(self):
    if self.advantage not in ADVANTAGES:
      raise ValueError(f"advantage={self.advantage!r}; known: {ADVANTAGES.names()}")
    if self.aggregation not in losses.AGGREGATIONS:
      raise ValueError(f"aggregation={self.aggregation!r}; known: {list(losses.AGGREGATIONS)}")
    if self.temperature <= 0:
      raise ValueError(f"temperature={self.temperature}: must be > 0 for training")
    if self.micro_batches < 1:
      raise ValueError(f"micro_batches={self.micro_batches}: must be >= 1")


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # [] int32 optimizer updates applied
  params: nnx.State  # the policy's parameters
  opt_state: optax.OptState


def make_optimizer(lr: float, *, clip_norm: float = 1.0, weight_decay: float = 0.0):
  """Adam(W) at a constant rate after global-norm clipping (spec 3.5)."""
  opt = optax.adamw(lr, weight_decay=weight_decay) if weight_decay else optax.adam(lr)
  return optax.chain(optax.clip_by_global_norm(clip_norm), opt)


def init_state(params: nnx.State, tx) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def _micro_batches(x: jax.Array, count: int) -> jax.Array:
  """[R, ...] -> [count, R / count, ...], micro-batch j = rows j, j + count, ... (strided, so
  each micro-batch spreads over the devices that hold a row-sharded batch)."""
  rows = x.shape[0]
  return jnp.swapaxes(x.reshape(rows // count, count, *x.shape[1:]), 0, 1)


# token means of a micro-batch are combined weighted by its tokens; these add up as they are
_SUMMED = ("loss/pg", "loss/entropy", "loss/kl")


def _train_step(graphdef, tx, config: LossConfig, state: TrainState, batch: RolloutBatch):
  num_groups, group_size = batch.rewards.shape
  rows = num_groups * group_size
  if rows % config.micro_batches:
    raise ValueError(
      f"{rows} rows ({num_groups} groups x {group_size}) do not split into "
      f"micro_batches={config.micro_batches}"
    )
  adv = ADVANTAGES.get(config.advantage)(batch.rewards, batch.group_mask)  # [B, G]
  adv = adv.reshape(rows, 1).astype(jnp.float32)
  real_rows = jnp.repeat(batch.group_mask, group_size, total_repeat_length=rows)
  mask = batch.response_mask & real_rows[:, None]
  # the whole batch's denominator, so micro-batch losses and gradients add up exactly
  _, denominator = losses.aggregate(jnp.zeros(mask.shape, jnp.float32), mask, config.aggregation)

  def loss_fn(params, tokens, pad_lengths, adv, mask):
    model = nnx.merge(graphdef, params)
    logits = llama.full_forward(model, tokens, pad_lengths)[:, :-1]
    logits = logits.astype(jnp.float32) / config.temperature
    logp = losses.token_logprobs(logits, tokens[:, 1:])
    entropy = losses.entropy_from_logits(logits)
    if not config.entropy_coef:
      entropy = jax.lax.stop_gradient(entropy)  # logged only
    return losses.policy_loss(
      logp,
      jax.lax.stop_gradient(logp),
      adv,
      mask,
      eps_low=config.eps_low,
      eps_high=config.eps_high,
      dual_clip=config.dual_clip,
      agg=config.aggregation,
      entropy=entropy,
      entropy_coef=config.entropy_coef,
      denominator=denominator,
    )

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  parts = (batch.tokens, batch.pad_lengths, adv, mask)
  if config.micro_batches == 1:
    (loss, metrics), grads = grad_fn(state.params, *parts)
  else:  # gradient accumulation: one micro-batch's logits in memory at a time
    split = [_micro_batches(x, config.micro_batches) for x in parts]
    tokens_per = jnp.sum(split[3], axis=(1, 2)).astype(jnp.float32)

    def accumulate(total, xs):
      (loss, metrics), grads = grad_fn(state.params, *xs)
      return jax.tree.map(jnp.add, total, grads), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    grads, (losses_mb, metrics_mb) = jax.lax.scan(accumulate, zeros, split)
    loss = jnp.sum(losses_mb)
    weights = tokens_per / jnp.maximum(jnp.sum(tokens_per), 1.0)
    metrics = {
      k: jnp.sum(v) if k in _SUMMED else jnp.max(v) if k == "loss/ratio_max" else weights @ v
      for k, v in metrics_mb.items()
    }
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  empty = ~jnp.any(batch.group_mask)
  keep_old = lambda new, old: jnp.where(empty, old, new)  # noqa: E731
  new_state = TrainState(
    step=state.step + jnp.where(empty, 0, 1).astype(jnp.int32),
    params=jax.tree.map(keep_old, params, state.params),
    opt_state=jax.tree.map(keep_old, opt_state, state.opt_state),
  )
  metrics = {
    **metrics,
    "loss/total": loss,
    "opt/grad_norm": optax.tree.norm(grads),
    "batch/adv_abs_mean": jnp.sum(jnp.abs(adv) * real_rows[:, None])
    / jnp.maximum(jnp.sum(real_rows), 1),
  }
  return new_state, metrics


def state_shardings(state: TrainState, mesh, fsdp: bool):
  """Shardings of a TrainState (or its eval_shape): replicated, or fsdp-split parameters."""
  if fsdp:
    return sharding.fsdp_shardings(state, mesh)
  return jax.tree.map(lambda _: sharding.replicated(mesh), state)


def make_train_step(graphdef, tx, config: LossConfig, *, mesh=None, fsdp: bool = False, state=None):
  """The jitted step `(state, batch) -> (state, metrics)`; the state argument is donated.

  With a mesh, `state` (a TrainState or its `jax.eval_shape`) fixes the state's shardings.
  """
  step = functools.partial(_train_step, graphdef, tx, config)
  if mesh is None:
    return jax.jit(step, donate_argnums=0)
  if state is None:
    raise ValueError("make_train_step(mesh=...) needs `state` (or its eval_shape) for shardings")
  state_sh = state_shardings(state, mesh, fsdp)
  batch_sh = sharding.leading(mesh)
  return jax.jit(
    step,
    in_shardings=(state_sh, batch_sh),
    out_shardings=(state_sh, sharding.replicated(mesh)),
    donate_argnums=0,
  )
