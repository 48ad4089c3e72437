"""Meshes and shardings for sweeps: the leading (vmapped) axis of every array split over devices.

  mesh = sharding.make_mesh()                     # 1-D mesh ("config",) over all devices
  lanes, shared = sharding.leading(mesh), sharding.replicated(mesh)
  run = jax.jit(jax.vmap(one_config), in_shardings=(lanes, shared), out_shardings=lanes)
  out = run(sharding.shard_leading(params, mesh), sharding.replicate(table, mesh))

Mesh axes are `AxisType.Auto`: the compiler propagates shardings through the vmapped body. In
jax 0.10.2, `Explicit` axes fail under vmap of a `lax.scan` with a sharded batch axis ("Resource
axis: config ... is not found in mesh: ()"), even inside `jax.set_mesh`, and every sweep here
scans, so Auto is the one that works. No pmap, no pjit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DEFAULT_AXIS = "config"


def make_mesh(
  axis_names: Sequence[str] = (DEFAULT_AXIS,),
  shape: Sequence[int] | None = None,
  *,
  axis_types: Sequence[AxisType] | None = None,
  devices: Sequence[jax.Device] | None = None,
) -> Mesh:
  """A mesh over `devices` (default: all). `shape` defaults to all devices on the first axis.

  Axis types default to Auto for every axis (see the module docstring).
  """
  axis_names = tuple(axis_names)
  devices = list(jax.devices() if devices is None else devices)
  if shape is None:
    shape = (len(devices),) + (1,) * (len(axis_names) - 1)
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(axis_names):
    raise ValueError(f"mesh shape {shape} does not match axis_names {axis_names}")
  if math.prod(shape) != len(devices):
    raise ValueError(f"mesh shape {shape} needs {math.prod(shape)} devices, have {len(devices)}")
  if axis_types is None:
    axis_types = (AxisType.Auto,) * len(axis_names)
  return jax.make_mesh(shape, axis_names, axis_types=tuple(axis_types), devices=devices)


def _axis(mesh: Mesh, axis: str | None) -> str:
  axis = mesh.axis_names[0] if axis is None else axis
  if axis not in mesh.axis_names:
    raise ValueError(f"axis {axis!r} is not in the mesh axes {mesh.axis_names}")
  return axis


def leading(mesh: Mesh, axis: str | None = None) -> NamedSharding:
  """Sharding that splits dimension 0 over mesh `axis` (default: the first) and replicates the
  rest; as an in/out_sharding it applies to every leaf of a pytree argument."""
  return NamedSharding(mesh, P(_axis(mesh, axis)))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that puts a full copy on every device of `mesh`."""
  return NamedSharding(mesh, P())


def pad_leading(tree: Any, multiple: int) -> tuple[Any, int]:
  """Pads dimension 0 of every leaf to a multiple of `multiple` by repeating the last entry.

  Returns (padded tree, original size); slice results with `[:size]`.
  """
  sizes = {np.shape(x)[0] for x in jax.tree.leaves(tree)}
  if len(sizes) != 1:
    raise ValueError(f"leaves disagree on the leading size: {sorted(sizes)}")
  (size,) = sizes
  pad = -size % multiple

  def one(x):
    if pad == 0:
      return x
    tail = jnp.repeat(x[-1:], pad, axis=0)
    return jnp.concatenate([x, tail], axis=0)

  return jax.tree.map(one, tree), size


def shard_leading(tree: Any, mesh: Mesh, axis: str | None = None) -> Any:
  """`jax.device_put`s every leaf with dimension 0 split over mesh `axis`.

  Raises ValueError naming the leaf's path and sizes when a leading size is not divisible by the
  axis size (use `pad_leading` first) or a leaf is a scalar.
  """
  axis = _axis(mesh, axis)
  n = mesh.shape[axis]
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    shape = np.shape(x)
    name = jax.tree_util.keystr(path) or "<root>"
    if not shape:
      raise ValueError(f"shard_leading: leaf {name} is a scalar; it has no leading axis")
    if shape[0] % n:
      raise ValueError(
        f"shard_leading: leaf {name} has leading size {shape[0]}, not divisible by the "
        f"{n} devices of mesh axis {axis!r}; pad it (sharding.pad_leading) or change the sweep"
      )
  return jax.device_put(tree, leading(mesh, axis))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """`jax.device_put`s every leaf as a full copy on every device of `mesh`."""
  return jax.device_put(tree, replicated(mesh))


def fsdp_shardings(tree: Any, mesh: Mesh, axis: str | None = None, min_size: int = 1024) -> Any:
  """Parameter shardings in the fsdp style: each leaf split over mesh `axis` on its largest
  dimension that the axis size divides; leaves smaller than `min_size` elements (norm scales,
  counters) or with no such dimension stay replicated. Works on arrays or ShapeDtypeStructs."""
  axis = _axis(mesh, axis)
  n = mesh.shape[axis]

  def one(x):
    shape = np.shape(x)
    if n == 1 or math.prod(shape) < min_size:
      return NamedSharding(mesh, P())
    dims = sorted((d for d in range(len(shape)) if shape[d] % n == 0), key=lambda d: -shape[d])
    if not dims:
      return NamedSharding(mesh, P())
    spec = [None] * len(shape)
    spec[dims[0]] = axis
    return NamedSharding(mesh, P(*spec))

  return jax.tree.map(one, tree)
