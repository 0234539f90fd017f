"""The report's tables from results (no training here: the quick runs are the main job's)."""

import pytest

from bsd import report


def _fake():
  cls = {"source": "src", "steps": 10, "epochs": 0.5, "time_steps": 4, "batch_size": 128, "arch": "mlp",
         "network": "MLP 4-3-2"}
  return {
      "fashion_mlp": {m: {**cls, "test_accuracy": a, "train_hamming_l1": 0.91, "train_hamming_l2": 0.93}
                      for m, a in [("bsd", 0.84), ("bp_snn", 0.86), ("bp_ann", 0.87), ("fa", 0.85), ("dfa", 0.85)]},
      "mnist_cnn": {"bsd": {**cls, "test_accuracy": 0.92}, "bp_snn": {**cls, "test_accuracy": 0.94}},
      "mnist_autoencoder": {m: {**cls, "test_frechet_classifier": f, "test_recon_mse": 0.03}
                            for m, f in [("bsd", 30.0), ("bp_ann", 3.0)]},
      "co2_rnn": {m: {**cls, "test_mse": v, "test_mse_train_mean": 1.13}
                  for m, v in [("bsd", 0.85), ("bp_snn", 0.9), ("fa", 0.83), ("dfa", 0.848)]},
      "kjv_rnn": {m: {**cls, "test_accuracy": v, "test_bits_per_char": 3.0} for m, v in [("bsd", 0.4), ("bp_snn", 0.5)]},
  }


def test_claim_rows_cover_every_paper_number():
  rows = report.claim_rows(_fake())
  text = "\n".join(f"{r.claim} | {r.paper_value} | {r.measured} | {r.scale}" for r in rows)
  for number in ("99.44", "84.13% vs 87.02%", "0.125 vs 0.131", "72.39 vs 49.56", "above 0.9"):
    assert number in text
  assert "no CIFAR-10" in text and "CO2" in text and "CFD" in text and "Frechet" in text
  assert "BSD 0.850 vs BP-SNN 0.900 (FA 0.830, DFA 0.848); train mean: 1.130" in text  # the other baselines too
  assert "BSD 92.00% vs BP-SNN 94.00% |" in text  # none other in that task: no empty brackets
  assert all(r.scale for r in rows)
  assert "src; MLP 4-3-2; 10 steps (0.50 epochs), batch 128, T=4, CPU" in text  # the network as the run built it


@pytest.mark.parametrize("name,overrides,described", [
    ("fashion_mlp.py", [], "MLP 784-512-512-100"),
    ("mnist_cnn.py", [], "CNN conv8-conv16-fc64, BatchNorm"),
    ("mnist_cnn.py", ["model.channels=(4,)", "model.hidden=(32,)"], "CNN conv4-fc32, BatchNorm"),
    ("mnist_autoencoder.py", [], "MLP 784-256-64"),
    ("kjv_rnn.py", [], "RNN 63-128(recurrent LIF)-126, BatchNorm"),
])
def test_the_scale_describes_the_network_that_was_built(name, overrides, described):
  """The report's scale column reads the network from the built model, so an override shows in it."""
  import numpy as np
  from bsd import datasets, training
  from core import config as config_lib
  config = config_lib.load_config(f"configs/bsd/{name}:quick", overrides)
  if config.task == "next_char":
    data = datasets.TaskData(train={}, test={}, num_classes=63)
  else:
    images = np.zeros((2, 28, 28, 1), np.uint8)
    split = {"image": images, "label": np.zeros(2, np.int32)}
    data = datasets.TaskData(train=split, test=split, num_classes=10)
  assert training.describe_network(config, training.build_model(config, data)) == described


def test_method_table():
  table = report.method_table(_fake())
  lines = table.splitlines()
  assert lines[0].startswith("| method | fashion_mlp (acc)")
  assert len(lines) == 3 + 5  # header, rule, data and scale of each column, five methods
  assert lines[2] == "| data, scale (ours) | " + " | ".join(["src; 10 steps (0.50 epochs)"] * 5) + " |"
  assert "84.00" in table and "(paper 99.44, full MNIST)" in table and "(paper Inception FID 49.56)" in table
