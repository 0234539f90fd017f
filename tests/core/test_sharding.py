"""The same training run on 1 device and on 8 fake CPU devices (data and fsdp axes) gives the same losses."""

import os

import jax
import numpy as np
import pytest

from core import config as config_lib
from core import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_eight_devices_match_one_device(fake_devices):
  worker = os.path.join(ROOT, "tests", "core", "sharding_worker.py")
  one = fake_devices(1, [worker, "1", "1"])
  data_parallel = fake_devices(8, [worker, "8", "1"])
  fsdp = fake_devices(8, [worker, "2", "4"])
  assert one["devices"] == 1 and data_parallel["devices"] == 8 and fsdp["devices"] == 8
  assert len(one["losses"]) == 8
  np.testing.assert_allclose(data_parallel["losses"], one["losses"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fsdp["losses"], one["losses"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fsdp["kernel_sum"], one["kernel_sum"], rtol=1e-4, atol=1e-5)
  assert data_parallel["kernel_shards"] == 1  # replicated under pure data parallelism
  assert fsdp["kernel_shards"] == 4  # the 8x64 kernel is split 4 ways over the fsdp axis


def test_one_device_replicates_every_leaf():
  mesh = sharding.make_mesh(1, 1)
  tree = {"big": np.zeros((1024, 512)), "small": np.zeros((3,)), "scalar": np.zeros(())}
  shardings = sharding.state_sharding(mesh, tree)
  assert all(s.spec == jax.sharding.PartitionSpec() for s in jax.tree.leaves(shardings))


def test_mesh_config_errors():
  import ml_collections
  config = ml_collections.ConfigDict({"mesh": sharding.mesh_config(data=3, fsdp=1)})
  with pytest.raises(config_lib.ConfigError, match=r"config.mesh.data \* config.mesh.fsdp = 3 \* 1 != 1 devices"):
    sharding.validate_mesh_config(config)
  config = ml_collections.ConfigDict({"mesh": sharding.mesh_config(data=-1, fsdp=0)})
  with pytest.raises(config_lib.ConfigError, match=r"config.mesh.fsdp = 0 is invalid"):
    sharding.validate_mesh_config(config)


def test_a_batch_that_cannot_be_split_names_the_fix():
  mesh = sharding.make_mesh(1, 1)
  placed = sharding.shard_batch({"x": np.ones((3, 2))}, mesh)
  np.testing.assert_array_equal(np.asarray(placed["x"]), np.ones((3, 2)))
  with pytest.raises(ValueError, match=r"shape \(\) cannot be split over the 1 local devices.*Fix: make the batch"):
    sharding.shard_batch({"x": np.ones((3, 2)), "step": np.zeros(())}, mesh)
