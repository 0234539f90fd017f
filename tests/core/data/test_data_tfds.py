"""TFDS array_record round trip without TensorFlow: a tiny `mnist` is prepared in a temp folder by a
builder defined here, then read back through `load_tfds`, `load_mnist(data_dir=...)` and `make_batches`.

Preparing works offline and without TensorFlow as long as images are handed to tfds already
PNG-encoded (tfds encodes numpy images with TensorFlow, but passes encoded bytes through).
"""

import io
import json
import shutil
import sys

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from core import data

NUM = {"train": 12, "test": 5}


def _png(pixels: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  PIL.Image.fromarray(pixels[..., 0]).save(buffer, format="PNG")
  return buffer.getvalue()


def _image(i: int) -> np.ndarray:
  return np.full((28, 28, 1), 10 * i, np.uint8)


# skip_registration: tfds already registers the real MNIST builder under the name "mnist".
class _TinyMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Same name, version and features as TFDS's mnist 3.0.1, with a handful of synthetic digits."""
  name = "mnist"
  VERSION = tfds.core.Version("3.0.1")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, supervised_keys=("image", "label"),
        features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(28, 28, 1)),
                                             "label": tfds.features.ClassLabel(num_classes=10)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(n) for split, n in NUM.items()}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"image": _png(_image(i)), "label": i % 10}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds")
  _TinyMnist(data_dir=str(root), file_format="array_record").download_and_prepare()
  return root


def test_load_tfds_round_trip(data_dir):
  source = data.load_tfds("mnist", "train", data_dir)
  assert len(source) == NUM["train"]
  examples = source.__getitems__(list(range(len(source))))
  # tfds shuffles records on write; each image still carries its label.
  assert sorted(int(e["label"]) for e in examples) == sorted(i % 10 for i in range(NUM["train"]))
  for e in examples:
    assert e["image"].dtype == np.uint8 and e["image"].shape == (28, 28, 1)
    i = int(e["image"][0, 0, 0]) // 10
    np.testing.assert_array_equal(e["image"], _image(i))
    assert e["label"] == i % 10
  assert len(data.load_tfds("mnist", "train[:50%]", data_dir)) == NUM["train"] // 2
  assert "tensorflow" not in sys.modules


def test_load_mnist_from_tfds_folder(data_dir):
  test = data.load_mnist("test", data_dir=data_dir)
  assert test["image"].shape == (NUM["test"], 28, 28, 1) and test["image"].dtype == np.uint8
  assert test["label"].dtype == np.int32
  np.testing.assert_array_equal(test["image"][:, 0, 0, 0] // 10 % 10, test["label"])
  assert not test["image"].flags.writeable


def test_make_batches_over_tfds_source(data_dir):
  source = data.load_tfds("mnist", "train", data_dir)
  batches = list(data.make_batches(source, 4, seed=0, num_epochs=1, shard_index=0, shard_count=1))
  assert len(batches) == 3
  assert batches[0]["image"].shape == (4, 28, 28, 1)
  labels = np.concatenate([b["label"] for b in batches])
  assert sorted(labels) == sorted(i % 10 for i in range(NUM["train"]))


def test_missing_or_unusable_dataset_errors(data_dir, tmp_path, monkeypatch):
  with pytest.raises(data.DataSourceMissingError, match=r"not prepared under .*tfds build mnist --data_dir"):
    data.load_tfds("mnist", "train", tmp_path / "empty")
  with pytest.raises(ValueError, match="validation"):
    data.load_tfds("mnist", "validation", data_dir)
  # The same files described as tfrecord: no random access, the message says how to convert.
  copy = tmp_path / "tfrecord"
  shutil.copytree(data_dir / "mnist", copy / "mnist")
  info_path = copy / "mnist" / "3.0.1" / "dataset_info.json"
  info = json.loads(info_path.read_text())
  info["fileFormat"] = "tfrecord"
  info_path.write_text(json.dumps(info))
  with pytest.raises(data.DataSourceMissingError, match="--file_format=array_record"):
    data.load_tfds("mnist", "train", copy)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(data.DataSourceMissingError, match="pip install tensorflow-datasets array-record"):
    data.load_tfds("mnist", "train", data_dir)
