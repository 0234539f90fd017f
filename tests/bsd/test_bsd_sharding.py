"""BSD's batch-wide ReCo loss under data parallelism: 8 fake CPU devices give the 1-device losses."""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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


def _run(devices: int, fsdp: int) -> dict:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  out = subprocess.run([sys.executable, "-c", SCRIPT, str(fsdp)], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_eight_devices_match_one():
  one, eight = _run(1, 1), _run(8, 2)
  assert one["devices"] == 1 and eight["devices"] == 8
  np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-4)
