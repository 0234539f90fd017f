"""MoIIE LVLM on easy-VQA with a tiny random Llama (4 layers, d=64; MoE on layers 1 and 3) and a 2-layer ViT.

`:quick` is the scale of `python -m moiie.report` (minutes on 2 CPU cores): fewer steps, same model.
"""

from configs.moiie import common


def get_config(variant: str = "full"):
  config = common.base()

  def quick(c):
    c.stage0.train.num_steps = 150
    c.stage0.optimizer.warmup_steps = 15
    c.stage1.train.num_steps = 60
    c.stage1.optimizer.warmup_steps = 6
    c.stage2.train.num_steps = 250
    c.stage2.optimizer.warmup_steps = 25
    c.data.test_subset = 2000
    for s in ("stage0", "stage1", "stage2"):
      c[s].train.log_every = max(c[s].train.num_steps // 5, 1)
      c[s].train.checkpoint_every = c[s].train.num_steps
    common.quiet(c)

  return common.apply_variant(config, variant, quick)
