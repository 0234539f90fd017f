"""Sizes and numerics of a Llama-family decoder (Touvron et al. 2023, arXiv 2302.13971; Llama 2/3; Qwen2).

One frozen dataclass, `LlamaConfig`, describes every size from the 2-layer test model to Llama-3-8B. It carries
the architecture (widths, heads, RoPE base, norm epsilon, tied embeddings, q/k/v biases) and the numerics:
`param_dtype` (how float weights are stored), `dtype` (compute), and `weight_format` / `embed_format`
(weight-only quantization of the projection matrices and of the embedding/LM head, see `quant.py`).

Configs travel as `ml_collections.ConfigDict` in experiment files: `LlamaConfig.from_dict(cd)` and
`config.to_dict()` convert, and unknown keys fail with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Mapping

WEIGHT_FORMATS = ("float", "int8", "int4")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Architecture and numerics of a Llama-family decoder.

  Attributes:
    vocab_size: rows of the token embedding (and columns of the LM head).
    hidden_size: model width d.
    intermediate_size: SwiGLU hidden width.
    num_layers: decoder blocks.
    num_heads: query heads.
    num_kv_heads: key/value heads (grouped-query attention, Ainslie et al. 2023); must divide num_heads.
    head_dim: per-head width; 0 means hidden_size // num_heads.
    max_seq_len: context window; longer prompts are an error unless generation truncates them.
    rope_theta: RoPE base (Su et al. 2021, eq. 34: theta_i = base^(-2i/d)).
    rms_norm_eps: epsilon of RMSNorm (Zhang & Sennrich 2019).
    tie_embeddings: the LM head is the transposed token embedding.
    qkv_bias: q/k/v projections carry biases (Qwen2); Llama has none.
    dtype: compute dtype of activations ('float32' or 'bfloat16'); logits are always float32.
    param_dtype: storage dtype of float weights ('float32' or 'bfloat16').
    weight_format: 'float' (param_dtype), 'int8' (per-output-channel symmetric) or 'int4' (per-group
      asymmetric, group `quant_group_size`) storage of the attention and MLP matrices; dequantized to `dtype`
      next to each matmul, accumulation in float32.
    embed_format: same choice for the token embedding / LM head.
    activation_format: 'float', or 'int8' to also quantize the inputs of int8-format matrices per row (LLM.int8()
      vector-wise quantization, int32 accumulation): XLA:CPU runs these dots on its VNNI/AMX int8 kernels,
      ~2-4x faster than float32 matmuls, but activation outliers make it lossy; see quant.int8_dot. Or
      'bfloat16' to round the inputs of float matrices to bf16 (with param_dtype='bfloat16', accumulation and the
      residual stream in `dtype`): the mixed precision of torch autocast, run on XLA:CPU's AMX bf16 kernels.
    quant_group_size: input-channel group of the int4 format (a divisor of every input width).
    weight_blocks: quantized matrices are stored as this many row blocks whose dots XLA:CPU runs concurrently;
      set it to the number of cores for memory-bound decode (see quant.py). Float weights are never split.
  """

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  max_seq_len: int
  rope_theta: float
  rms_norm_eps: float
  tie_embeddings: bool
  qkv_bias: bool = False
  head_dim: int = 0
  dtype: str = "float32"
  param_dtype: str = "float32"
  weight_format: str = "float"
  embed_format: str = "float"
  activation_format: str = "float"
  quant_group_size: int = 32
  weight_blocks: int = 1

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                 "max_seq_len", "quant_group_size", "weight_blocks"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"LlamaConfig.{name} must be a positive int, got {value!r}.")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"LlamaConfig.num_heads={self.num_heads} is not a multiple of num_kv_heads="
                       f"{self.num_kv_heads}: grouped-query attention shares each KV head among a whole "
                       "number of query heads. Fix: choose num_kv_heads dividing num_heads.")
    if self.head_dim == 0 and self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                       "set head_dim explicitly.")
    if self.head_size % 2:
      raise ValueError(f"head_dim={self.head_size} must be even for rotary embeddings.")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"LlamaConfig.{name}={getattr(self, name)!r} is not one of {DTYPES}.")
    for name in ("weight_format", "embed_format"):
      if getattr(self, name) not in WEIGHT_FORMATS:
        raise ValueError(f"LlamaConfig.{name}={getattr(self, name)!r} is not one of {WEIGHT_FORMATS}.")
    if self.activation_format not in ("float", "int8", "bfloat16"):
      raise ValueError(f"LlamaConfig.activation_format={self.activation_format!r} is not 'float', 'int8' or "
                       "'bfloat16'.")
    if self.activation_format == "bfloat16" and self.param_dtype != "bfloat16":
      raise ValueError("activation_format='bfloat16' multiplies bf16 inputs with bf16 weights; set "
                       "param_dtype='bfloat16'.")
    if self.activation_format == "int8" and "int8" not in (self.weight_format, self.embed_format):
      raise ValueError("activation_format='int8' applies to int8 weights only; set weight_format='int8' "
                       "(and/or embed_format='int8').")
    if "int4" in (self.weight_format, self.embed_format):
      widths = {self.hidden_size, self.intermediate_size, self.num_heads * self.head_size}
      bad = sorted(w for w in widths if w % (2 * self.quant_group_size))
      if bad:
        raise ValueError(f"int4 storage packs groups of quant_group_size={self.quant_group_size} in pairs, but "
                         f"input widths {bad} are not multiples of {2 * self.quant_group_size}. Fix: pick a "
                         "quant_group_size whose double divides every width, or use weight_format='int8'.")

  @property
  def head_size(self) -> int:
    return self.head_dim or self.hidden_size // self.num_heads

  def replace(self, **changes: Any) -> "LlamaConfig":
    _check_keys(changes)
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "LlamaConfig":
    """Builds from a dict or `ml_collections.ConfigDict` holding (a subset of, for defaulted fields) the fields."""
    values = dict(values)
    _check_keys(values)
    return cls(**values)


def _check_keys(values: Mapping[str, Any]) -> None:
  valid = [f.name for f in dataclasses.fields(LlamaConfig)]
  for key in values:
    if key not in valid:
      close = difflib.get_close_matches(key, valid, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ValueError(f"unknown LlamaConfig field {key!r}.{hint} Valid fields: {', '.join(valid)}.")


def smollm2_135m(**changes: Any) -> LlamaConfig:
  """SmolLM2-135M(-Instruct): 30 layers, d=576, 9 query / 3 KV heads, FFN 1536, tied embeddings."""
  return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
                     num_kv_heads=3, max_seq_len=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
                     tie_embeddings=True).replace(**changes)


def tiny(**changes: Any) -> LlamaConfig:
  """A 2-layer random-init model for tests: GQA (4 query / 2 KV heads), untied head, small vocab."""
  return LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                     num_kv_heads=2, max_seq_len=128, rope_theta=10000.0, rms_norm_eps=1e-5,
                     tie_embeddings=False).replace(**changes)


def llama3_8b(**changes: Any) -> LlamaConfig:
  """Llama-3-8B sizes (without the Llama-3.1 long-context RoPE scaling)."""
  return LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
                     num_kv_heads=8, max_seq_len=8192, rope_theta=500000.0, rms_norm_eps=1e-5,
                     tie_embeddings=False).replace(**changes)


PRESETS = {"smollm2_135m": smollm2_135m, "tiny": tiny, "llama3_8b": llama3_8b}


def preset(name: str, **changes: Any) -> LlamaConfig:
  if name not in PRESETS:
    raise ValueError(f"unknown LlamaConfig preset {name!r}; known: {', '.join(PRESETS)}.")
  return PRESETS[name](**changes)


NUMERICS = ("dtype", "param_dtype", "weight_format", "embed_format", "activation_format", "quant_group_size",
            "weight_blocks")


def pretrained_config(source: str = "", dtype: str = "float32", param_dtype: str = "float32",
                      weight_format: str = "float", embed_format: str = "float", activation_format: str = "float",
                      quant_group_size: int = 32, weight_blocks: int = 1):
  """The `model` block of an experiment config: where the weights come from ('' = the default SmolLM2 GGUF, a
  .gguf path, or a Hugging Face directory) and the numerics to load them with (see LlamaConfig)."""
  import ml_collections
  return ml_collections.ConfigDict(dict(source=source, dtype=dtype, param_dtype=param_dtype,
                                        weight_format=weight_format, embed_format=embed_format,
                                        activation_format=activation_format, quant_group_size=quant_group_size,
                                        weight_blocks=weight_blocks))
