"""Log-probabilities of given tokens under the model, restricted by a loss mask.

For a sequence x_1..x_T the model gives log p(x_t | x_<t) for t >= 2 (the autoregressive factorization,
Bengio et al. 2003, eq. 1); a 0/1 `loss_mask` selects the tokens that count (an answer, a continuation, an
assistant turn). The summed masked log-probability scores multiple-choice options and closed-book answers, its
negative mean is the SFT loss, and per-token values feed RL ratios and KL estimates.

Batches are dicts of [B, T] arrays: `tokens` (int), `attention_mask` (1 = real token; left or right padding both
work, positions are recomputed from it) and `loss_mask` (1 = score this token; the first token of a row is never
scored, having no prefix). All functions here are pure in (graphdef, state, batch) and jit with graphdef static.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from core.llm.model import forward, positions_from_mask
from core.llm import weights


def token_logprobs(graphdef: nnx.GraphDef, state: nnx.State, tokens: jax.Array,
                   attention_mask: jax.Array) -> jax.Array:
  """[B, T] float32: entry t is log p(tokens[:, t] | tokens[:, :t]); entry 0 is 0 (nothing to condition on)."""
  mask = attention_mask.astype(bool)
  logits, _ = forward(graphdef, state, tokens, positions_from_mask(mask), mask)
  return logprobs_from_logits(logits, tokens)


def logprobs_from_logits(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """[B, T]: entry t is log softmax(logits[:, t-1])[tokens[:, t]]; entry 0 is 0 (nothing to condition on)."""
  logits = logits[:, :-1]
  picked = jnp.take_along_axis(logits, tokens[:, 1:, None], axis=-1)[..., 0]
  return jnp.pad(picked - jax.nn.logsumexp(logits, axis=-1), ((0, 0), (1, 0)))


def sequence_logprobs(graphdef: nnx.GraphDef, state: nnx.State,
                      batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """(sum of masked token log-probs [B], number of scored tokens [B])."""
  lp = token_logprobs(graphdef, state, batch["tokens"], batch["attention_mask"])
  weight = score_weight(batch)
  return jnp.sum(lp * weight, axis=-1), jnp.sum(weight, axis=-1)


def masked_nll(graphdef: nnx.GraphDef, state: nnx.State, batch: Mapping[str, jax.Array]) -> jax.Array:
  """Mean negative log-likelihood over all masked tokens of the batch: the SFT loss `loss(graphdef, params,
  batch)` (differentiate with respect to `state`)."""
  total, count = sequence_logprobs(graphdef, state, batch)
  return -jnp.sum(total) / jnp.maximum(jnp.sum(count), 1.0)


def score_weight(batch: Mapping[str, jax.Array]) -> jax.Array:
  attention = jnp.asarray(batch["attention_mask"], jnp.float32)
  weight = jnp.asarray(batch["loss_mask"], jnp.float32) * attention
  # Token t is scored from the logits at t - 1, which must be a real token: not the first column, and not a
  # padding slot left of a left-padded row's first token (its query sees no valid key).
  return weight * jnp.pad(attention[:, :-1], ((0, 0), (1, 0)))


jit_token_logprobs = jax.jit(token_logprobs, static_argnums=0)
jit_sequence_logprobs = jax.jit(sequence_logprobs, static_argnums=0)


def continuation_batch(prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]], pad_id: int,
                       length_buckets: Sequence[int]) -> dict[str, np.ndarray]:
  """Right-padded batch of prompt+continuation ids with the loss mask on the continuation tokens; the length
  is rounded up to the next of `length_buckets` so that repeated calls reuse one compiled program."""
  if len(prompts) != len(continuations):
    raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations.")
  rows = [list(p) + list(c) for p, c in zip(prompts, continuations)]
  for i, (p, c) in enumerate(zip(prompts, continuations)):
    if not p:
      raise ValueError(f"prompt {i} is empty: the first continuation token needs a prefix. Fix: start with BOS.")
    if not c:
      raise ValueError(f"continuation {i} is empty: nothing to score.")
  longest = max(len(r) for r in rows)
  fits = [b for b in length_buckets if b >= longest]
  if not fits:
    raise ValueError(f"a prompt+continuation has {longest} tokens, above the largest bucket {max(length_buckets)}.")
  width = fits[0]
  tokens = np.full((len(rows), width), pad_id, np.int32)
  attention = np.zeros((len(rows), width), np.int32)
  loss = np.zeros((len(rows), width), np.int32)
  for i, (p, row) in enumerate(zip(prompts, rows)):
    tokens[i, :len(row)] = row
    attention[i, :len(row)] = 1
    loss[i, len(p):len(row)] = 1
  return {"tokens": tokens, "attention_mask": attention, "loss_mask": loss}


def score_continuations(pretrained, prompts: Sequence[str], continuations: Sequence[str], *, batch_size: int,
                        length_buckets: Sequence[int]) -> np.ndarray:
  """Summed log p(continuation | prompt) for text pairs (multiple choice: one row per option), float32 [N]."""
  tok = weights.text_tokenizer(pretrained)
  p_ids, c_ids = tok.encode_prompts(prompts), tok.encode_batch(continuations)
  out = []
  for start in range(0, len(p_ids), batch_size):
    batch = continuation_batch(p_ids[start:start + batch_size], c_ids[start:start + batch_size], tok.pad_id,
                               length_buckets)
    n = batch["tokens"].shape[0]
    if n < batch_size:  # pad the batch too, so the last chunk reuses the compiled program
      batch = {k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
      batch["attention_mask"][n:, 0] = 1
    total, _ = jit_sequence_logprobs(pretrained.graphdef, pretrained.state, batch)
    out.append(np.asarray(total)[:n])
  return np.concatenate(out)
