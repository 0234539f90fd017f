"""MoIIE LVLM on easy-VQA with a tiny random Llama (4 layers, d=64; MoE on layers 1 and 3) and a 2-layer ViT.

`:quick` is the scale of `python -m moiie.report` (minutes on 2 CPU cores): fewer steps, same model.
"""

from configs.moiie import common


def get_config(variant: str = "full"):
  config = common.base()

  def quick(c):
    for stage, steps in (("stage0", 150), ("stage1", 60), ("stage2", 250)):
      common.shorten(c, stage, steps)
    c.data.test_subset = 2000
    common.quiet(c)

  return common.apply_variant(config, variant, quick)
