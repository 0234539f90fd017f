"""Numbers of benchmarks/llm_generate.py: prompts, lengths, batch sizes, repeats, and the storage variants timed.

`:quick` times two variants with fewer repeats (a smoke run of the script).
"""

import ml_collections

from core.llm.config import pretrained_config
from core.llm.generate import generation_config

QUESTIONS = (
    "What is the capital of France?", "Write a short poem about the sea.", "Explain photosynthesis simply.",
    "List three uses of copper.", "Who wrote Hamlet?", "How do airplanes fly?",
    "Give me a recipe for pancakes with all the steps, from the ingredients to serving them warm.",
    "What is 17 times 23?", "Describe the water cycle.", "Why is the sky blue?", "Translate 'good morning' to French.",
    "Summarize the plot of Romeo and Juliet in a few sentences, mentioning the families involved.",
    "What are prime numbers?", "Name the planets of the solar system.", "How does a refrigerator keep food cold?",
    "Tell me a fun fact about octopuses.",
)

VARIANTS = {  # name -> model numerics (see core.llm.config.LlamaConfig)
    "fp32": dict(),
    "bf16_mixed": dict(param_dtype="bfloat16", activation_format="bfloat16"),  # f32 residual, bf16 matmul inputs
    "bf16_compute": dict(dtype="bfloat16", param_dtype="bfloat16"),  # everything bf16
    "int8_w8a8": dict(weight_format="int8", embed_format="int8", activation_format="int8"),
    # int8 weights, 16-bit activations as two int8 digits (one dot, rows stacked): int8 kernels, weight error only
    "int8_w8a16": dict(weight_format="int8", embed_format="int8", activation_format="int8x2"),
    # weights and activations as two int8 digits each (~15-bit precision, bf16's bytes), int8 kernels
    "int8x2": dict(weight_format="int8x2", embed_format="int8x2", activation_format="int8x2"),
    "int8_weights": dict(weight_format="int8", embed_format="int8"),
    "int4_weights": dict(weight_format="int4", embed_format="float", quant_group_size=32),  # = the Q4_1 source
}


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.source = ""  # '' = the default SmolLM2-135M-Instruct GGUF
  config.questions = QUESTIONS  # chat-formatted; batch 1 uses the first
  config.batch_sizes = (1, 16)
  config.new_tokens = 64  # decode length; EOS is ignored on both sides so every row makes exactly this many
  config.threads = 0  # every side's threads (torch, llama.cpp, XLA:CPU); 0 = the cores XLA:CPU sees
  config.warmup = 2  # transformers' first generate calls run ~10x slower than steady state
  config.iters = 3
  config.variants = tuple(VARIANTS)
  config.numerics = ml_collections.ConfigDict({k: pretrained_config(**v) for k, v in VARIANTS.items()})
  config.generation = generation_config(max_new_tokens=64, prompt_buckets=(64,), batch_buckets=(1, 16),
                                        new_token_buckets=(1, 64))
  config.peer = True  # time transformers generate on the same GGUF weights and prompts
  config.llamacpp = True  # and llama.cpp at batch 1 on the GGUF file, when llama-cpp-python is installed
  config.memory = True  # peak resident memory of 135M inference, one subprocess per variant
  if variant == "quick":
    config.variants = ("fp32", "bf16_mixed")
    config.iters = 1
    config.warmup = 1
  elif variant != "full":
    raise ValueError(f"unknown variant {variant!r}; valid: 'full', 'quick'")
  return config
