"""Meshes and shardings for one or many devices and hosts.

One `Mesh` with two axes over all devices: `data` (pure data parallelism: parameters replicated) and `fsdp`
(fully-sharded data parallelism: batches split over it too, and large parameters split along one dimension
over it, gathered by XLA where a computation needs them). The batch dimension is split over both axes, so the
global batch must be divisible by the device count. The same jitted step runs unchanged on 1 or N devices:
only the shardings given to `jax.jit` change.

Multi-host: call `jax.distributed.initialize()` in every process first; `jax.devices()` then lists every
host's devices, each process feeds its own slice of the global batch (`shard_batch` assembles the global
array from process-local data), and this module needs nothing else.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from core import config as config_lib

DATA_AXES = ("data", "fsdp")


def mesh_config(**overrides) -> ml_collections.ConfigDict:
  """The `mesh` config section. data=-1 takes every device not used by fsdp.

  fsdp_min_size: parameters with fewer elements stay replicated (splitting them costs more in communication
  than it saves in memory).
  """
  return config_lib.section("mesh", dict(data=-1, fsdp=1, fsdp_min_size=2**18), overrides)


def validate_mesh_config(config: ml_collections.ConfigDict, prefix: str = "mesh") -> None:
  n = jax.device_count()
  fsdp = config_lib.check_positive(config, f"{prefix}.fsdp")
  data = config_lib.get_value(config, f"{prefix}.data")
  if n % fsdp:
    raise config_lib.ConfigError(
        f"config.{prefix}.fsdp = {fsdp} does not divide the {n} devices. Fix: pass "
        f"--config.{prefix}.fsdp=<a divisor of {n}>.")
  if data != -1 and data * fsdp != n:
    raise config_lib.ConfigError(
        f"config.{prefix}.data * config.{prefix}.fsdp = {data} * {fsdp} != {n} devices. Fix: pass "
        f"--config.{prefix}.data=-1 (use every device) or data={n // fsdp}.")


def make_mesh(data: int = -1, fsdp: int = 1, devices: list[jax.Device] | None = None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  if data == -1:
    data = len(devices) // fsdp
  if data * fsdp != len(devices):
    raise ValueError(f"mesh data={data} x fsdp={fsdp} does not cover the {len(devices)} devices")
  # Auto axes: shardings propagate through the computation as in classic pjit (jax 0.10 defaults to
  # explicit axes otherwise).
  return jax.make_mesh((data, fsdp), DATA_AXES, axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def mesh_from_config(mesh: ml_collections.ConfigDict) -> Mesh:
  return make_mesh(mesh.data, mesh.fsdp)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device."""
  return NamedSharding(mesh, P(DATA_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _leaf_sharding(mesh: Mesh, shape: tuple[int, ...], min_size: int) -> NamedSharding:
  fsdp = mesh.shape["fsdp"]
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return replicated(mesh)
  # Split the largest dimension that divides evenly: the fewest, biggest shards.
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % fsdp == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return NamedSharding(mesh, P(*spec))
  return replicated(mesh)


def state_sharding(mesh: Mesh, tree: Any, fsdp_min_size: int = 2**18) -> Any:
  """A sharding for every leaf of a parameter/optimizer-state pytree (FSDP over the `fsdp` axis)."""
  return jax.tree.map(lambda x: _leaf_sharding(mesh, np.shape(x), fsdp_min_size), tree)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Places a process-local numpy batch onto the mesh as one global array per leaf."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
