"""MoIIE LVLM on easy-VQA with the real SmolLM2-135M-Instruct weights (30 layers, d=576; MoE on the 15 odd
layers, each FFN copied into 1 vision + 2 shared + 1 text experts) and the same ViT as the tiny config.

Heavy on CPU (135M parameters, 49k vocabulary): stage 2 at batch 16 runs ~seconds per step here.
"""

from configs.moiie import common


def get_config(variant: str = "full"):
  config = common.base()
  config.llm.source = "pretrained"
  config.data.seq_len = 48  # BPE splits the ChatML markers and questions into more pieces than the word vocab
  config.data.batch_size = 16
  config.data.eval_batch_size = 64
  config.data.test_subset = 1000
  config.stage1 = common.stage(300, 1e-3, 30)
  config.stage2 = common.stage(600, 2e-5, 50)  # full fine-tuning of a pretrained LLM: a small learning rate

  def quick(c):
    for stage, steps in (("stage0", 150), ("stage1", 20), ("stage2", 20)):
      common.shorten(c, stage, steps)
    c.data.test_subset = 128
    common.quiet(c)

  return common.apply_variant(config, variant, quick)
