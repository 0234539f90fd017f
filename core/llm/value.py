"""A critic for PPO on language models: a Llama trunk with a scalar value head on its final hidden states.

AgentGym-RL (arXiv 2509.08755) trains PPO with verl, whose critic is a separate copy of the policy's transformer
with a linear value head, initialised from the policy's weights; the head starts at zero so the first values are
0 and the first advantages are the returns. Values are aligned like `scoring.logprobs_from_logits`: entry t is
V(tokens[:t]), the value of the context before token t is chosen (read from the hidden state at t-1); entry 0 is 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from core.llm.model import Llama, positions_from_mask


class ValueModel(nnx.Module):

  def __init__(self, trunk: Llama, rngs: nnx.Rngs):
    self.trunk = trunk
    d = trunk.config.hidden_size
    self.value_head = nnx.Linear(d, 1, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

  def __call__(self, tokens: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """[B, T] float32 values, entry t = V(tokens[:, :t]) (0 at t = 0)."""
    mask = attention_mask.astype(bool)
    hidden, _ = self.trunk.hidden_states(tokens, positions_from_mask(mask), mask)
    values = self.value_head(hidden.astype(jnp.float32))[..., 0]
    return jnp.pad(values[:, :-1], ((0, 0), (1, 0)))
