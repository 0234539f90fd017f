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

WEIGHT_FORMATS = ("float", "int8", "int8x2", "int4")
ACTIVATION_FORMATS = ("float", "int8", "int8x2", "bfloat16")
ROPE_SCALINGS = ("none", "linear", "llama3", "factors")
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
    rope_scaling: how RoPE frequencies are stretched for long contexts. 'none'; 'linear' (positions divided by
      `rope_scaling_factor`, Chen et al. 2023); 'llama3' (Llama-3.1: wavelengths longer than
      `rope_original_max_seq_len / rope_low_freq_factor` divided by `rope_scaling_factor`, shorter than
      `... / rope_high_freq_factor` kept, linear blend between); 'factors' (each frequency divided by its entry of
      `rope_freq_factors`, what llama.cpp's `rope_freqs.weight` stores).
    rope_scaling_factor, rope_low_freq_factor, rope_high_freq_factor, rope_original_max_seq_len: the
      'linear'/'llama3' parameters, named as in Hugging Face's `rope_scaling`.
    rope_freq_factors: head_dim/2 divisors of the frequencies for rope_scaling='factors'.
    rms_norm_eps: epsilon of RMSNorm (Zhang & Sennrich 2019).
    tie_embeddings: the LM head is the transposed token embedding.
    qkv_bias: q/k/v projections carry biases (Qwen2); Llama has none.
    dtype: compute dtype of activations ('float32' or 'bfloat16'); logits are always float32 arrays (a tied
      head computes them in float32; an untied or quantized head at 'bfloat16' rounds them to bfloat16 first, as
      transformers does).
    param_dtype: storage dtype of float weights ('float32' or 'bfloat16').
    weight_format: 'float' (param_dtype), 'int8' (per-output-channel symmetric), 'int8x2' (int8 plus an int8
      digit of its rounding residual: ~15-bit precision in 2 bytes) or 'int4' (per-group asymmetric, group
      `quant_group_size`) storage of the attention and MLP matrices; dequantized to `dtype` next to each matmul,
      accumulation in float32 (or run on int8 kernels, see activation_format).
    embed_format: same choice for the token embedding / LM head.
    activation_format: 'float', or 'int8' to also quantize the inputs of int8-format matrices per row (LLM.int8()
      vector-wise quantization, int32 accumulation): XLA:CPU runs these dots on its VNNI/AMX int8 kernels,
      ~2-4x faster than float32 matmuls, but activation outliers make it lossy; 'int8x2' adds a second int8 digit
      of each row's rounding residual (same kernels, near-float accuracy; with int8x2 weights the fast accurate
      setting); see quant.int8_dot. Or
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
  rope_scaling: str = "none"
  rope_scaling_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_seq_len: int = 8192
  rope_freq_factors: tuple[float, ...] = ()
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
    self._check_rope_scaling()
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"LlamaConfig.{name}={getattr(self, name)!r} is not one of {DTYPES}.")
    for name in ("weight_format", "embed_format"):
      if getattr(self, name) not in WEIGHT_FORMATS:
        raise ValueError(f"LlamaConfig.{name}={getattr(self, name)!r} is not one of {WEIGHT_FORMATS}.")
    if self.activation_format not in ACTIVATION_FORMATS:
      raise ValueError(f"LlamaConfig.activation_format={self.activation_format!r} is not one of "
                       f"{ACTIVATION_FORMATS}.")
    if self.activation_format == "bfloat16" and self.param_dtype != "bfloat16":
      raise ValueError("activation_format='bfloat16' multiplies bf16 inputs with bf16 weights; set "
                       "param_dtype='bfloat16'.")
    integer_weights = {"int8", "int8x2"} & {self.weight_format, self.embed_format}
    if self.activation_format in ("int8", "int8x2") and not integer_weights:
      raise ValueError(f"activation_format={self.activation_format!r} applies to int8/int8x2 weights only; set "
                       "weight_format='int8' or 'int8x2' (and/or embed_format).")
    if "int4" in (self.weight_format, self.embed_format):
      widths = {self.hidden_size, self.intermediate_size, self.num_heads * self.head_size}
      bad = sorted(w for w in widths if w % (2 * self.quant_group_size))
      if bad:
        raise ValueError(f"int4 storage packs groups of quant_group_size={self.quant_group_size} in pairs, but "
                         f"input widths {bad} are not multiples of {2 * self.quant_group_size}. Fix: pick a "
                         "quant_group_size whose double divides every width, or use weight_format='int8'.")

  def _check_rope_scaling(self) -> None:
    if self.rope_scaling not in ROPE_SCALINGS:
      raise ValueError(f"LlamaConfig.rope_scaling={self.rope_scaling!r} is not one of {ROPE_SCALINGS}.")
    object.__setattr__(self, "rope_freq_factors", tuple(float(f) for f in self.rope_freq_factors))
    if self.rope_scaling in ("linear", "llama3") and self.rope_scaling_factor < 1.0:
      raise ValueError(f"rope_scaling_factor={self.rope_scaling_factor} must be >= 1 (it stretches wavelengths).")
    if self.rope_scaling == "llama3" and not 0 < self.rope_low_freq_factor < self.rope_high_freq_factor:
      raise ValueError(f"rope_scaling='llama3' needs 0 < rope_low_freq_factor < rope_high_freq_factor, got "
                       f"{self.rope_low_freq_factor} and {self.rope_high_freq_factor}.")
    if self.rope_scaling == "factors" and len(self.rope_freq_factors) != self.head_size // 2:
      raise ValueError(f"rope_scaling='factors' needs head_dim/2 = {self.head_size // 2} rope_freq_factors, got "
                       f"{len(self.rope_freq_factors)}.")
    if self.rope_scaling != "factors" and self.rope_freq_factors:
      raise ValueError("rope_freq_factors is set but rope_scaling is not 'factors'; set rope_scaling='factors'.")

  @property
  def head_size(self) -> int:
    return self.head_dim or self.hidden_size // self.num_heads

  def rope_frequency_divisors(self) -> tuple[float, ...] | None:
    """What each of the head_dim/2 RoPE frequencies theta^(-2i/d) is divided by, or None without scaling.

    'llama3' follows Meta's Llama-3.1 reference (`apply_scaling`): with wavelength w_i = 2 pi / freq_i,
    w_i < L / high -> unchanged; w_i > L / low -> freq_i / factor; between, 1/divisor = (1 - s) / factor + s with
    s = (L / w_i - low) / (high - low), L = rope_original_max_seq_len.
    """
    half = self.head_size // 2
    if self.rope_scaling == "none":
      return None
    if self.rope_scaling == "linear":
      return (float(self.rope_scaling_factor),) * half
    if self.rope_scaling == "factors":
      return self.rope_freq_factors
    import numpy as np
    freq = 1.0 / (self.rope_theta ** (np.arange(0, self.head_size, 2, dtype=np.float64) / self.head_size))
    wavelength = 2 * np.pi / freq
    factor, low, high = self.rope_scaling_factor, self.rope_low_freq_factor, self.rope_high_freq_factor
    context = float(self.rope_original_max_seq_len)
    smooth = np.clip((context / wavelength - low) / (high - low), 0.0, 1.0)
    return tuple(float(d) for d in 1.0 / ((1.0 - smooth) / factor + smooth))

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


def llama31_8b(**changes: Any) -> LlamaConfig:
  """Llama-3.1-8B: the Llama-3-8B sizes with a 128k context by Llama-3.1 RoPE scaling (factor 8, low 1, high 4,
  original context 8192)."""
  return llama3_8b(max_seq_len=131072, rope_scaling="llama3", rope_scaling_factor=8.0, rope_low_freq_factor=1.0,
                   rope_high_freq_factor=4.0, rope_original_max_seq_len=8192).replace(**changes)


PRESETS = {"smollm2_135m": smollm2_135m, "tiny": tiny, "llama3_8b": llama3_8b, "llama31_8b": llama31_8b}


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
