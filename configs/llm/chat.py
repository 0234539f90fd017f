"""Chat with SmolLM2-135M-Instruct (`python -m core.llm.chat [--prompt "..."]`).

`:fast` stores weights in bfloat16 and rounds matmul inputs to bfloat16 (float32 accumulation and residual
stream): ~1.5x faster batched decode on CPU, logits within ~0.5 of the float32 ones. `:int8` runs int8 weights with
16-bit activations (two int8 digits) on the int8 kernels: ~2.3x faster decode, logits within ~2.1 (the int8 weight
rounding). `:int8x2` stores weights as two int8 digits too: ~1.2-1.5x faster, logits within ~0.1, greedy text
unchanged on the benchmark prompts. Figures: core/llm/README.md.
"""

import ml_collections

from core.llm.config import pretrained_config
from core.llm.generate import generation_config


def get_config(variant: str = "exact") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = pretrained_config(source="", dtype="float32", param_dtype="float32", weight_format="float",
                                   embed_format="float", activation_format="float", quant_group_size=32)
  config.generation = generation_config(
      max_new_tokens=256, temperature=0.0, top_k=0, top_p=1.0, seed=0,
      prompt_buckets=(64, 128, 256, 512, 1024, 2048, 4096, 7936), batch_buckets=(1,),
      new_token_buckets=(256,), truncate_prompt=True)  # a long conversation keeps its latest turns
  config.system_prompt = ""  # empty: the model's own default system prompt
  if variant == "fast":
    config.model.param_dtype = "bfloat16"
    config.model.activation_format = "bfloat16"
  elif variant in ("int8", "int8x2"):
    config.model.weight_format = config.model.embed_format = variant
    config.model.activation_format = "int8x2"
  elif variant != "exact":
    raise ValueError(f"unknown variant {variant!r}; valid: 'exact', 'fast', 'int8', 'int8x2'")
  return config
