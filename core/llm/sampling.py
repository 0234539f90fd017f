"""Next-token sampling: greedy, temperature, top-k (Fan et al. 2018) and nucleus/top-p (Holtzman et al. 2019,
arXiv 1904.09751, sec. 3.1).

`SamplingParams` is static under `jax.jit` (a frozen, hashable dataclass), so the greedy path compiles to a bare
argmax and top-k to `lax.top_k` over k candidates; only top-p without top-k sorts the whole vocabulary.
The reported log-probability of a sampled token is under the model's own distribution (log-softmax of the raw
logits, no temperature or truncation): the quantity scoring.py recomputes for a given sequence.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """temperature 0 = greedy; top_k 0 = no top-k cut; top_p 1.0 = no nucleus cut.

  top-k keeps exactly k candidates: logits tied at the k-th place are cut by token id, lowest kept (as vLLM and
  llama.cpp do; Hugging Face's TopKLogitsWarper keeps every tie)."""
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if not (math.isfinite(self.temperature) and self.temperature >= 0):  # NaN would decode token 0, inf uniformly
      raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}.")
    if isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, np.integer)) or self.top_k < 0:
      raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}.")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}.")


def argmax(logits: jax.Array) -> jax.Array:
  """First index of the row maximum, as two plain reductions: XLA:CPU runs `jnp.argmax`'s variadic (value, index)
  reduce ~20x slower over a 49k vocabulary."""
  best = jnp.max(logits, axis=-1, keepdims=True)
  index = jnp.arange(logits.shape[-1], dtype=jnp.int32)
  first = jnp.min(jnp.where(logits == best, index, logits.shape[-1]), axis=-1)
  return jnp.minimum(first, logits.shape[-1] - 1).astype(jnp.int32)  # all-NaN rows: last id, not out of range


def sample(logits: jax.Array, rng: jax.Array, params: SamplingParams) -> tuple[jax.Array, jax.Array]:
  """Samples one token per row of float logits [B, V]; returns (tokens [B] int32, log-probs [B] float32)."""
  logits = logits.astype(jnp.float32)
  logprobs = jax.nn.log_softmax(logits, axis=-1)
  if params.temperature == 0.0:
    tokens = argmax(logits)
  else:
    scaled = logits / params.temperature
    vocab = logits.shape[-1]
    k = min(params.top_k, vocab) if params.top_k else (vocab if params.top_p < 1.0 else 0)
    if k:
      values, index = jax.lax.top_k(scaled, k)  # sorted, descending
      if params.top_p < 1.0:
        probs = jax.nn.softmax(values, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each candidate; the top one always stays
        values = jnp.where(before < params.top_p, values, -jnp.inf)
      choice = jax.random.categorical(rng, values, axis=-1)
      tokens = jnp.take_along_axis(index, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
    else:
      tokens = jax.random.categorical(rng, scaled, axis=-1).astype(jnp.int32)
  return tokens, jnp.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0]
