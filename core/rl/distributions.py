"""Per-token quantities of the policy's categorical distribution over the vocabulary, from logits.

log pi(a_t | s_t) = z_{a_t} - logsumexp(z) and the entropy H = logsumexp(z) - sum_a softmax(z)_a z_a, both
computed in float32 from `log_softmax` so large logits neither overflow nor lose precision.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.jit
def token_log_probs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """log pi(tokens | context): `logits` [..., V] (the distribution each token was drawn from), `tokens` [...]."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(log_p, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]


@jax.jit
def entropy_from_logits(logits: jax.Array) -> jax.Array:
  """Entropy in nats of softmax(logits) over the last axis: [..., V] -> [...]."""
  logits = logits.astype(jnp.float32)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  # p * log p with p = 0 (log p = -inf, a masked or underflowed logit) contributes 0. The -inf is replaced before
  # the product, not after: a where over 0 * -inf would still send nan through the discarded branch's gradient.
  finite_log_p = jnp.where(log_p > -jnp.inf, log_p, 0.0)
  return -jnp.sum(jnp.exp(log_p) * finite_log_p, axis=-1)
