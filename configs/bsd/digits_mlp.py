"""BSD MLP on scikit-learn's 8x8 digits (1438/359): the seconds-long test and smoke experiment."""

from configs.bsd import common


def get_config(variant: str = "full"):
  config = common.base("classify", "digits", "mlp")
  config.batch_size = 64
  config.eval_batch_size = 360  # the 359 test images in one padded batch; divisible by 8 devices
  config.model.hidden = (128,)
  config.model.code_dim = 50
  config.optimizer.learning_rate = 3e-3
  config.optimizer.warmup_steps = 10
  config.train.num_steps = 300
  config.train.log_every = 50
  config.train.checkpoint_every = 300
  config.train.progress_bar = False

  def quick(c):
    common.quick_schedule(c, 200)

  return common.apply_variant(config, variant, quick)
