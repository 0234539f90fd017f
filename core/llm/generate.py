"""Batched autoregressive generation with a KV cache: one jitted prefill over the left-padded prompts, then a
`lax.while_loop` of one-token decode steps (Pope et al. 2022, "Efficiently Scaling Transformer Inference",
arXiv 2211.05102, sec. 2: prefill vs. incremental decode).

Prompts of different lengths share a batch by left padding: every row's last prompt token sits in the same slot,
so one decode step writes one cache slot for all rows; per-row RoPE positions and a slot mask keep padded rows
exact. Batch size, prompt length and the number of new tokens are rounded up to configured buckets, so the jitted
program compiles once per bucket and is reused across calls. Rows stop at their own stop tokens or their own
token budget; the loop ends when every row is done.

Given a device `mesh` (`core.sharding`), the rows are split over all its devices (data-parallel generation: each
device prefills and decodes its share of the rows, the weights as the caller laid them out); a row bucket that
the device count does not divide runs replicated. Sampling keys are partitionable, so the output does not depend
on the mesh.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from core import sharding as sharding_lib
from core.llm.config import LlamaConfig
from core.llm.model import forward, init_cache, positions_from_mask
from core.llm.sampling import SamplingParams, sample
from core.llm import weights


class GenerationError(ValueError):
  """A prompt or a generation setting cannot be served as given."""


def row_sharding(mesh: jax.sharding.Mesh | None, batch: int) -> jax.sharding.NamedSharding | None:
  """`core.sharding.batch_sharding(mesh)` (rows split over every device) for a batch of `batch` rows; None without
  a mesh, on one device, or when the device count does not divide the batch (the rows then run replicated)."""
  if mesh is None or mesh.size == 1 or batch % mesh.size:
    return None
  return sharding_lib.batch_sharding(mesh)


def weights_mesh(state: Any) -> jax.sharding.Mesh | None:
  """The mesh a model state is laid out on (`core.sharding` placed it), or None for weights on one device: what
  callers pass as `mesh=` to generate on the devices that hold the weights."""
  leaves = jax.tree.leaves(state)
  placed = getattr(leaves[0], "sharding", None) if leaves else None
  return placed.mesh if isinstance(placed, jax.sharding.NamedSharding) else None


def place_rows(rows: Any, sharding: jax.sharding.NamedSharding | None) -> Any:
  """Host arrays whose first axis is the batch (a pytree of them) onto `row_sharding`'s devices; plain device
  arrays when it is None."""
  if sharding is None:
    return jax.tree.map(jnp.asarray, rows)
  # From the whole host array each process fills the shards of its own devices (also right on several hosts).
  return jax.tree.map(lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda index: x[index]),
                      jax.tree.map(np.asarray, rows))


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
  """Every number generation uses.

  Attributes:
    max_new_tokens: budget of new tokens per row (a per-row list may lower it per call).
    temperature, top_k, top_p: sampling (0 / 0 / 1.0 = greedy), see sampling.py.
    seed: PRNG seed used when no key is passed.
    prompt_buckets: prompt lengths are padded up to the next of these (ascending).
    batch_buckets: batch sizes are padded up to the next of these; larger batches run in chunks of the last.
    new_token_buckets: the decode loop's length is padded up to the next of these.
    truncate_prompt: drop the oldest prompt tokens to fit the context window instead of raising.
  """
  max_new_tokens: int = 64
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0
  prompt_buckets: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
  batch_buckets: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
  new_token_buckets: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048)
  truncate_prompt: bool = False

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise GenerationError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
    for name in ("prompt_buckets", "batch_buckets", "new_token_buckets"):
      b = tuple(getattr(self, name))
      if not b or list(b) != sorted(b) or b[0] < 1:
        raise GenerationError(f"GenerationConfig.{name}={b} must be a non-empty ascending tuple of positive ints.")
      object.__setattr__(self, name, b)
    self.sampling  # validates temperature / top_k / top_p

  @property
  def sampling(self) -> SamplingParams:
    return SamplingParams(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "GenerationConfig":
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - valid)
    if unknown:
      raise GenerationError(f"unknown generation setting(s) {unknown}; valid: {sorted(valid)}.")
    return cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in dict(values).items()})


def generation_config(**values: Any):
  """The `generation` block of an experiment config: every GenerationConfig field, defaults overridden by
  `values` (unknown names fail)."""
  import ml_collections
  return ml_collections.ConfigDict(GenerationConfig.from_dict(values).to_dict())


@dataclasses.dataclass
class GenerationOutput:
  """Per row: generated ids (ending with the stop token when one was produced), their log-probs under the
  model, and why generation ended ('stop' or 'length')."""
  tokens: list[np.ndarray]
  logprobs: list[np.ndarray]
  finish_reasons: list[str]


def bucket(n: int, buckets: Sequence[int], what: str) -> int:
  i = bisect.bisect_left(buckets, n)
  if i == len(buckets):
    raise GenerationError(f"{what} {n} exceeds the largest bucket {buckets[-1]}. Fix: add a larger bucket to "
                          f"the generation config, or shorten the input.")
  return buckets[i]


@functools.partial(jax.jit, static_argnames=("graphdef", "model_config", "sampling", "num_new"))
def _generate_padded(graphdef, state, tokens, prompt_mask, max_new, stop_ids, pad_id, rng, *,
                     model_config: LlamaConfig, sampling: SamplingParams, num_new: int):
  """The jitted program of one bucket: prefill + while-loop decode. Shapes: tokens/prompt_mask [B, T] (left
  padded), max_new [B], stop_ids [B, K] (-1 = unused). Returns (tokens [B, N], log-probs [B, N], done [B])."""
  batch, prompt_len = tokens.shape
  slots = prompt_len + num_new
  kv_mask = jnp.concatenate([prompt_mask, jnp.zeros((batch, num_new), bool)], axis=1)
  lengths = prompt_mask.sum(axis=1).astype(jnp.int32)
  cache = init_cache(model_config, batch, slots)
  logits, cache = forward(graphdef, state, tokens, positions_from_mask(prompt_mask), kv_mask, cache, 0,
                          last_only=True)
  out_tokens, out_logprobs, done, _ = _decode(graphdef, state, logits, cache, kv_mask, lengths, prompt_len,
                                              max_new, stop_ids, pad_id, rng, sampling, num_new)
  return out_tokens, out_logprobs, done


def _decode(graphdef, state, logits, cache, kv_mask, lengths, first_slot, max_new, stop_ids, pad_id, rng,
            sampling: SamplingParams, num_new: int):
  """Samples the first token from the prefill's last `logits`, then decodes in a `lax.while_loop`: step j feeds
  token j - 1 at slot `first_slot + j - 1` and RoPE position `lengths + j - 1` (lengths = real tokens before
  it). Returns (tokens [B, N], log-probs [B, N], done [B], cache)."""
  batch = logits.shape[0]
  rng, key = jax.random.split(rng)
  token, logprob = sample(logits[:, 0], key, sampling)

  def is_stop(tok):
    return jnp.any(tok[:, None] == stop_ids, axis=1)

  out_tokens = jnp.full((batch, num_new), pad_id, jnp.int32).at[:, 0].set(token)
  out_logprobs = jnp.zeros((batch, num_new), jnp.float32).at[:, 0].set(logprob)
  done = is_stop(token) | (max_new <= 1)

  def cond(carry):
    step, _, done, *_ = carry
    return (step < num_new) & ~jnp.all(done)

  def body(carry):
    step, token, done, cache, kv_mask, rng, out_tokens, out_logprobs = carry
    slot = first_slot + step - 1  # where the previous token goes
    kv_mask = jax.lax.dynamic_update_slice(kv_mask, jnp.ones((batch, 1), bool), (0, slot))
    positions = (lengths + step - 1)[:, None]
    logits, cache = forward(graphdef, state, token[:, None], positions, kv_mask, cache, slot)
    rng, key = jax.random.split(rng)
    new_token, logprob = sample(logits[:, 0], key, sampling)
    new_token = jnp.where(done, pad_id, new_token)
    logprob = jnp.where(done, 0.0, logprob)
    out_tokens = jax.lax.dynamic_update_slice(out_tokens, new_token[:, None], (0, step))
    out_logprobs = jax.lax.dynamic_update_slice(out_logprobs, logprob[:, None], (0, step))
    done = done | is_stop(new_token) | (step + 1 >= max_new)
    return step + 1, new_token, done, cache, kv_mask, rng, out_tokens, out_logprobs

  carry = (jnp.int32(1), token, done, cache, kv_mask, rng, out_tokens, out_logprobs)
  _, _, done, cache, _, _, out_tokens, out_logprobs = jax.lax.while_loop(cond, body, carry)
  return out_tokens, out_logprobs, done, cache


def compiled_programs() -> int:
  """How many generation programs are compiled so far (one per bucket and sampling setting)."""
  return _generate_padded._cache_size()


TRUNCATE_FIX = "shorten the prompt, lower max_new_tokens, or set truncate_prompt=True to keep only its last tokens"


def prepare_prompts(prompts: Sequence[Sequence[int]], vocab_size: int, context: int, max_new: Sequence[int],
                    truncate: bool, too_long_fix: str = TRUNCATE_FIX) -> list[list[int]]:
  """Validates token-id prompts against the vocabulary and context window (optionally left-truncating);
  `too_long_fix` is what the error for an over-long prompt tells the caller to do."""
  out = []
  for i, (prompt, budget) in enumerate(zip(prompts, max_new)):
    ids = np.asarray(prompt, np.int64).reshape(-1)  # vectorized checks: rollouts pass long histories every turn
    if not ids.size:
      raise GenerationError(f"prompt {i} is empty: generation needs at least one token to condition on. Fix: pass "
                            "text (the chat format always yields tokens) or start the prompt with the BOS id.")
    outside = (ids < 0) | (ids >= vocab_size)
    if outside.any():
      raise GenerationError(f"prompt {i} holds token id(s) {ids[outside][:5].tolist()} outside the vocabulary "
                            f"[0, {vocab_size}). Fix: encode text with this model's own tokenizer.")
    prompt = ids.tolist()
    if budget < 1:
      raise GenerationError(f"max_new_tokens for prompt {i} is {budget}; it must be >= 1.")
    room = context - budget
    if room < 1:
      raise GenerationError(f"max_new_tokens for prompt {i} is {budget}, which leaves no room for a prompt in the "
                            f"context window of {context}. Fix: lower max_new_tokens below {context}.")
    if len(prompt) > room:
      if not truncate:
        raise GenerationError(f"prompt {i} has {len(prompt)} tokens; with {budget} new tokens it exceeds the context "
                              f"window of {context}. Fix: {too_long_fix}.")
      prompt = prompt[-room:]
    out.append(prompt)
  return out


def generate(graphdef: nnx.GraphDef, state: nnx.State, model_config: LlamaConfig,
             prompts: Sequence[Sequence[int]], gen: GenerationConfig, *, stop_ids: Sequence[Any] = (),
             pad_id: int = 0, max_new_tokens: Sequence[int] | None = None,
             rng: jax.Array | None = None, mesh: jax.sharding.Mesh | None = None) -> GenerationOutput:
  """Generates continuations of token-id prompts.

  Args:
    graphdef, state: the split model (`nnx.split`).
    model_config: its LlamaConfig (static sizes for the cache).
    prompts: token ids per row, any lengths.
    gen: GenerationConfig (sampling, buckets, budget).
    stop_ids: ids that end a row: a flat list shared by all rows, or one list per row.
    pad_id: filler after a row stops (never returned).
    max_new_tokens: optional per-row budgets (each <= gen.max_new_tokens).
    rng: PRNG key for sampling; default `jax.random.key(gen.seed)`.
    mesh: optional device mesh; the rows of each batch are split over its devices (see the module docstring).
  """
  n = len(prompts)
  if n == 0:
    return GenerationOutput([], [], [])
  budgets = list(max_new_tokens) if max_new_tokens is not None else [gen.max_new_tokens] * n
  if len(budgets) != n:
    raise GenerationError(f"max_new_tokens has {len(budgets)} entries for {n} prompts.")
  if max(budgets) > gen.max_new_tokens:
    raise GenerationError(f"a per-row max_new_tokens ({max(budgets)}) exceeds gen.max_new_tokens "
                          f"({gen.max_new_tokens}).")
  prompts = prepare_prompts(prompts, model_config.vocab_size, model_config.max_seq_len, budgets,
                            gen.truncate_prompt)
  # Per-row stop lists: a sequence of sequences (lists, tuples or arrays); else one list for every row.
  per_row = stop_ids is not None and len(stop_ids) > 0 and np.ndim(stop_ids[0]) == 1
  per_row_stops = [[int(i) for i in s] for s in stop_ids] if per_row else [[int(i) for i in stop_ids]] * n
  if len(per_row_stops) != n:
    raise GenerationError(f"stop_ids has {len(per_row_stops)} rows for {n} prompts.")
  rng = jax.random.key(gen.seed) if rng is None else rng
  chunk = gen.batch_buckets[-1]
  tokens, logprobs, reasons = [], [], []
  for start in range(0, n, chunk):
    rng, key = jax.random.split(rng)
    out = _generate_chunk(graphdef, state, model_config, prompts[start:start + chunk],
                          budgets[start:start + chunk], per_row_stops[start:start + chunk], pad_id, gen, key, mesh)
    for part, dest in zip(out, (tokens, logprobs, reasons)):
      dest.extend(part)
  return GenerationOutput(tokens, logprobs, reasons)


def _generate_chunk(graphdef, state, model_config, prompts, budgets, stops, pad_id, gen, rng, mesh=None):
  n = len(prompts)
  batch = bucket(n, gen.batch_buckets, "batch size")
  prompt_len = bucket(max(len(p) for p in prompts), gen.prompt_buckets, "prompt length")
  num_new = bucket(max(budgets), gen.new_token_buckets, "max_new_tokens")
  width = max(1, max(len(s) for s in stops))
  tokens = np.full((batch, prompt_len), pad_id, np.int32)
  mask = np.zeros((batch, prompt_len), bool)
  max_new = np.ones((batch,), np.int32)  # filler rows stop after one token
  stop_arr = np.full((batch, width), -1, np.int32)
  for i, (p, b, s) in enumerate(zip(prompts, budgets, stops)):
    tokens[i, prompt_len - len(p):] = p
    mask[i, prompt_len - len(p):] = True
    max_new[i] = b
    stop_arr[i, :len(s)] = s
  mask[n:, -1] = True  # filler rows attend to one (pad) token so their softmax stays finite
  out_tokens, out_logprobs, _ = _generate_padded(
      graphdef, state, *place_rows((tokens, mask, max_new, stop_arr), row_sharding(mesh, batch)),
      jnp.int32(pad_id), rng, model_config=model_config, sampling=gen.sampling, num_new=num_new)
  out_tokens, out_logprobs = np.asarray(out_tokens), np.asarray(out_logprobs)
  rows = [trim_at_stop(out_tokens[i], out_logprobs[i], budgets[i], stops[i]) for i in range(n)]
  return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def trim_at_stop(tokens: np.ndarray, logprobs: np.ndarray, budget: int,
                 stops: Sequence[int]) -> tuple[np.ndarray, np.ndarray, str]:
  """One row of a decode program's output cut to what the row produced: up to and including its first stop
  token ('stop'), else its whole budget ('length')."""
  row = tokens[:budget]
  hits = np.flatnonzero(np.isin(row, stops)) if len(stops) else np.array([], int)
  end = int(hits[0]) + 1 if hits.size else budget
  return row[:end].copy(), logprobs[:end].copy(), "stop" if hits.size else "length"


# ---------------------------------------------------------------------------------------------------------------
# Text level


def generate_text(pretrained, prompts: Sequence[str], gen: GenerationConfig, *,
                  rng: jax.Array | None = None) -> list[str]:
  """Raw-text continuations (no chat format) of `prompts` with a `weights.Pretrained`."""
  tok = weights.text_tokenizer(pretrained)
  out = generate(pretrained.graphdef, pretrained.state, pretrained.config, tok.encode_prompts(prompts), gen,
                 stop_ids=tok.stop_ids, pad_id=tok.pad_id, rng=rng)
  return [tok.decode(t) for t in out.tokens]


def _fit_messages(tok, messages: list[Mapping[str, str]], room: int) -> list[int]:
  """The ChatML ids of `messages` without their oldest non-system messages, as few dropped as fit `room`; a reply
  whose question was dropped goes with it, so the kept history opens with a user turn."""
  def oldest() -> int | None:
    return next((i for i, m in enumerate(messages[:-1]) if m.get("role") != "system"), None)

  ids = tok.encode_chat(messages)
  while len(ids) > room and oldest() is not None:
    del messages[oldest()]
    while oldest() is not None and messages[oldest()].get("role") == "assistant":
      del messages[oldest()]
    ids = tok.encode_chat(messages)
  return ids


def chat(pretrained, conversations: Sequence[Sequence[Mapping[str, str]]], gen: GenerationConfig, *,
         rng: jax.Array | None = None) -> list[str]:
  """The assistant's reply to each conversation ([{'role', 'content'}, ...]) in ChatML format.

  With `gen.truncate_prompt`, a conversation too long for the context window loses its oldest whole messages after
  any system message (the latest one always stays), so the prompt keeps its BOS, its system message and whole
  turns; only a latest message that alone overflows is cut by `generate`'s token-level truncation."""
  tok = weights.text_tokenizer(pretrained)
  room = pretrained.config.max_seq_len - gen.max_new_tokens
  prompts = [_fit_messages(tok, list(c), room) if gen.truncate_prompt else tok.encode_chat(list(c))
             for c in conversations]
  out = generate(pretrained.graphdef, pretrained.state, pretrained.config, prompts, gen, stop_ids=tok.stop_ids,
                 pad_id=tok.pad_id, rng=rng)
  return [tok.decode(t).strip() for t in out.tokens]
