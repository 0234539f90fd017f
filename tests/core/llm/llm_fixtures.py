"""Helpers shared by the core/llm tests (imported by name; pytest puts this folder on sys.path)."""

import jax
import numpy as np

from core.llm import config as config_lib
from core.llm import weights
from core.llm.model import forward

jit_forward = jax.jit(forward, static_argnums=0)  # eager op-by-op runs of even the tiny model take seconds


def random_tensors(config, seed=0, std=0.3):
  """HF-named float32 tensors with a larger spread than the 0.02 init, so logits are peaked and tests sharp."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, slot in weights._slots(config).items():
    if slot.kind == "vector":
      out[name] = (1.0 + 0.1 * rng.standard_normal(slot.shape)).astype(np.float32)
    else:
      out[name] = (std * rng.standard_normal(slot.shape) / np.sqrt(slot.shape[-1]) * 4).astype(np.float32)
  return out


def tiny_model(seed=0, **changes):
  config = config_lib.tiny(**changes)
  return weights.from_tensors(config, random_tensors(config, seed).items(), source="random")


def _permute_for_gguf(w, n_heads):
  """llama.cpp convert_hf_to_gguf `permute`: rotate-half rows -> interleaved-pair rows."""
  return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path, config, tensors, qtype_name="F32", rope_freqs=None, linear_rope_factor=None,
                    pre_tokenizer="smollm"):
  """Writes `tensors` (HF names, float32) as a llama-architecture GGUF like llama.cpp's converter does: q/k rows
  permuted, 2-D weights stored as `qtype_name`, plus a 256-token byte-level tokenizer; optionally RoPE scaling as
  llama.cpp writes it (a `rope_freqs.weight` tensor of frequency divisors, or linear-scaling metadata)."""
  import gguf
  from gguf import GGMLQuantizationType as Q
  from tokenizers.pre_tokenizers import ByteLevel

  qtype = Q[qtype_name]
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_block_count(config.num_layers)
  w.add_context_length(config.max_seq_len)
  w.add_embedding_length(config.hidden_size)
  w.add_feed_forward_length(config.intermediate_size)
  w.add_head_count(config.num_heads)
  w.add_head_count_kv(config.num_kv_heads)
  w.add_rope_freq_base(config.rope_theta)
  w.add_layer_norm_rms_eps(config.rms_norm_eps)
  w.add_vocab_size(config.vocab_size)
  alphabet = sorted(ByteLevel.alphabet())
  tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + alphabet[:config.vocab_size - 4]
  tokens.append(tokens[10] + tokens[11])  # the one merge's result
  w.add_tokenizer_model("gpt2")
  w.add_tokenizer_pre(pre_tokenizer)
  w.add_token_list(tokens)
  w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
  w.add_token_merges([f"{tokens[10]} {tokens[11]}"])
  w.add_eos_token_id(2)
  w.add_bos_token_id(1)
  if linear_rope_factor is not None:
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(linear_rope_factor)
  if rope_freqs is not None:
    w.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, np.float32))
  names = {v: k for k, v in weights._GGUF_GLOBAL_NAMES.items()}
  for hf_name, array in tensors.items():
    if hf_name.startswith("model.layers."):
      _, _, idx, rest = hf_name.split(".", 3)
      gg = {v: k for k, v in weights._GGUF_LAYER_NAMES.items()}[rest]
      name = f"blk.{idx}.{gg}"
    else:
      name = names[hf_name]
    if "q_proj" in hf_name:
      array = _permute_for_gguf(array, config.num_heads)
    elif "k_proj" in hf_name:
      array = _permute_for_gguf(array, config.num_kv_heads)
    if array.ndim == 2 and qtype != Q.F32:
      w.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    else:
      w.add_tensor(name, array.astype(np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return str(path)
