"""BSD MLP on full Fashion-MNIST (60k/10k), 784-512-512-100 (class codes), T=4; `:quick` is ~1 epoch."""

from configs.bsd import common


def get_config(variant: str = "full"):
  config = common.base("classify", "fashion_mnist", "mlp")
  config.model.hidden = (512, 512)
  config.model.code_dim = 100
  config.train.num_steps = 4690  # 10 epochs of 60k at batch 128
  config.eval_batch_size = 1000

  def quick(c):
    common.quick_schedule(c, 470)  # one epoch

  return common.apply_variant(config, variant, quick)
