"""LoRA adapters (Hu et al. 2021, arXiv 2106.09685, sec. 4.1, eq. 3) for the decoder's projection matrices.

    h = x W0 + (alpha / r) * x A B,    A in R^{d_in x r} ~ N(0, 1/d_in),  B = 0 in R^{r x d_out}

so the adapted model equals the base model at initialisation. Adapters are `nnx.LoRAParam` variables: training
with the filter `nnx.LoRAParam` (see `core.train.create_train_state(..., trainable=...)`) updates only them,
while the frozen base weights stay outside the optimizer and the gradient. `merge_lora` folds each adapter into
its base kernel (W0 + (alpha/r) A B) for export, so a merged model needs no LoRA code to run.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from core.llm.model import Linear, Llama

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nnx.Module):
  """A base `Linear` (frozen when training with the LoRA filter) plus a rank-r update."""

  def __init__(self, base: Linear, rank: int, alpha: float, *, rngs: nnx.Rngs):
    if base.fmt != "float":
      raise ValueError(f"LoRA needs float base weights, this layer stores {base.fmt!r}. Fix: load the model with "
                       "weight_format='float' for fine-tuning (quantize after merging, for inference).")
    d_in, d_out = base.kernel.shape
    self.base = base
    self.scale = alpha / rank
    self.lora_a = nnx.LoRAParam(jax.random.normal(rngs.params(), (d_in, rank), jnp.float32) / jnp.sqrt(d_in))
    self.lora_b = nnx.LoRAParam(jnp.zeros((rank, d_out), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.base(x)
    update = (x.astype(jnp.float32) @ self.lora_a[...]) @ self.lora_b[...]
    return y + (self.scale * update).astype(y.dtype)

  def merged(self) -> Linear:
    kernel = self.base.kernel[...]
    delta = self.scale * (self.lora_a[...] @ self.lora_b[...])
    self.base.kernel[...] = (kernel.astype(jnp.float32) + delta).astype(kernel.dtype)
    return self.base


def _modules_with_targets(model: Llama, targets: Sequence[str]):
  for block in model.layers:
    for owner in (block.self_attn, block.mlp):
      for name in targets:
        if hasattr(owner, name):
          yield owner, name


def add_lora(model: Llama, *, rank: int, alpha: float, targets: Sequence[str] = TARGETS, seed: int = 0) -> Llama:
  """Wraps every target projection of every block in a `LoRALinear`, in place; returns the model."""
  unknown = sorted(set(targets) - set(TARGETS))
  if unknown:
    raise ValueError(f"unknown LoRA target(s) {unknown}; valid: {', '.join(TARGETS)}.")
  if rank < 1:
    raise ValueError(f"LoRA rank must be >= 1, got {rank}.")
  rngs = nnx.Rngs(seed)
  for owner, name in _modules_with_targets(model, targets):
    layer = getattr(owner, name)
    if not isinstance(layer, LoRALinear):
      setattr(owner, name, LoRALinear(layer, rank, alpha, rngs=rngs))
  return model


def merge_lora(model: Llama) -> Llama:
  """Folds every adapter into its base kernel, in place, and removes the adapters; returns the model."""
  for owner, name in _modules_with_targets(model, TARGETS):
    layer = getattr(owner, name)
    if isinstance(layer, LoRALinear):
      setattr(owner, name, layer.merged())
  return model


def count_lora_params(model: Llama) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam)))
