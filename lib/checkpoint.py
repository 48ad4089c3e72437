"""A small orbax CheckpointManager wrapper: restore-or-init, periodic saves, keep the latest k.

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), save_every=1000, keep=3)
  state, start = ckpt.restore_or_init(lambda: init_state(key))
  for step in range(start, num_steps):
    state = train_step(state, batch)
    ckpt.save(step + 1, state)        # saved when step + 1 is a multiple of save_every
  ckpt.save(num_steps, state, force=True)
  ckpt.close()                        # waits for the asynchronous save to finish

The state is any pytree (flax.struct dataclasses, dicts, typed PRNG keys: orbax 0.12 saves
typed keys as such). It is restored onto the structure, dtypes and shardings of
`jax.eval_shape(init_fn)`, so `init_fn` is traced but not run when a checkpoint exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

_ITEM = "state"


class Checkpointer:
  """Saves and restores one pytree under `directory/<step>/state`.

  Args:
    directory: checkpoint root (created; made absolute, as orbax requires).
    save_every: `save(step, ...)` writes only when `step % save_every == 0` (or `force`).
    keep: how many of the latest checkpoints to keep (None: all).
    async_save: write in a background thread (`wait()` / `close()` join it).
  """

  def __init__(
    self,
    directory: str,
    save_every: int = 1,
    keep: int | None = 3,
    async_save: bool = True,
  ):
    if save_every < 1:
      raise ValueError(f"save_every={save_every!r}: must be >= 1")
    if keep is not None and keep < 1:
      raise ValueError(f"keep={keep!r}: must be >= 1 or None")
    self.directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(
      save_decision_policy=checkpoint_managers.FixedIntervalPolicy(save_every),
      preservation_policy=checkpoint_managers.LatestN(keep),
      enable_async_checkpointing=async_save,
      create=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=(_ITEM,))

  def latest_step(self) -> int | None:
    """The newest saved step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, abstract_state: Any, step: int | None = None) -> Any:
    """Restores `step` (default: the latest) onto the structure of `abstract_state`.

    `abstract_state` is a pytree of arrays or jax.ShapeDtypeStructs (e.g. jax.eval_shape output);
    leaves with a `.sharding` are restored with it.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    abstract_state = jax.tree.map(_abstract, abstract_state)
    restored = self._manager.restore(
      step, args=ocp.args.Composite(**{_ITEM: ocp.args.StandardRestore(abstract_state)})
    )
    return restored[_ITEM]

  def restore_or_init(self, init_fn: Callable[[], Any]) -> tuple[Any, int]:
    """(latest checkpoint, its step) if there is one, else (init_fn(), 0)."""
    step = self.latest_step()
    if step is None:
      return init_fn(), 0
    return self.restore(jax.eval_shape(init_fn), step), step

  def save(self, step: int, state: Any, force: bool = False) -> bool:
    """Saves `state` as `step` if the interval says so (or `force`); returns whether it did.

    A step that is already saved is skipped (returns False), so a final forced save after a
    resume at that step is harmless.
    """
    step = int(step)
    if step in self._manager.all_steps():
      return False
    return self._manager.save(
      step, args=ocp.args.Composite(**{_ITEM: ocp.args.StandardSave(state)}), force=force
    )

  def wait(self) -> None:
    """Blocks until any asynchronous save has finished."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def quiet_orbax_logs() -> None:
  """Hides orbax's INFO lines (a dozen per save) from the absl log; warnings still show."""
  import logging as py_logging

  from absl import logging

  class _Filter(py_logging.Filter):
    def filter(self, record):
      return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname

  handler = logging.get_absl_handler()
  if not any(isinstance(f, _Filter) for f in handler.filters):
    handler.addFilter(_Filter())


def _abstract(x: Any) -> Any:
  """A ShapeDtypeStruct (keeping a sharding) for an array; other leaves unchanged."""
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return x
