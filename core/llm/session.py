"""Multi-turn generation that keeps each row's KV cache between calls (prefix caching for agent rollouts and
conversations: vLLM's automatic prefix caching, Kwon et al. 2023, arXiv 2309.06180, does this for AgentGym-RL).

A `GenerationSession` owns a fixed set of rows (one per trajectory or conversation). Each call passes some rows'
whole token sequences; the session finds how much of each is already in its cache (the longest common prefix
with what it fed before), prefills only the rest, and decodes as `generate.generate` does. A turn therefore costs
its new tokens, not the whole history again.

All rows share cache slots, as in `generate`: each call appends one block of slots (the new tokens, right-aligned
in a chunk as wide as the longest row's, then the decode steps) at the same slot offset for every row. Slots a row
does not use (its chunk padding, decode steps after it stopped, rows not in the call) are masked out for good,
and RoPE positions count a row's real tokens only, so the holes change nothing. When the next block would not fit,
the cache is compacted (each row's valid slots gathered to the front) into a larger bucket of slots.

Log-probabilities are under the model's distribution with the cached prefix, equal to recomputation up to
float summation order (tested).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from core.llm.config import LlamaConfig
from core.llm.generate import (GenerationConfig, GenerationError, GenerationOutput, _decode, bucket, place_rows,
                               prepare_prompts, row_sharding, trim_at_stop)
from core.llm.model import KVCache, forward, init_cache
from core.llm.sampling import SamplingParams


@functools.partial(jax.jit, static_argnames=("graphdef", "sampling", "num_new"), donate_argnames=("cache",))
def _continue(graphdef, state, cache, kv_mask, lengths, cursor, chunk, chunk_mask, max_new, stop_ids, pad_id, rng,
              *, sampling: SamplingParams, num_new: int):
  """Prefill `chunk` [B, W] (right-aligned new tokens, `chunk_mask` marks them) at slots [cursor, cursor + W),
  then decode `num_new` tokens at the slots after it. kv_mask [B, S] marks the valid cached slots; lengths [B]
  counts each row's real cached tokens. Returns (tokens [B, N], log-probs [B, N], cache)."""
  width = chunk.shape[1]
  kv_mask = jax.lax.dynamic_update_slice(kv_mask, chunk_mask, (0, cursor))
  positions = jnp.maximum(lengths[:, None] + jnp.cumsum(chunk_mask, axis=1) - 1, 0)
  logits, cache = forward(graphdef, state, chunk, positions, kv_mask, cache, cursor, last_only=True)
  lengths = lengths + chunk_mask.sum(axis=1).astype(jnp.int32)
  out_tokens, out_logprobs, _, cache = _decode(graphdef, state, logits, cache, kv_mask, lengths, cursor + width,
                                               max_new, stop_ids, pad_id, rng, sampling, num_new)
  return out_tokens, out_logprobs, cache


@functools.partial(jax.jit, static_argnames=("num_kv_heads", "slots"))
def _compact(cache: KVCache, index: jax.Array, *, num_kv_heads: int, slots: int) -> KVCache:
  """Gathers slots `index` [B, K] of every row into a cache of `slots` slots (the first K filled)."""
  rows = jnp.repeat(index, num_kv_heads, axis=0)[..., None]  # [B * Hkv, K, 1]: the cache's row layout

  def gather(buffer):
    kept = jnp.take_along_axis(buffer, rows, axis=1)
    return jnp.pad(kept, ((0, 0), (0, slots - kept.shape[1]), (0, 0)))

  return KVCache(k=tuple(gather(b) for b in cache.k), v=tuple(gather(b) for b in cache.v))


class GenerationSession:
  """Generation over `num_rows` persistent rows that reuses each row's cached prefix between calls.

  Args:
    graphdef, state, model_config: the split model, as for `generate.generate`.
    gen: GenerationConfig (sampling; `prompt_buckets` round the new-token chunk width, `new_token_buckets` the
      decode length, `batch_buckets` the row count; slot capacities are powers of two).
    num_rows: rows of the session (at most the largest batch bucket).
    stop_ids: ids that end a row's turn (shared by all rows).
    pad_id: filler token.
    mesh: optional device mesh: the rows and their caches are split over its devices when their count (the
      row bucket) divides over them (`generate.row_sharding`).
  """

  def __init__(self, graphdef: nnx.GraphDef, state: nnx.State, model_config: LlamaConfig, gen: GenerationConfig,
               num_rows: int, *, stop_ids: Sequence[int] = (), pad_id: int = 0,
               mesh: jax.sharding.Mesh | None = None):
    if not 1 <= num_rows <= gen.batch_buckets[-1]:
      raise GenerationError(f"a session holds 1 to {gen.batch_buckets[-1]} rows (the largest batch bucket), got "
                            f"{num_rows}. Fix: use several sessions, or add a larger batch bucket.")
    self.graphdef, self.state, self.model_config, self.gen = graphdef, state, model_config, gen
    self.num_rows, self.pad_id = num_rows, pad_id
    self.batch = bucket(num_rows, gen.batch_buckets, "session rows")
    self.row_sharding = row_sharding(mesh, self.batch)
    self.stop_ids = list(stop_ids)
    self.cached: list[list[int]] = [[] for _ in range(self.batch)]  # tokens whose keys/values are in the cache
    self.slots_of: list[list[int]] = [[] for _ in range(self.batch)]  # the slot of each cached token
    self.cache: KVCache | None = None
    self.valid = np.zeros((self.batch, 0), bool)  # [B, S] slots holding real cached tokens
    self.cursor = 0  # first unused slot (the same for every row)
    self.prefilled_tokens = 0  # tokens run through the model as prompt chunks (what caching saves)
    self._rng = jax.random.key(gen.seed)  # split for each call made without a key: fresh noise every turn

  def generate(self, rows: Sequence[int], prompts: Sequence[Sequence[int]], budgets: Sequence[int] | None = None,
               rng: jax.Array | None = None) -> GenerationOutput:
    """Continues `rows` (distinct indices < num_rows) with their full token sequences `prompts`; returns the
    new tokens and log-probs per requested row, as `generate.generate` does. Without `rng`, each call draws a
    fresh key from the session's own stream (seeded by `gen.seed`), so sampled turns never repeat one noise."""
    n = len(rows)
    if n == 0:
      return GenerationOutput([], [], [])
    if len(prompts) != n or len(set(rows)) != n or not all(0 <= r < self.num_rows for r in rows):
      raise GenerationError(f"rows and prompts must pair up: {len(rows)} distinct row indices in [0, {self.num_rows}) "
                            f"for {len(prompts)} prompts, got rows {list(rows)}.")
    budgets = list(budgets) if budgets is not None else [self.gen.max_new_tokens] * n
    if len(budgets) != n or max(budgets) > self.gen.max_new_tokens:
      raise GenerationError(f"budgets must be {n} values <= gen.max_new_tokens ({self.gen.max_new_tokens}).")
    # A row's prompt is its whole history, which its cache holds: cutting its start would invalidate the cache.
    prompts = prepare_prompts(prompts, self.model_config.vocab_size, self.model_config.max_seq_len, budgets,
                              truncate=False, too_long_fix="end the conversation or shorten it (a session never "
                              "truncates a history), or lower the budget")
    new = [self._reuse_prefix(r, p) for r, p in zip(rows, prompts)]
    width = bucket(max(len(x) for x in new), self.gen.prompt_buckets, "new-token chunk")
    num_new = bucket(max(budgets), self.gen.new_token_buckets, "max_new_tokens")
    self._make_room(width + num_new)

    chunk = np.full((self.batch, width), self.pad_id, np.int32)
    chunk_mask = np.zeros((self.batch, width), bool)
    chunk_mask[:, -1] = True  # rows not in this call run one masked filler token (finite softmax), dropped below
    max_new = np.ones((self.batch,), np.int32)
    stops = np.full((self.batch, max(1, len(self.stop_ids))), -1, np.int32)
    stops[:, :len(self.stop_ids)] = self.stop_ids
    for r, tokens, b in zip(rows, new, budgets):
      chunk[r, width - len(tokens):] = tokens
      chunk_mask[r] = False
      chunk_mask[r, width - len(tokens):] = True
      max_new[r] = b
    lengths = np.asarray([len(c) for c in self.cached], np.int32)
    if rng is None:
      self._rng, rng = jax.random.split(self._rng)
    valid, lengths, chunk, chunk_mask, max_new, stops = place_rows(
        (self.valid, lengths, chunk, chunk_mask, max_new, stops), self.row_sharding)
    out_tokens, out_logprobs, self.cache = _continue(
        self.graphdef, self.state, self.cache, valid, lengths, jnp.int32(self.cursor), chunk, chunk_mask, max_new,
        stops, jnp.int32(self.pad_id), rng, sampling=self.gen.sampling, num_new=num_new)
    out_tokens, out_logprobs = np.asarray(out_tokens), np.asarray(out_logprobs)
    self.prefilled_tokens += sum(len(x) for x in new)

    result_tokens, result_logprobs, reasons = [], [], []
    first_decode_slot = self.cursor + width
    for r, prompt, tokens, b in zip(rows, prompts, new, budgets):
      generated, logprobs, reason = trim_at_stop(out_tokens[r], out_logprobs[r], b, self.stop_ids)
      result_tokens.append(generated)
      result_logprobs.append(logprobs)
      reasons.append(reason)
      # Cached now: the chunk's tokens and every generated token but the last (a token's keys are written when
      # it is fed back, one step later; the last one may not have been).
      chunk_slots = list(range(first_decode_slot - len(tokens), first_decode_slot))
      fed = len(generated) - 1
      self.slots_of[r] += chunk_slots + list(range(first_decode_slot, first_decode_slot + fed))
      self.cached[r] = list(prompt) + generated[:fed].tolist()
      self.valid[r, chunk_slots] = True
      self.valid[r, first_decode_slot:first_decode_slot + fed] = True
    self.cursor += width + num_new
    return GenerationOutput(result_tokens, result_logprobs, reasons)

  def _reuse_prefix(self, row: int, prompt: list[int]) -> list[int]:
    """Keeps the longest cached prefix of `prompt` (at least one token stays to prefill: its logits start the
    turn), un-caches the rest of the row, and returns the tokens still to prefill."""
    cached = self.cached[row]
    limit = min(len(cached), len(prompt) - 1)
    differ = np.flatnonzero(np.asarray(cached[:limit]) != np.asarray(prompt[:limit]))
    keep = int(differ[0]) if differ.size else limit
    for slot in self.slots_of[row][keep:]:
      self.valid[row, slot] = False
    del self.slots_of[row][keep:]
    del cached[keep:]
    return prompt[keep:]

  def _make_room(self, block: int) -> None:
    """Ensures `block` free slots after the cursor: allocate, or compact the valid slots into a larger bucket."""
    capacity = self.valid.shape[1]
    if self.cache is not None and self.cursor + block <= capacity:
      return
    kept = max((len(s) for s in self.slots_of), default=0)
    slots = 1 << max(6, int(np.ceil(np.log2(kept + block))))
    if self.cache is None or kept == 0:
      # Cache buffers are [B * Hkv, S, Dh], row-major over (row, head): split like the rows, each device holds
      # its own rows' heads.
      self.cache = init_cache(self.model_config, self.batch, slots, sharding=self.row_sharding)
    else:
      index = np.zeros((self.batch, kept), np.int32)
      for r, row_slots in enumerate(self.slots_of):
        index[r, :len(row_slots)] = row_slots
      self.cache = _compact(self.cache, place_rows(index, self.row_sharding),
                            num_kv_heads=self.model_config.num_kv_heads, slots=slots)
    self.valid = np.zeros((self.batch, slots), bool)
    for r, row_slots in enumerate(self.slots_of):
      self.valid[r, :len(row_slots)] = True
      self.slots_of[r] = list(range(len(row_slots)))
    self.cursor = kept
