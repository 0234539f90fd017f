"""Reference MLP on full Fashion-MNIST (60k/10k). `:quick` is the few-second smoke version."""

import ml_collections

from core.sharding import mesh_config
from core.train.loop import train_config
from core.train.optim import optimizer_config


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = "fashion_mnist"
  config.data_dir = ""  # empty: the Debian package's files; else a folder holding the same idx .gz files
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(256, 256), channels=(), dense=0))
  config.optimizer = optimizer_config(name="adamw", learning_rate=1e-3, schedule="warmup_cosine",
                                      warmup_steps=100, weight_decay=1e-4)
  config.train = train_config(num_steps=4690, log_every=200, eval_every=1000, checkpoint_every=1000,
                              keep_checkpoints=2)  # 4690 steps = 10 epochs of 60k at batch 128
  config.mesh = mesh_config()
  if variant == "quick":
    config.train.num_steps = 300
    config.train.log_every = 100
    config.train.eval_every = 0
    config.train.checkpoint_every = 300
    config.optimizer.warmup_steps = 20
  elif variant != "full":
    raise ValueError(f"unknown variant {variant!r}; valid: 'full', 'quick'")
  return config
