"""BSD's batch-wide ReCo loss under data parallelism: 8 fake CPU devices give the 1-device losses."""

import numpy as np

SCRIPT = """
import json, sys, tempfile
import jax
from bsd import training
from core import config as config_lib
from core.train.metrics import read_metrics
config = config_lib.load_config("configs/bsd/digits_mlp.py:quick", [
    "train.num_steps=12", "train.log_every=1", "train.checkpoint_every=12", "train.tensorboard=false",
    "eval.plots=false", "batch_size=64", "model.hidden=(32,)", "mesh.fsdp=" + sys.argv[1]])
workdir = tempfile.mkdtemp()
training.train_and_evaluate(config, workdir)
print(json.dumps({"devices": jax.device_count(),
                  "losses": [r["loss"] for r in read_metrics(workdir, "train")]}))
"""


def test_eight_devices_match_one(fake_devices):
  one, eight = fake_devices(1, ["-c", SCRIPT, "1"]), fake_devices(8, ["-c", SCRIPT, "2"])
  assert one["devices"] == 1 and eight["devices"] == 8
  np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-4)
