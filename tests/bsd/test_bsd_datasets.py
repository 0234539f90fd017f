"""BSD's data splits: subsets that keep every class, user paths with ~, forecasting windows without leakage."""

import os

import numpy as np
import pytest

from bsd import datasets, training
from core import config as config_lib
from core import data as data_lib
from core.data import images as image_data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(name, *overrides):
  return config_lib.load_config(os.path.join(ROOT, "configs/bsd", name), list(overrides))


def test_image_subsets_draw_every_class_and_are_fixed():
  """The MNIST subset's files are sorted by class: a subset must be drawn, not cut from the front."""
  config = _config("mnist_cnn.py", "train_subset=512", "test_subset=100")
  data = datasets.load_images(config)
  assert len(data.train["label"]) == 512 and len(data.test["label"]) == 100
  assert (np.bincount(data.train["label"], minlength=10) >= 20).all()
  assert len(np.unique(data.test["label"])) == 10
  again = datasets.load_images(config)
  np.testing.assert_array_equal(again.train["image"], data.train["image"])
  full = data_lib.load_mnist("train")
  rows = [int(np.flatnonzero((full["image"] == image).all(axis=(1, 2, 3)))[0]) for image in data.train["image"][:5]]
  assert rows == sorted(rows) and len(set(rows)) == 5  # drawn rows, kept in file order


def test_validation_is_held_out_of_training_and_scored_beside_the_test(tmp_path):
  """Settings are chosen on `validation_size` training images that the model never trains on."""
  full = datasets.load_images(_config("digits_mlp.py"))
  data = datasets.load_images(_config("digits_mlp.py", "validation_size=200"))
  n = len(full.train["label"])
  assert len(data.validation["label"]) == 200 and len(data.train["label"]) == n - 200
  flat = lambda x: {row.tobytes() for row in np.asarray(x)}
  assert flat(data.train["image"]) | flat(data.validation["image"]) == flat(full.train["image"])
  assert not flat(data.train["image"]) & flat(data.validation["image"])  # (the 8x8 digits hold no duplicates)
  assert len(flat(full.train["image"])) == n
  np.testing.assert_array_equal(data.test["image"], full.test["image"])
  with pytest.raises(ValueError, match=r"validation_size = 99999 must lie in \(0, 1438\).*Fix: "
                     r"--config.validation_size=143 "):
    datasets.load_images(_config("digits_mlp.py", "validation_size=99999"))
  # the sizes that validation checks validation_size against, without loading, are the loaders' own
  assert datasets.DEFAULT_TRAIN_SIZES["digits"] == n
  assert datasets.DEFAULT_TRAIN_SIZES["mnist"] == len(datasets.load_images(_config("mnist_cnn.py")).train["label"])
  with pytest.raises(config_lib.ConfigError, match="validation_size is read for image tasks only"):
    training.validate_config(_config("co2_rnn.py", "validation_size=10"))
  results = training.train_and_evaluate(
      _config("digits_mlp.py:quick", "validation_size=200", "train.num_steps=20", "train.progress_bar=false",
              "eval.plots=false"), str(tmp_path / "run"))
  assert 0 < results["validation_accuracy"] <= 1 and 0 < results["test_accuracy"] <= 1
  assert results["num_validation"] == 200 and results["num_train"] == n - 200


def test_user_data_dir_with_a_tilde(tmp_path, monkeypatch):
  """`--config.data_dir=~/fm` reaches the loader unexpanded (the shell expands ~ only at a word's start)."""
  folder = tmp_path / "fm"
  folder.mkdir()
  for name in os.listdir(image_data.FASHION_MNIST_DIR):
    os.symlink(os.path.join(image_data.FASHION_MNIST_DIR, name), folder / name)
  monkeypatch.setenv("HOME", str(tmp_path))
  config = _config("fashion_mlp.py", "data_dir=~/fm", "test_subset=10", "train_subset=10")
  training.validate_config(config)
  data = datasets.load_images(config)
  assert data.test["image"].shape == (10, 28, 28, 1)


def test_forecast_windows_split_without_leakage():
  config = _config("co2_rnn.py", "sequence.length=16")
  values = np.diff(data_lib.load_time_series("co2")["value"].astype(np.float64))
  split = int(len(values) * config.sequence.train_fraction)
  z = (values - values[:split].mean()) / values[:split].std()
  data = datasets.load_series(config)
  train_targets = data.train["target"]
  # The training windows end at the last training point; the scored last step of the test windows is exactly
  # every test point, once, in order, each following its own 16 points of context.
  assert train_targets[-1, -1] == pytest.approx(z[split - 1], abs=1e-5)
  np.testing.assert_allclose(data.test["target"][:, -1], z[split:], atol=1e-5)
  np.testing.assert_allclose(data.test["input"][:, -1], z[split - 1:-1], atol=1e-5)
  np.testing.assert_allclose(data.train["input"][:, 1:], train_targets[:, :-1])
  train_part = z[:split]
  assert abs(train_part.mean()) < 1e-9 and train_part.std() == pytest.approx(1.0)
  with pytest.raises(config_lib.ConfigError, match="not read for 'forecast'"):
    training.validate_config(_config("co2_rnn.py", "train_subset=100"))
