"""grain batch pipelines: determinism, per-epoch reshuffling, sharding, resume, and sources."""

import itertools
import json

import chex
import numpy as np
import pytest
from absl import flags

from core import data

N = 24


def _source(n=N):
  return {"index": np.arange(n), "square": np.arange(n) ** 2,
          "image": np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2)}


def _indices(iterator, count=None):
  return [b["index"].tolist() for b in itertools.islice(iterator, count)]


def test_batches_are_complete_examples():
  batch = next(data.make_batches(_source(), 5, seed=0, shard_index=0, shard_count=1))
  chex.assert_shape(batch["image"], (5, 2, 2))
  np.testing.assert_array_equal(batch["square"], batch["index"] ** 2)
  np.testing.assert_array_equal(batch["image"], _source()["image"][batch["index"]])


def test_same_seed_same_batches_different_seed_different():
  make = lambda seed: _indices(data.make_batches(_source(), 4, seed=seed, num_epochs=3, shard_index=0,
                                                 shard_count=1))
  assert make(7) == make(7)
  assert make(7) != make(8)
  # grain seeds epoch e with seed + e; hashing the user's seed keeps seed 1 from replaying
  # seed 0's second epoch.
  assert make(0)[N // 4:2 * N // 4] != make(1)[:N // 4]


def test_each_epoch_is_a_fresh_permutation():
  batches = _indices(data.make_batches(_source(), 4, seed=0, num_epochs=3, shard_index=0, shard_count=1))
  assert len(batches) == 3 * N // 4
  epochs = [sum(batches[e * N // 4:(e + 1) * N // 4], []) for e in range(3)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(N))
  assert len({tuple(e) for e in epochs}) == 3
  assert epochs[0] != list(range(N))


def test_no_shuffle_visits_in_order():
  batches = _indices(data.make_batches(_source(), 5, seed=0, shuffle=False, num_epochs=2, drop_remainder=False,
                                       shard_index=0, shard_count=1))
  assert sum(batches, []) == list(range(N)) * 2
  assert [len(b) for b in batches] == [5] * 9 + [3]


@pytest.mark.parametrize("n", [24, 26])
def test_shards_are_disjoint_and_cover_every_epoch(n):
  count, epochs = 3, 2
  per_shard = {}
  for drop in (True, False):
    for shard in range(count):
      batches = _indices(data.make_batches(_source(n), 2, seed=5, num_epochs=epochs, drop_remainder=drop,
                                           shard_index=shard, shard_count=count))
      per_shard[drop, shard] = sum(batches, [])
  for epoch in range(epochs):
    # Without drop_remainder every example is seen once per epoch, across the shards.
    sizes = [len(per_shard[False, s]) // epochs for s in range(count)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n
    # With drop_remainder the shards are equal (same number of steps everywhere) and still disjoint.
    equal = [per_shard[True, s][epoch * (n // count):(epoch + 1) * (n // count)] for s in range(count)]
    seen = sum(equal, [])
    assert len(seen) == len(set(seen)) == n // count * count
  # The shards split one global permutation per epoch: together they give a permutation.
  first_epoch = sum((per_shard[False, s][:sizes[s]] for s in range(count)), [])
  assert sorted(first_epoch) == list(range(n))


def test_default_shard_is_this_process():
  batches = _indices(data.make_batches(_source(), 6, seed=0, num_epochs=1))
  assert sorted(sum(batches, [])) == list(range(N))  # a single process sees everything


def test_resume_from_saved_state():
  make = lambda: data.make_batches(_source(), 5, seed=3, shard_index=1, shard_count=2)
  iterator = make()
  _indices(iterator, 7)
  state = json.loads(json.dumps(iterator.get_state()))  # as a checkpoint stores it
  expected = _indices(iterator, 6)
  resumed = make()
  resumed.set_state(state)
  assert _indices(resumed, 6) == expected
  assert _indices(make(), 6) != expected


def test_random_access_source_matches_dict_source():
  columns = _source()

  class Examples:
    def __len__(self):
      return N

    def __getitem__(self, i):
      return {key: value[i] for key, value in columns.items()}

  from_dict = list(data.make_batches(columns, 4, seed=2, num_epochs=1, shard_index=0, shard_count=1))
  from_examples = list(data.make_batches(Examples(), 4, seed=2, num_epochs=1, shard_index=0, shard_count=1))
  chex.assert_trees_all_equal(from_dict, from_examples)


def test_easy_vqa_batches():
  batch = next(data.make_batches(data.load_easy_vqa("test"), 8, seed=0, shard_index=0, shard_count=1))
  chex.assert_shape(batch["image"], (8, 64, 64, 3))
  assert batch["question"].shape == (8,) and batch["answer_index"].dtype == np.int32


def test_transform_is_applied_per_batch():
  scale = lambda batch: {**batch, "image": batch["image"].astype(np.float32) / 255.0}
  batch = next(data.make_batches(_source(), 4, seed=0, transform=scale, shard_index=0, shard_count=1))
  assert batch["image"].dtype == np.float32
  np.testing.assert_allclose(batch["image"] * 255.0, _source()["image"][batch["index"]])


def test_worker_processes_give_the_same_batches():
  make = lambda workers: data.make_batches(_source(), 4, seed=1, num_epochs=1, worker_count=workers,
                                           shard_index=0, shard_count=1)
  in_process = _indices(make(0))
  was_parsed = flags.FLAGS.is_parsed()
  # grain's workers read absl flags, which nothing parses in a notebook or a bare test run;
  # make_batches marks them parsed instead of failing with UnparsedFlagAccessError.
  flags.FLAGS.unparse_flags()
  iterator = None
  try:
    iterator = make(1)
    assert flags.FLAGS.is_parsed()
    assert _indices(iterator) == in_process
  finally:
    if iterator is not None:
      iterator.close()
    if was_parsed:
      flags.FLAGS.mark_as_parsed()
    else:
      flags.FLAGS.unparse_flags()


@pytest.mark.parametrize("kwargs,match", [
    (dict(source={"a": np.zeros(3), "b": np.zeros(4)}), "same leading dimension"),
    (dict(source={}), "empty dict"),
    (dict(batch_size=30, num_epochs=1), "exceeds"),
    (dict(shard_index=2, shard_count=2), "shard_index"),
    (dict(num_epochs=0), "num_epochs"),
    (dict(seed=-1), "seed"),
    (dict(shard_count=2, drop_remainder=False, num_epochs=None), "needs a finite num_epochs"),
])
def test_invalid_arguments(kwargs, match):
  args = dict(source=_source(), batch_size=4, seed=0, shard_index=0, shard_count=1) | kwargs
  with pytest.raises(ValueError, match=match):
    data.make_batches(args.pop("source"), args.pop("batch_size"), **args)
