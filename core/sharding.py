"""Meshes and shardings for one or many devices and hosts.

One `Mesh` with two axes over all devices: `data` (pure data parallelism: parameters replicated) and `fsdp`
(fully-sharded data parallelism: batches split over it too, and large parameters split along one dimension
over it, gathered by XLA where a computation needs them). The batch dimension is split over both axes, so the
global batch must be divisible by the device count. The same jitted step runs unchanged on 1 or N devices:
only the shardings given to `jax.jit` change.

Multi-host: call `jax.distributed.initialize()` in every process first; `jax.devices()` then lists every
host's devices, each process feeds its own slice of the global batch (`shard_batch` assembles the global
array from process-local data), and this module needs nothing else.

The FSDP default knows only shapes, so it cannot tell that a stacked MoE expert weight [E, D, F] should be
split over its expert axis (expert parallelism: each device keeps whole experts) rather than over F, its largest
dimension. `state_sharding(..., rules=...)` takes an ordered list of per-leaf rules matched against each leaf's
key path (`jax.tree_util.keystr`); the first match decides, unmatched leaves keep the FSDP default. Optimizer
states such as Adam's `mu`/`nu` mirror the parameter tree, so their key paths end with the parameter's path and a
rule written for a weight (matched with `re.search`) also places its moments: the update then needs no
resharding.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from typing import Any, Callable, Sequence, Union

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
    more = (f" or run on {fsdp} devices or a multiple (on a CPU, to try the layout: "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={fsdp} before the command)") if fsdp > n else ""
    raise config_lib.ConfigError(
        f"config.{prefix}.fsdp = {fsdp} does not divide the {n} devices. Fix: pass "
        f"--config.{prefix}.fsdp=<a divisor of {n}>{more}.")
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


# What a rule matches: a regular expression searched in the leaf's key path, or a predicate of (key path, shape).
LeafMatcher = Union[str, "re.Pattern[str]", Callable[[str, tuple[int, ...]], bool]]
# How a matched leaf is placed: one entry per leading dimension (a mesh axis name, a tuple of axis names, or None
# for a whole dimension); dimensions past the spec stay whole, as in a PartitionSpec.
LeafSpec = Union[P, Sequence[Union[str, tuple[str, ...], None]]]
ShardingRule = tuple[LeafMatcher, LeafSpec]


@dataclasses.dataclass(frozen=True)
class _Rule:
  matcher: LeafMatcher
  spec: tuple[Any, ...]

  @property
  def label(self) -> str:
    m = self.matcher
    return repr(m.pattern) if isinstance(m, re.Pattern) else getattr(m, "__name__", repr(m))

  def matches(self, path: str, shape: tuple[int, ...]) -> bool:
    if isinstance(self.matcher, re.Pattern):
      return self.matcher.search(path) is not None
    return bool(self.matcher(path, shape))


def _compile_rules(rules: Sequence[ShardingRule]) -> list[_Rule]:
  compiled = []
  for i, rule in enumerate(rules):
    if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
      raise TypeError(f"sharding rule #{i} is {rule!r}; expected a pair (path regex or predicate(path, shape), "
                      "PartitionSpec or axis-per-dimension tuple). Fix: write e.g. (r\"\\['experts'\\]\", P('fsdp')).")
    matcher, spec = rule
    if isinstance(matcher, str):
      matcher = re.compile(matcher)
    elif not (isinstance(matcher, re.Pattern) or callable(matcher)):
      raise TypeError(f"sharding rule #{i} matches with {matcher!r}; expected a regex string, a compiled pattern "
                      "or a callable (path: str, shape: tuple) -> bool.")
    if isinstance(spec, str) or not isinstance(spec, (P, tuple, list)):
      raise TypeError(f"sharding rule #{i} ({matcher!r}) places leaves with {spec!r}; expected a PartitionSpec or "
                      "a tuple with one mesh axis (or None) per dimension. Fix: write P('fsdp') or ('fsdp', None).")
    if any(entry is P.UNCONSTRAINED for entry in spec):
      raise ValueError(f"sharding rule #{i} ({matcher!r}) places leaves with {spec!r}: P.UNCONSTRAINED leaves the "
                       "choice to the compiler, which a stored parameter cannot. Fix: None to keep that dimension "
                       "whole, or a mesh axis to split it.")
    compiled.append(_Rule(matcher, tuple(spec)))
  return compiled


def _rule_sharding(mesh: Mesh, rule: _Rule, path: str, shape: tuple[int, ...]) -> NamedSharding:
  """The rule's sharding for one leaf, after checking that the mesh can split the leaf that way."""
  where = f"sharding rule {rule.label} matched {path} (shape {shape})"
  if len(rule.spec) > len(shape):
    raise ValueError(f"{where} but gives {len(rule.spec)} dimension entries {rule.spec} for a rank-{len(shape)} "
                     f"leaf. Fix: give at most {len(shape)} entries, or narrow the rule so it does not match "
                     "this leaf.")
  used: set[str] = set()
  for dim, entry in enumerate(rule.spec):
    if entry is None:
      continue
    axes = (entry,) if isinstance(entry, str) else tuple(entry)
    for axis in axes:
      if axis not in mesh.shape:
        raise ValueError(f"{where} and splits dimension {dim} over mesh axis {axis!r}, which this mesh does not "
                         f"have (axes: {', '.join(mesh.axis_names)}). Fix: name one of those axes in the rule, "
                         "or None to keep the dimension whole.")
      if axis in used:
        raise ValueError(f"{where} and uses mesh axis {axis!r} for two dimensions. Fix: name each axis once.")
      used.add(axis)
    size, named = int(np.prod([mesh.shape[a] for a in axes])), " x ".join(axes)
    if shape[dim] % size:
      flag = f" (e.g. --config.mesh.{axes[0]}=<a divisor of {shape[dim]}>)" if len(axes) == 1 else ""
      raise ValueError(f"{where} and splits dimension {dim} ({shape[dim]}) over {named} = {size} "
                       f"devices, which does not divide {shape[dim]}. Fix: use a mesh whose {named} size "
                       f"divides {shape[dim]}{flag}, or leave dimension {dim} whole (None) in the rule.")
  return NamedSharding(mesh, P(*rule.spec))


def state_sharding(mesh: Mesh, tree: Any, fsdp_min_size: int = 2**18,
                   rules: Sequence[ShardingRule] | None = None) -> Any:
  """A sharding for every leaf of a parameter/optimizer-state pytree (FSDP over the `fsdp` axis).

  rules: `(matcher, spec)` pairs tried in order against each leaf's key path (see the module docstring); the
    first match places the leaf by `spec` whatever its size (`fsdp_min_size` applies to the FSDP default only).
    A rule naming an axis the mesh lacks, or an axis whose size does not divide the dimension, raises a
    ValueError naming the leaf. Without rules the result is exactly the FSDP default.
  """
  compiled = _compile_rules(rules or ())
  used, paths, kept_whole = set(), [], []

  def leaf(key_path, x):
    path, shape = jax.tree_util.keystr(key_path), tuple(np.shape(x))
    paths.append(path)
    for i, rule in enumerate(compiled):
      if rule.matches(path, shape):
        used.add(i)
        return _rule_sharding(mesh, rule, path, shape)
    sharding = _leaf_sharding(mesh, shape, fsdp_min_size)
    big = int(np.prod(shape, dtype=np.int64)) >= fsdp_min_size
    if mesh.shape["fsdp"] > 1 and big and sharding.is_fully_replicated:
      kept_whole.append(f"{path} {shape}")
    return sharding
  out = jax.tree_util.tree_map_with_path(leaf, tree)
  if kept_whole:  # memory the user expected the FSDP default to split
    more = f" and {len(kept_whole) - 3} more" if len(kept_whole) > 3 else ""
    warnings.warn(f"{len(kept_whole)} leaf/leaves of at least fsdp_min_size = {fsdp_min_size} elements stay whole "
                  f"on every device: no dimension divides by fsdp = {mesh.shape['fsdp']} "
                  f"({'; '.join(kept_whole[:3])}{more}). Fix: a mesh.fsdp that divides one of their dimensions, or "
                  "a sharding rule that places them.", stacklevel=2)
  for i, rule in enumerate(compiled):
    if i not in used:
      # Most often a pattern written for plain dicts: NNX state paths end in `.value` (e.g.
      # ".params['gate']['kernel'].value"), so an anchored "...']$" never matches and the leaf silently falls back.
      warnings.warn(f"sharding rule #{i} ({rule.label}) matched no leaf, so it placed nothing; leaf paths look "
                    f"like {paths[0] if paths else '(no leaves)'!r}. Fix the pattern, or drop the rule.",
                    stacklevel=2)
  return out


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Places a process-local numpy batch onto the mesh as one global array per leaf."""
  sharding = batch_sharding(mesh)
  local_devices = mesh.size // jax.process_count()

  def place(x):
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] % local_devices:
      raise ValueError(f"a batch leaf of shape {x.shape} cannot be split over the {local_devices} local devices "
                       "along its first axis. Fix: make the batch size a multiple of the device count, and drop "
                       "the last partial batch (drop_remainder=True).")
    return jax.make_array_from_process_local_data(sharding, x)
  return jax.tree.map(place, batch)


def process_rows(batch: Any, process: int | None = None, processes: int | None = None) -> Any:
  """This process's share of a global batch that every process holds whole: rows [p * n / P, (p + 1) * n / P) of
  each leaf, what `shard_batch` then takes as the process-local part (the global batch is the processes' shares in
  process order). The identity with one process."""
  processes = jax.process_count() if processes is None else processes
  process = jax.process_index() if process is None else process
  if processes == 1:
    return batch

  def take(x):
    x = np.asarray(x)
    if x.shape[0] % processes:
      raise ValueError(f"a batch of {x.shape[0]} rows does not split over {processes} processes. Fix: a batch size "
                       f"that is a multiple of {processes}.")
    local = x.shape[0] // processes
    return x[process * local:(process + 1) * local]
  return jax.tree.map(take, batch)


def to_host(tree: Any) -> Any:
  """The tree's arrays as numpy arrays holding their global values, also where they span devices of other
  processes (gathered from every process, so every process must call this at the same point)."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  from jax.experimental import multihost_utils
  return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True))
                      if isinstance(x, jax.Array) else np.asarray(x), tree)
