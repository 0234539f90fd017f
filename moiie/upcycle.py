"""Sparse upcycling (Komatsuzaki et al. 2023) as MoIIE does it (arXiv 2508.09779, sec. 3.4, stage 2): on every
other decoder layer the dense SwiGLU FFN is copied into every expert and new routers are added. Because every
expert equals the old FFN and the top-k weights sum to 1, the upcycled model computes exactly the dense model's
function at the moment of upcycling, whatever the routers say (tests/moiie/test_moiie_upcycle.py).

`decoder_forward` runs a `core.llm` Llama whose blocks may hold `MoIIELayer`s on input *embeddings* (image tokens
projected into the LLM's space) with per-token modality ids; it reuses the Llama's own modules (norms,
attention, head) and mirrors `Llama.__call__` without a KV cache. A test pins it to `core.llm.model.forward` on a
dense model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from core.llm import model as llm_model
from moiie.layer import MoIIELayer
from moiie.routing import MoESpec


def moe_layer_indices(num_layers: int, every: int, offset: int) -> list[int]:
  return [i for i in range(num_layers) if i % every == offset]


def upcycle(llama: llm_model.Llama, spec: MoESpec, *, every: int = 2, offset: int = 1, rngs: nnx.Rngs,
            router_init_std: float = 0.02) -> list[int]:
  """Replaces the MLP of layers i % every == offset by MoIIE layers whose experts copy it (in place).

  Returns the indices of the upcycled layers.
  """
  indices = moe_layer_indices(len(llama.layers), every, offset)
  if not indices:
    raise ValueError(f"no decoder layer i < {len(llama.layers)} has i % {every} == {offset}: nothing to upcycle. "
                     "Fix: lower moe.every/moe.offset or use more layers.")
  e = spec.num_experts
  for i in indices:
    mlp = llama.layers[i].mlp
    if not isinstance(mlp, llm_model.MLP):
      raise ValueError(f"layer {i} holds {type(mlp).__name__}, not a dense MLP: the model is already upcycled.")
    if mlp.gate_proj.fmt != "float":
      raise ValueError(f"layer {i}'s FFN is stored as {mlp.gate_proj.fmt}; upcycling trains the experts and "
                       "needs float weights. Fix: load the LLM with weight_format='float'.")
    gate = mlp.gate_proj.kernel.get_value()
    up = mlp.up_proj.kernel.get_value()
    down = mlp.down_proj.kernel.get_value()
    layer = MoIIELayer(spec, gate.shape[0], gate.shape[1], rngs=rngs, router_init_std=router_init_std,
                       param_dtype=gate.dtype)
    layer.gate.set_value(jnp.broadcast_to(gate[None], (e, *gate.shape)))
    layer.up.set_value(jnp.broadcast_to(up[None], (e, *up.shape)))
    layer.down.set_value(jnp.broadcast_to(down[None], (e, *down.shape)))
    llama.layers[i].mlp = layer
  return indices


def decoder_forward(llama: llm_model.Llama, h: jax.Array, positions: jax.Array, kv_mask: jax.Array,
                    modality: jax.Array, valid: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Float32 logits [B, T, V] of input embeddings h [B, T, d], and the MoE aux terms.

  aux: `aux_loss` (mean over MoE layers of each layer's weighted loss; 0 without MoE layers), its parts, and
  `load_vision`/`load_text` [L_moe, E] (each expert's assignments per routed token of that modality, per
  layer: a row sums to top_k).
  """
  config = llama.config
  t = h.shape[1]
  causal = jnp.arange(t)[None, :] <= jnp.arange(t)[:, None]
  allowed = causal[None] & kv_mask[:, None, :].astype(bool)
  cos, sin = llm_model.rope_cos_sin(positions, config.head_size, config.rope_theta, config.rope_frequency_divisors())
  h = h.astype(config.dtype)
  layer_aux = []
  for block in llama.layers:
    a, _ = block.self_attn(block.input_layernorm(h), cos, sin, allowed)
    h = h + a
    x = block.post_attention_layernorm(h)
    if isinstance(block.mlp, MoIIELayer):
      y, aux = block.mlp(x, modality, valid)
      layer_aux.append(aux)
    else:
      y = block.mlp(x)
    h = h + y
  h = llama.norm(h)
  logits = llama.embed_tokens.attend(h) if llama.lm_head is None else llama.lm_head(h)
  if layer_aux:
    out = {k: jnp.mean(jnp.stack([a[k] for a in layer_aux]), axis=0)
           for k in ("aux_loss", "balance_vision", "balance_text", "z_loss")}
    out["load_vision"] = jnp.stack([a["load_vision"] for a in layer_aux])
    out["load_text"] = jnp.stack([a["load_text"] for a in layer_aux])
  else:
    zero = jnp.zeros((), jnp.float32)
    out = {"aux_loss": zero, "balance_vision": zero, "balance_text": zero, "z_loss": zero}
  return logits.astype(jnp.float32), out
