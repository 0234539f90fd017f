"""Llama-family language models: Flax NNX decoder, GGUF/safetensors weights, tokenizer and chat format,
batched KV-cache generation, and masked log-probability scoring. See core/llm/README.md."""
