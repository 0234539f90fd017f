"""Reference CNN with batch norm on scikit-learn's 8x8 digits; small enough for tests."""

import ml_collections

from core.sharding import mesh_config
from core.train.loop import train_config
from core.train.optim import optimizer_config


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = "digits"
  config.data_dir = ""
  config.batch_size = 64
  config.eval_batch_size = 128
  config.model = ml_collections.ConfigDict(dict(name="cnn", hidden=(), channels=(16, 32), dense=64))
  config.optimizer = optimizer_config(name="adam", learning_rate=3e-3, schedule="constant")
  config.train = train_config(num_steps=200, log_every=50, eval_every=100, checkpoint_every=100,
                              keep_checkpoints=2)
  config.mesh = mesh_config()
  return config
