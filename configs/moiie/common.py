"""The full MoIIE config schema, shared by the experiment files in this folder.

Variant string: comma-separated tokens among `quick` (the report's minutes-long scale) and a MoE variant
(`dense`, `vanilla`, `modality`, `moiie`, and `modality_top2`, not in the paper: the modality MoE at
MoIIE's activated parameters), e.g. `--config configs/moiie/easyvqa_tiny.py:quick,vanilla`.
`--config.moe.variant=...` does the same.
"""

from __future__ import annotations

import ml_collections

from core import config as config_lib

from core.llm.config import pretrained_config
from core.sharding import mesh_config
from core.train.loop import train_config
from core.train.optim import optimizer_config
from moiie.routing import VARIANTS, moe_config
from moiie.routing import apply_variant as apply_moe_variant


def stage(num_steps: int, learning_rate: float, warmup: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      optimizer=optimizer_config(name="adamw", learning_rate=learning_rate, schedule="warmup_cosine",
                                 warmup_steps=warmup, weight_decay=0.0, grad_clip_norm=1.0),
      train=train_config(num_steps=num_steps, log_every=max(num_steps // 10, 1), checkpoint_every=num_steps,
                         keep_checkpoints=1, progress_bar=True, tensorboard=False)))


def base() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.reuse_stages_from = ""  # a workdir whose stage0/stage1 folders hold the same config's finished stages
  config.llm = ml_collections.ConfigDict(dict(
      source="tiny",  # tiny: random Llama of llm.tiny's sizes (vocab from the easy-VQA words) | pretrained
      tiny=dict(hidden_size=64, intermediate_size=192, num_layers=4, num_heads=4, num_kv_heads=2,
                max_seq_len=64, rope_theta=10000.0, rms_norm_eps=1e-5, tie_embeddings=False),
      pretrained=pretrained_config()))
  config.vision = ml_collections.ConfigDict(dict(
      image_size=64, patch_size=8, dim=96, depth=2, heads=4, mlp_dim=192,
      image_pool=2))  # 8x8 patches -> 2x2 average pool -> 16 image tokens
  config.data = ml_collections.ConfigDict(dict(
      seq_len=40, train_subset=0, test_subset=0, batch_size=64, eval_batch_size=500,
      cache_vision_features=True))  # the ViT is frozen after stage 0: compute its features once per image
  config.moe = moe_config()
  # every stage trains on this mesh; expert_parallel splits each MoE expert weight's expert axis over `fsdp`
  # (whole experts per device) instead of the FSDP default's largest dimension, with --config.mesh.fsdp=<a divisor
  # of the expert count>
  config.mesh = mesh_config()
  config.mesh.expert_parallel = False
  config.stage0 = stage(400, 2e-3, 40)
  config.stage0.batch_size = 64
  config.stage1 = stage(300, 2e-3, 30)
  config.stage2 = stage(1500, 1e-3, 100)
  return config


def shorten(config: ml_collections.ConfigDict, name: str, num_steps: int) -> None:
  """Cuts stage `name` to `num_steps`, its warm-up still a tenth of the stage (as every stage here has it, and
  below the run's steps, which the config check requires); five log lines and one checkpoint at the end."""
  config[name].train.num_steps = num_steps
  config[name].optimizer.warmup_steps = num_steps // 10
  config[name].train.log_every = max(num_steps // 5, 1)
  config[name].train.checkpoint_every = num_steps


def apply_variant(config: ml_collections.ConfigDict, variant: str, quick) -> ml_collections.ConfigDict:
  def choose(config, token):
    config.moe.variant = token
    apply_moe_variant(config.moe)  # so that print(config) shows the counts the run uses

  return config_lib.apply_variant_tokens(config, variant, quick, VARIANTS, choose, "a MoE variant")


def quiet(config: ml_collections.ConfigDict) -> None:
  for s in ("stage0", "stage1", "stage2"):
    config[s].train.progress_bar = False
