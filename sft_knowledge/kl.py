"""Token-level analysis: KL divergence between the fine-tuned and the pre-trained next-token distributions
(arXiv 2509.16596 sec. 4, "token-level analysis").

For a sequence x and position t, with P_ft and P_pre the two models' distributions over token t given x_<t,

    KL_t = sum_v P_ft(v | x_<t) (log P_ft(v | x_<t) - log P_pre(v | x_<t)),

averaged separately over answer tokens (the assistant reply the model was or would be trained on) and over the other
tokens (system prompt, question, chat markup). Positions follow `core.llm.scoring`: entry t scores the distribution
of token t, entry 0 is never scored. One pure jitted function of both parameter states returns per-row sums, so the
[B, T, vocab] distributions never leave the device.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from core.llm import sft
from core.llm.model import forward, positions_from_mask


@functools.partial(jax.jit, static_argnums=0)
def kl_sums(graphdef: nnx.GraphDef, state_p: nnx.State, state_q: nnx.State,
            batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """Per row: summed KL(P_p || P_q) over answer tokens (`loss_mask`) and over the other real tokens, and counts."""
  mask = batch["attention_mask"].astype(bool)
  positions = positions_from_mask(mask)
  logits_p, _ = forward(graphdef, state_p, batch["tokens"], positions, mask)
  logits_q, _ = forward(graphdef, state_q, batch["tokens"], positions, mask)
  chex.assert_equal_shape([logits_p, logits_q])
  logp = jax.nn.log_softmax(logits_p[:, :-1], axis=-1)
  logq = jax.nn.log_softmax(logits_q[:, :-1], axis=-1)
  kl = jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)  # [B, T-1]: distribution of token t+1
  kl = jnp.pad(kl, ((0, 0), (1, 0)))
  real = mask.astype(jnp.float32).at[:, 0].set(0.0)  # position 0 has no prefix, hence no distribution
  answer = batch["loss_mask"].astype(jnp.float32) * real
  other = real - answer
  return {"answer_kl": jnp.sum(kl * answer, -1), "answer_tokens": answer.sum(-1),
          "other_kl": jnp.sum(kl * other, -1), "other_tokens": other.sum(-1)}


def mean_token_kl(graphdef: nnx.GraphDef, state_p: nnx.State, state_q: nnx.State, tokenizer,
                  conversations: Sequence[Sequence[Mapping[str, str]]], *, batch_size: int,
                  length_buckets: Sequence[int]) -> dict[str, float]:
  """Mean per-token KL(P_p || P_q) on answer tokens and on other tokens of chat `conversations` (each ending with the
  assistant's answer), batched in right-padded length buckets."""
  examples = [sft.tokenize_chat(tokenizer, c) for c in conversations]
  totals = {"answer_kl": 0.0, "answer_tokens": 0.0, "other_kl": 0.0, "other_tokens": 0.0}
  for start in range(0, len(examples), batch_size):
    chunk = examples[start:start + batch_size]
    longest = max(len(ids) for ids, _ in chunk)
    fits = [b for b in length_buckets if b >= longest]
    if not fits:
      raise ValueError(f"a KL sequence has {longest} tokens, above the largest bucket {max(length_buckets)}. "
                       "Fix: add a larger bucket to sft.length_buckets.")
    width = fits[0]
    tokens = np.full((batch_size, width), tokenizer.pad_id, np.int32)
    attention, loss = np.zeros_like(tokens), np.zeros_like(tokens)
    attention[:, 0] = 1  # filler rows attend to one token so their softmax stays finite; they score nothing
    for r, (ids, m) in enumerate(chunk):
      tokens[r, :len(ids)], attention[r, :len(ids)], loss[r, :len(ids)] = ids, 1, m
    out = kl_sums(graphdef, state_p, state_q, {"tokens": tokens, "attention_mask": attention, "loss_mask": loss})
    for key in totals:
      totals[key] += float(np.asarray(out[key])[:len(chunk)].sum())
  return {"answer_kl": totals["answer_kl"] / max(totals["answer_tokens"], 1.0),
          "other_kl": totals["other_kl"] / max(totals["other_tokens"], 1.0),
          "answer_tokens": int(totals["answer_tokens"]), "other_tokens": int(totals["other_tokens"])}
