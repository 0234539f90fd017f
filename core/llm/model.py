"""Llama-family decoder in Flax NNX (Touvron et al. 2023, arXiv 2302.13971, sec. 2.2; Qwen2 adds q/k/v biases).

  * pre-norm RMSNorm (Zhang & Sennrich 2019, eq. 4): x / sqrt(mean(x^2) + eps) * g, computed in float32;
  * rotary position embeddings (Su et al. 2021, arXiv 2104.09864, eq. 34) in the "rotate-half" layout of the
    Hugging Face checkpoints (GGUF's interleaved layout is converted on import, see `weights.py`);
  * grouped-query attention (Ainslie et al. 2023, arXiv 2305.13245): num_heads query heads share num_kv_heads
    key/value heads;
  * SwiGLU feed-forward (Shazeer 2020, arXiv 2002.05202, eq. 6): down(silu(gate(x)) * up(x)).

Attention is causal over cache *slots* and masked by `kv_mask` (which slots hold real tokens), while RoPE uses
explicit per-row `positions`: a left-padded row's first real token sits at a later slot but position 0, so padded
and unpadded batches give the same logits. One call serves training/scoring (no cache), prefill (writes T slots
of the KV cache from `cache_index`) and decode (T = 1).

At a `jax.jit` boundary use the pure `forward(graphdef, state, ...)`; split the module once with `nnx.split`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from core.llm import quant
from core.llm.config import LlamaConfig

_INIT_STD = 0.02  # the Hugging Face Llama initializer_range


class QuantizedWeight(nnx.Variable):
  """Quantized storage (int8 / packed int4 with float scales). Not an `nnx.Param`: optimizers skip it."""


class KVCache(NamedTuple):
  """Per-layer keys and values, each [batch * num_kv_heads, slots, head_dim] in the compute dtype.

  Batch and heads share one leading axis so that a batch of one has no size-1 dimension: XLA:CPU squeezes such
  dimensions with bitcasts, and a bitcast read of a loop-carried buffer made it copy every cache buffer per step.
  """

  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]


def init_cache(config: LlamaConfig, batch: int, slots: int, sharding: jax.sharding.Sharding | None = None) -> KVCache:
  """Zero buffers [batch * Hkv, slots, Dh] per layer; `sharding` places them (e.g. rows over devices) as they are
  made, so no device ever holds the whole cache."""
  shape = (batch * config.num_kv_heads, slots, config.head_size)
  zeros = lambda: tuple(jnp.zeros(shape, config.dtype, device=sharding) for _ in range(config.num_layers))  # noqa: E731
  return KVCache(k=zeros(), v=zeros())


class Linear(nnx.Module):
  """y = x W^T (+ b). Float weights are kept [in, out] as `kernel`; quantized ones [out, in] (see quant.py).

  Quantized layers start as zeros: they are filled from float tensors by `weights.from_tensors`.
  """

  def __init__(self, in_features: int, out_features: int, *, config: LlamaConfig, fmt: str, use_bias: bool,
               rngs: nnx.Rngs):
    self.fmt = fmt
    self.dtype = config.dtype
    self.activations = _activations_for(config, fmt)
    if fmt == "float":
      init = nnx.initializers.normal(_INIT_STD)
      self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features), config.param_dtype))
    else:
      self.kernel = QuantizedWeight(_quant_placeholder(out_features, in_features, fmt, config))
    self.bias = nnx.Param(jnp.zeros((out_features,), config.param_dtype)) if use_bias else None

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(self.dtype)
    if self.fmt == "float" and self.activations == "bfloat16":
      y = quant.dot_nn(x.astype(jnp.bfloat16), self.kernel.get_value()).astype(self.dtype)
    elif self.fmt == "float":
      kernel = self.kernel.get_value()
      anchor = quant._anchor(x, self.dtype) if kernel.dtype != jnp.dtype(self.dtype) else None
      y = quant.dot_nn(x, quant.upcast(kernel, self.dtype, anchor)).astype(self.dtype)
    else:
      y = quant.matmul(x, self.kernel.get_value(), self.fmt, self.dtype, self.activations)
    if self.bias is not None:
      y = y + quant.upcast(self.bias.get_value(), self.dtype)
    return y


def _quant_placeholder(out_features: int, in_features: int, fmt: str, config: LlamaConfig):
  """Zero arrays shaped like `quant.quantize(w, fmt, group, blocks)` of an [out, in] matrix."""
  group = config.quant_group_size
  blocks = []
  for rows in (len(part) for part in np.array_split(np.arange(out_features), config.weight_blocks)):
    if fmt in ("int8", "int8x2"):
      blocks.append({"q": jnp.zeros((rows, in_features), jnp.int8), "scale": jnp.ones((rows,), jnp.float32)})
      if fmt == "int8x2":
        blocks[-1]["q_lo"] = jnp.zeros((rows, in_features), jnp.int8)
    elif fmt == "int4":
      ngroups = in_features // group
      blocks.append({"packed": jnp.zeros((rows, in_features // 2), jnp.uint8),
                     "scale": jnp.ones((rows, ngroups), jnp.float32),
                     "zero": jnp.zeros((rows, ngroups), jnp.float32)})
    else:
      raise ValueError(f"unknown weight format {fmt!r}.")
  return tuple(blocks)


def _activations_for(config: LlamaConfig, fmt: str) -> str:
  """How a matrix of storage `fmt` treats its input: 'int8'/'int8x2' apply to int8/int8x2 matrices, 'bfloat16' to
  float ones."""
  if config.activation_format in ("int8", "int8x2"):
    return config.activation_format if fmt in ("int8", "int8x2") else "float"
  if config.activation_format == "bfloat16":
    return "bfloat16" if fmt == "float" else "float"
  return "float"


class Embedding(nnx.Module):
  """Token embedding [vocab, d]; with tied embeddings it is also the LM head (logits = h E^T)."""

  def __init__(self, config: LlamaConfig, rngs: nnx.Rngs):
    self.fmt = config.embed_format
    self.dtype = config.dtype
    self.activations = _activations_for(config, self.fmt)
    if self.fmt == "float":
      init = nnx.initializers.normal(_INIT_STD)
      self.embedding = nnx.Param(init(rngs.params(), (config.vocab_size, config.hidden_size), config.param_dtype))
    else:
      self.embedding = QuantizedWeight(
          _quant_placeholder(config.vocab_size, config.hidden_size, self.fmt, config))

  def __call__(self, ids: jax.Array) -> jax.Array:
    if self.fmt == "float":
      return quant.upcast(self.embedding.get_value()[ids], self.dtype)
    return quant.embed_rows(ids, self.embedding.get_value(), self.fmt, self.dtype)

  def attend(self, h: jax.Array) -> jax.Array:
    """Tied LM head: float32 logits h E^T."""
    h = h.astype(self.dtype)
    if self.fmt == "float" and self.activations == "bfloat16":
      return quant.dot_nt(h.astype(jnp.bfloat16), self.embedding.get_value())
    if self.fmt == "float":
      table = self.embedding.get_value()
      anchor = quant._anchor(h, self.dtype) if table.dtype != jnp.dtype(self.dtype) else None
      return quant.dot_nt(h, quant.upcast(table, self.dtype, anchor))
    return quant.matmul(h, self.embedding.get_value(), self.fmt, self.dtype, self.activations).astype(jnp.float32)


class RMSNorm(nnx.Module):
  """RMSNorm (Zhang & Sennrich 2019): normalize in float32, cast back, then scale (the HF Llama order)."""

  def __init__(self, dim: int, config: LlamaConfig):
    self.eps = config.rms_norm_eps
    self.dtype = config.dtype
    self.weight = nnx.Param(jnp.ones((dim,), config.param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    h = x.astype(jnp.float32)
    h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.eps)
    return quant.upcast(self.weight.get_value(), self.dtype) * h.astype(self.dtype)


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float,
                 divisors: tuple[float, ...] | None = None) -> tuple[jax.Array, jax.Array]:
  """cos/sin tables [B, T, head_dim/2] for integer positions [B, T] (RoPE eq. 34, theta_i = base^(-2i/d)).

  `divisors` (head_dim/2 values, `LlamaConfig.rope_frequency_divisors()`) stretch the frequencies for long-context
  scaling (linear, Llama-3.1); None leaves them as in the paper.
  """
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  if divisors is not None:
    inv_freq = inv_freq / jnp.asarray(divisors, jnp.float32)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates x [B, T, heads, head_dim] in the rotate-half layout: pairs (i, i + head_dim/2)."""
  half = x.shape[-1] // 2
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  cos, sin = cos[:, :, None, :], sin[:, :, None, :]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class Attention(nnx.Module):
  """Causal grouped-query self-attention with RoPE and an optional KV cache."""

  def __init__(self, config: LlamaConfig, rngs: nnx.Rngs):
    d, hd = config.hidden_size, config.head_size
    self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, hd
    self.dtype = config.dtype
    kw = dict(config=config, fmt=config.weight_format, rngs=rngs)
    self.q_proj = Linear(d, config.num_heads * hd, use_bias=config.qkv_bias, **kw)
    self.k_proj = Linear(d, config.num_kv_heads * hd, use_bias=config.qkv_bias, **kw)
    self.v_proj = Linear(d, config.num_kv_heads * hd, use_bias=config.qkv_bias, **kw)
    self.o_proj = Linear(config.num_heads * hd, d, use_bias=False, **kw)

  def __call__(self, x, cos, sin, allowed, cache_kv=None, cache_index=0):
    """allowed [B, T, S]: which key slots each query may attend to (S = T without a cache)."""
    b, t, _ = x.shape
    hkv, groups, hd = self.num_kv_heads, self.num_heads // self.num_kv_heads, self.head_dim
    q = apply_rope(self.q_proj(x).reshape(b, t, self.num_heads, hd), cos, sin)
    k = apply_rope(self.k_proj(x).reshape(b, t, hkv, hd), cos, sin)
    v = self.v_proj(x).reshape(b, t, hkv, hd)
    # Heads-major layouts [B * Hkv, slots, hd] make both attention contractions batched over the leading axis,
    # so XLA never transposes the cache (which would cost a full cache copy per layer and step).
    k = k.transpose(0, 2, 1, 3).reshape(b * hkv, t, hd)
    v = v.transpose(0, 2, 1, 3).reshape(b * hkv, t, hd)
    q = q.reshape(b, t, hkv, groups, hd).transpose(0, 2, 3, 1, 4).reshape(b * hkv, groups * t, hd)

    if cache_kv is not None:
      k_cache, v_cache = cache_kv
      k = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, cache_index, 0))
      v = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, cache_index, 0))
    # Attention reads the updated cache: the update's only input is the loop-carried buffer, so it stays in
    # place (reading the old buffer as well made XLA copy every cache buffer on every decode step).
    scores = jnp.einsum("nqd,nsd->nqs", q, k.astype(q.dtype), preferred_element_type=jnp.float32)
    scores = scores.reshape(b, hkv, groups, t, -1) * (hd ** -0.5)
    scores = jnp.where(allowed[:, None, None, :, :], scores, -1e30)
    probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype).reshape(b * hkv, groups * t, -1)
    out = jnp.einsum("nqs,nsd->nqd", probs, v.astype(self.dtype), preferred_element_type=jnp.float32)
    new_kv = (k, v)
    out = out.reshape(b, hkv, groups, t, hd).transpose(0, 3, 1, 2, 4).reshape(b, t, self.num_heads * hd)
    return self.o_proj(out.astype(self.dtype)), new_kv


class MLP(nnx.Module):
  """SwiGLU feed-forward: down(silu(gate x) * up x)."""

  def __init__(self, config: LlamaConfig, rngs: nnx.Rngs):
    kw = dict(config=config, fmt=config.weight_format, use_bias=False, rngs=rngs)
    self.gate_proj = Linear(config.hidden_size, config.intermediate_size, **kw)
    self.up_proj = Linear(config.hidden_size, config.intermediate_size, **kw)
    self.down_proj = Linear(config.intermediate_size, config.hidden_size, **kw)

  def __call__(self, x):
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
  """Pre-norm decoder block: h += attn(norm(h)); h += mlp(norm(h))."""

  def __init__(self, config: LlamaConfig, rngs: nnx.Rngs):
    self.input_layernorm = RMSNorm(config.hidden_size, config)
    self.self_attn = Attention(config, rngs)
    self.post_attention_layernorm = RMSNorm(config.hidden_size, config)
    self.mlp = MLP(config, rngs)

  def __call__(self, h, cos, sin, allowed, cache_kv=None, cache_index=0):
    a, new_kv = self.self_attn(self.input_layernorm(h), cos, sin, allowed, cache_kv, cache_index)
    h = h + a
    h = h + self.mlp(self.post_attention_layernorm(h))
    return h, new_kv


class Llama(nnx.Module):
  """The decoder. Attribute names follow the Hugging Face checkpoint names (see `weights.py`)."""

  def __init__(self, config: LlamaConfig, rngs: nnx.Rngs):
    self.config = config
    self.embed_tokens = Embedding(config, rngs)
    self.layers = nnx.List([Block(config, rngs) for _ in range(config.num_layers)])
    self.norm = RMSNorm(config.hidden_size, config)
    # An untied head uses the embedding's storage format: both are [vocab, d] and dominate batch-1 reads.
    self.lm_head = None if config.tie_embeddings else Linear(
        config.hidden_size, config.vocab_size, config=config, fmt=config.embed_format, use_bias=False, rngs=rngs)

  def __call__(self, tokens: jax.Array, positions: jax.Array, kv_mask: jax.Array,
               cache: KVCache | None = None, cache_index: Any = 0,
               last_only: bool = False) -> tuple[jax.Array, KVCache | None]:
    """Float32 logits and the updated cache.

    Args:
      tokens: [B, T] int token ids.
      positions: [B, T] int RoPE positions (count of real tokens before each one in its row).
      kv_mask: [B, S] bool, which key slots hold real tokens; S = T without a cache, else the cache length.
      cache: `KVCache` or None. With a cache the T tokens are written at slots cache_index .. cache_index+T-1.
      cache_index: scalar int slot of tokens[:, 0] (traced is fine).
      last_only: return logits of the last position only ([B, 1, V]): what prefill needs.
    """
    h, new_cache = self.hidden_states(tokens, positions, kv_mask, cache, cache_index)
    if last_only:
      h = h[:, -1:]
    logits = self.embed_tokens.attend(h) if self.lm_head is None else self.lm_head(h).astype(jnp.float32)
    return logits.astype(jnp.float32), new_cache

  def hidden_states(self, tokens: jax.Array, positions: jax.Array, kv_mask: jax.Array,
                    cache: KVCache | None = None, cache_index: Any = 0) -> tuple[jax.Array, KVCache | None]:
    """The final-norm hidden states [B, T, d] (what the LM head reads; a value head reads them too) and the
    updated cache. Arguments as in `__call__`."""
    t = tokens.shape[1]
    s = kv_mask.shape[1]
    query_slots = cache_index + jnp.arange(t)
    causal = jnp.arange(s)[None, :] <= query_slots[:, None]  # [T, S]
    allowed = causal[None] & kv_mask[:, None, :].astype(bool)  # [B, T, S]
    cos, sin = rope_cos_sin(positions, self.config.head_size, self.config.rope_theta,
                            self.config.rope_frequency_divisors())
    h = self.embed_tokens(tokens)
    new_k, new_v = [], []
    for i, layer in enumerate(self.layers):
      kv = None if cache is None else (cache.k[i], cache.v[i])
      h, (k, v) = layer(h, cos, sin, allowed, kv, cache_index)
      new_k.append(k)
      new_v.append(v)
    new_cache = None if cache is None else KVCache(k=tuple(new_k), v=tuple(new_v))
    return self.norm(h), new_cache


def forward(graphdef: nnx.GraphDef, state: nnx.State, tokens: jax.Array, positions: jax.Array,
            kv_mask: jax.Array, cache: KVCache | None = None, cache_index: Any = 0,
            last_only: bool = False) -> tuple[jax.Array, KVCache | None]:
  """Pure form of `Llama.__call__` for use under `jax.jit`: merges (graphdef, state) and runs the model."""
  model = nnx.merge(graphdef, state)
  return model(tokens, positions, kv_mask, cache=cache, cache_index=cache_index, last_only=last_only)


def positions_from_mask(mask: jax.Array) -> jax.Array:
  """RoPE positions of a padded batch: the number of real tokens before each slot (0 on padding)."""
  mask = mask.astype(jnp.int32)
  return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0)
