"""Deterministic, sharded, resumable batch iterators over random-access sources, built on grain.

`make_batches` turns any random-access source (a dict of equally long numpy arrays, a
`tfds.data_source`, `EasyVQASplit`, anything with `len` and `[i]`) into an iterator of
dict-of-numpy batches.  The pipeline is a grain `MapDataset` over example *indices*:

    range(N) -> shuffle(seed, reshuffled every epoch) -> this process's shard -> repeat(num_epochs)
             -> batch -> gather the examples -> transform -> iterator (get_state / set_state)

Shuffling indices rather than examples keeps it cheap, and gathering a whole batch at once lets a
dict of arrays be batched with one fancy-indexing per column.  Every process shuffles the same
global order and takes every `shard_count`-th position of it, so in each epoch the processes see
disjoint parts that together cover the data (less up to `shard_count - 1` examples under
`drop_remainder`, which keeps the shards equal).  Epochs are concatenated before batching, so a
batch may straddle two epochs; only the very last batch of a finite run can be partial.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grain
import jax
import numpy as np
from absl import flags

Batch = dict[str, np.ndarray]

# Prefetching does not change results, only memory and overlap: a few batches ahead on two
# threads keeps a training step fed without holding hundreds of batches (grain's default is 500).
DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)


class _GatherColumns:
  """Batch of indices -> dict of arrays, for a dict-of-arrays source (one fancy index per column).

  A class rather than a closure so that `worker_count > 0` can pickle it into grain's workers.
  """

  def __init__(self, columns: Mapping[str, np.ndarray]):
    self.columns = dict(columns)

  def __call__(self, indices: np.ndarray) -> Batch:
    return {key: column[indices] for key, column in self.columns.items()}


class _GatherExamples:
  """Batch of indices -> dict of arrays, for a source of single examples (stacked per key)."""

  def __init__(self, source: Any):
    self.source = source

  def __call__(self, indices: np.ndarray) -> Batch:
    gather = getattr(self.source, "gather", None)
    if gather is not None:
      return gather(indices)
    positions = [int(i) for i in indices]
    if hasattr(self.source, "__getitems__"):
      examples = self.source.__getitems__(positions)
    else:
      examples = [self.source[i] for i in positions]
    return jax.tree.map(lambda *leaves: np.stack(leaves), *examples)


def _columns(source: Mapping[str, Any]) -> dict[str, np.ndarray]:
  if not source:
    raise ValueError("make_batches got an empty dict: it needs at least one array.")
  columns = {key: np.asarray(value) for key, value in source.items()}
  lengths = {key: (len(column) if column.ndim else None) for key, column in columns.items()}
  if len(set(lengths.values())) != 1 or None in lengths.values():
    raise ValueError(f"Every array of a dict source needs the same leading dimension; got {lengths}.")
  return columns


def _shuffle_seed(seed: int) -> int:
  # grain reshuffles epoch e with seed + e, so seeds s and s + 1 would replay each other's epochs
  # one epoch apart; hashing the user's seed first keeps different seeds unrelated.
  return int(np.random.SeedSequence(seed).generate_state(1, np.uint32)[0])


def _ensure_flags_parsed() -> None:
  # grain's worker processes read absl flags and raise UnparsedFlagAccessError when nothing parsed
  # them (tests, notebooks); entrypoints run by absl.app have parsed them already.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_batches(source: Mapping[str, Any] | Any, batch_size: int, *, seed: int, shuffle: bool = True,
                 num_epochs: int | None = None, drop_remainder: bool = True, shard_index: int | None = None,
                 shard_count: int | None = None, transform: Callable[[Batch], Batch] | None = None,
                 worker_count: int = 0, read_options: grain.ReadOptions | None = None) -> grain.DatasetIterator:
  """An iterator of batches (dicts of numpy arrays) over `source`, deterministic given `seed`.

  Args:
    source: a dict of arrays with a common leading dimension N (each example is one row of every
      array), or a random-access source of N examples (`len`, `[i]`, optionally `__getitems__`, or
      `gather(indices) -> batch`), each example a dict of arrays/scalars that is stacked per key.
    batch_size: examples per batch in this process (the global batch is `batch_size * shard_count`).
    seed: integer in [0, 2**32): the same seed gives the same batches, another seed another order.
    shuffle: shuffle the whole data set, with a fresh permutation every epoch; if False, every epoch
      visits this shard in index order.
    num_epochs: passes over the data; None repeats forever.
    drop_remainder: if True, every batch has exactly `batch_size` examples (the last partial batch
      is dropped) and every shard gets N // shard_count examples per epoch (the N % shard_count
      left over change with every epoch's shuffle), so all processes take the same number of steps;
      if False, shards cover all N examples (sizes differ by at most one) and the final batch may
      be smaller, so processes may take different numbers of batches: for work each process does on
      its own, not for a step that all processes run together (which would wait for the missing batch).
    shard_index, shard_count: this process's shard; default `jax.process_index()` and
      `jax.process_count()`.
    transform: applied to every batch (dict of numpy arrays in, dict of numpy arrays out), e.g.
      scaling or augmentation; it must be deterministic for batches to be reproducible.
    worker_count: if > 0, batches are produced in that many grain worker processes
      (`mp_prefetch`); `source` and `transform` must then be picklable.  0 (default) works in the
      calling process.
    read_options: grain's threads and prefetch buffer; default DEFAULT_READ_OPTIONS.

  Returns:
    A grain `DatasetIterator`: `next(it)` gives a batch, each key shaped [batch_size, ...];
    `it.get_state()` returns a small JSON-serialisable dict and `it.set_state(state)` on an
    iterator made with the same arguments continues from that batch on (checkpoint/resume).

  Raises:
    ValueError: on an invalid argument, or when this process would get no batch at all.
  """
  if isinstance(source, Mapping):
    columns = _columns(source)
    num_examples = len(next(iter(columns.values())))
    gather = _GatherColumns(columns)
  else:
    num_examples = len(source)
    gather = _GatherExamples(source)
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive; got {batch_size}.")
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f"num_epochs must be positive or None (forever); got {num_epochs}.")
  if shard_count < 1 or not 0 <= shard_index < shard_count:
    raise ValueError(f"Need 0 <= shard_index < shard_count; got shard_index={shard_index}, "
                     f"shard_count={shard_count}.")
  if not 0 <= seed < 2**32:
    raise ValueError(f"seed must be an integer in [0, 2**32); got {seed}.")
  if worker_count < 0:
    raise ValueError(f"worker_count must be >= 0; got {worker_count}.")
  if shard_count > 1 and not drop_remainder and num_epochs is None:
    # Unequal shards would drift into different epochs, so one global step could repeat an example.
    raise ValueError(f"drop_remainder=False with {shard_count} shards needs a finite num_epochs (shards of unequal "
                     "size drift apart epoch by epoch when repeating forever). Fix: pass drop_remainder=True.")

  indices = grain.MapDataset.range(num_examples)
  if shuffle:
    indices = indices.shuffle(seed=_shuffle_seed(seed))
  # grain maps index e * len + i of a shuffled/sliced dataset to epoch e, so slicing after the
  # shuffle shards every epoch's permutation, and repeat() below reshuffles each epoch.
  indices = indices[shard_index::shard_count]
  if drop_remainder:
    indices = indices[:num_examples // shard_count]
  if len(indices) == 0:
    raise ValueError(f"Shard {shard_index} of {shard_count} gets no examples out of {num_examples}.")
  indices = indices.repeat(num_epochs)
  batches = indices.batch(batch_size, drop_remainder=drop_remainder)
  if len(batches) == 0:
    raise ValueError(f"batch_size {batch_size} exceeds the {len(indices)} examples shard {shard_index} of "
                     f"{shard_count} sees in {num_epochs} epoch(s) with drop_remainder=True.")
  batches = batches.map(gather)
  if transform is not None:
    batches = batches.map(transform)
  dataset = batches.to_iter_dataset(read_options or DEFAULT_READ_OPTIONS)
  if worker_count > 0:
    _ensure_flags_parsed()
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(dataset)

