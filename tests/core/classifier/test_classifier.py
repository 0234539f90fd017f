"""The reference classifier end to end on real data (8x8 digits): library call and command line."""

import json
import os
import subprocess
import sys

from core import config as config_lib
from core.classifier import training
from core.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_cnn_learns_digits(tmp_path):
  config = config_lib.load_config(os.path.join(ROOT, "configs/core/digits_cnn.py"),
                                  ["train.progress_bar=false", "train.tensorboard=false"])
  results = training.train_and_evaluate(config, str(tmp_path))
  assert results["test_accuracy"] > 0.9, results
  assert results["steps"] == config.train.num_steps
  evals = read_metrics(str(tmp_path), "eval")
  assert [r["step"] for r in evals] == [100, 200]
  assert json.loads((tmp_path / "results.json").read_text())["test_accuracy"] == results["test_accuracy"]


def test_command_line_run_and_resume(tmp_path):
  """`python -m core.classifier.train` trains, and the same command on a finished workdir resumes at the end."""
  command = [sys.executable, "-m", "core.classifier.train", "--config", "configs/core/digits_cnn.py",
             "--config.train.num_steps=20", "--config.train.checkpoint_every=10", "--config.train.log_every=10",
             "--config.train.progress_bar=false", "--config.model.name=mlp", "--config.model.hidden=(32,)",
             "--workdir", str(tmp_path)]
  first = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert first.returncode == 0, first.stderr[-2000:]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20"]
  first_results = json.loads((tmp_path / "results.json").read_text())
  again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert again.returncode == 0, again.stderr[-2000:]
  assert "Resumed from step 20" in again.stdout + again.stderr
  # Nothing retrained: the restored final state evaluates to exactly the same numbers.
  assert json.loads((tmp_path / "results.json").read_text()) == first_results


import pytest  # noqa: E402


@pytest.mark.parametrize("name,overrides,message", [
    ("fashion_mlp.py", ["model.hidden=(-5,)"], r"config.model.hidden = \(-5,\) is invalid: every size must be positive"),
    ("digits_cnn.py", ["model.channels=(16, 32, 64, 128)"], r"needs 1 to 3 conv blocks for 8x8 digits images"),
    ("digits_cnn.py", ["model.channels=(16, 0)"], "every size must be positive"),
    ("digits_cnn.py", ["model.dense=0"], r"config.model.dense = 0 is invalid"),
    ("digits_cnn.py", ["seed=-1"], r"config.seed = -1 is invalid: must be >= 0"),
])
def test_model_sizes_and_seed_fail_in_validation(name, overrides, message):
  """Sizes that cannot build a model (negative, zero, more pooling than the image has pixels) and a negative seed
  are config errors before anything is built, not JAX tracebacks."""
  config = config_lib.load_config(os.path.join(ROOT, "configs/core", name), overrides)
  with pytest.raises(config_lib.ConfigError, match=message):
    training.validate_config(config)
  for shipped in ("fashion_mlp.py", "digits_cnn.py"):
    training.validate_config(config_lib.load_config(os.path.join(ROOT, "configs/core", shipped)))
