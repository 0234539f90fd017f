"""Supervised fine-tuning on chat records: loss on assistant tokens only, length buckets, full or LoRA.

The objective is the mean negative log-likelihood of the assistant tokens of each ChatML conversation
(`-sum_t m_t log p(x_t | x_<t) / sum_t m_t`, with m_t = 1 on assistant content and its closing `<|im_end|>`),
the standard SFT loss of instruction tuning (Ouyang et al. 2022, sec. 3.5). System and user tokens are context,
never targets. Examples are grouped into length buckets (each batch is padded only to its bucket's length, and
each bucket compiles once), shuffled deterministically by seed and epoch, and the iterator's position is
checkpointed with the state so a resumed run sees the same batches. Training runs on `core.train`: AdamW from
the config, gradient clipping, checkpoints, resume, NaN stop, metrics. With `sft.mode = "lora"` only the
adapters of `core/llm/lora.py` train; `export` merges them into the base weights and writes safetensors.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from core import config as config_lib
from core import sharding as sharding_lib
from core.llm import lora, scoring, weights
from core.llm.model import Llama, positions_from_mask
from core.train import loop, optim
from core.train.state import create_train_state, make_train_step, model_from_state

MODES = ("full", "lora")


def sft_config(**overrides) -> ml_collections.ConfigDict:
  """The `sft` config section."""
  return config_lib.section("sft", dict(
      mode="lora", lora_rank=8, lora_alpha=16.0, lora_targets=lora.TARGETS,
      length_buckets=(64, 128, 256, 512), batch_size=8), overrides)


def validate_sft_config(config: ml_collections.ConfigDict) -> None:
  config_lib.check_choice(config, "sft.mode", MODES)
  config_lib.check_positive(config, "sft.lora_rank")
  config_lib.check_positive(config, "sft.lora_alpha")
  config_lib.check(config, "sft.lora_targets", lambda t: len(t) > 0 and set(t) <= set(lora.TARGETS),
                   f"must be a non-empty subset of {lora.TARGETS}")
  config_lib.check(config, "sft.length_buckets", lambda b: len(b) > 0 and list(b) == sorted(b) and min(b) > 1,
                   "must be increasing lengths > 1")
  config_lib.check_divisible(config, "sft.batch_size", jax.device_count(), "the number of devices")
  optim.validate_optimizer_config(config, num_steps=config.train.num_steps)
  loop.validate_train_config(config)
  sharding_lib.validate_mesh_config(config)


# ---- tokenization with the assistant mask ----------------------------------------------------------------

def tokenize_chat(tokenizer, messages: Sequence[Mapping[str, str]]) -> tuple[np.ndarray, np.ndarray]:
  """(token ids, loss mask) of one conversation in ChatML; mask = 1 on assistant content and its `<|im_end|>`.

  The ids are exactly `tokenizer.encode_chat(messages, add_generation_prompt=False)`, those of inference, and the
  mask is taken from character offsets within each message's "{role}\n{content}" piece, not by tokenizing the
  content apart from its header, which could split words differently. One boundary case: a reply that starts
  with whitespace shares its first token with the header's newline (byte-level BPE merges "\n" + " " into one
  token); that token lies partly outside the reply, so it is not trained on, and the reply is learned from its
  first non-space token on. Strip leading whitespace from replies to avoid it.
  """
  ids, mask = list(tokenizer.start_ids), [0] * len(tokenizer.start_ids)  # a BOS token is never trained on
  reply_ended = False  # the special token after an assistant piece is its <|im_end|>, which is trained on
  for piece in tokenizer.chat_pieces(list(messages), add_generation_prompt=False):
    piece_ids, offsets = tokenizer.encode_with_offsets(piece.text, special_tokens=piece.special)
    if piece.special:
      mask += [int(reply_ended)] * len(piece_ids)
      reply_ended = False
    else:
      trained = piece.role == "assistant"
      mask += [int(trained and a >= piece.content_start and b > a) for a, b in offsets]
      reply_ended = trained
    ids += piece_ids
  if not any(mask):
    raise ValueError("a training conversation has no assistant message: nothing to learn. Fix: add one.")
  return np.asarray(ids, np.int32), np.asarray(mask, np.int32)


def padded_lengths(longest: int, per_doubling: int = 1, minimum: int = 64) -> tuple[int, ...]:
  """Padded lengths from `minimum` up to the first that holds `longest`: the powers of two, each doubling above
  `minimum` cut into `per_doubling` equal steps (4: ..., 256, 320, 384, 448, 512, 640, ...). Finer steps pad less
  (attention and matmuls cost ~ the padded length) and compile more programs."""
  if per_doubling < 1 or minimum < 1:
    raise ValueError(f"length buckets need per_doubling >= 1 and minimum >= 1, got {per_doubling} and {minimum}.")
  out, low = [minimum], minimum
  while out[-1] < longest:
    out.extend(b for b in sorted({low + low * i // per_doubling for i in range(1, per_doubling + 1)}) if b > low)
    low *= 2
  return tuple(b for i, b in enumerate(out) if i == 0 or out[i - 1] < longest)


def padded_length(length: int, per_doubling: int = 1, minimum: int = 64) -> int:
  """The smallest of `padded_lengths` that holds `length`."""
  return padded_lengths(length, per_doubling, minimum)[-1]


def _promote_starved(bucket_of: np.ndarray, buckets: Sequence[int], batch_size: int) -> np.ndarray:
  """Bucket of each example after moving the examples of buckets too small for one batch up to wider buckets
  (more padding, never truncation). If the widest bucket is still short, the next narrower bucket joins it."""
  bucket_of = bucket_of.copy()
  used = [b for b in buckets if (bucket_of == b).any()]
  for narrow, wide in zip(used, used[1:]):
    if (bucket_of == narrow).sum() < batch_size:
      bucket_of[bucket_of == narrow] = wide
  used = [b for b in buckets if (bucket_of == b).any()]
  while len(used) > 1 and (bucket_of == used[-1]).sum() < batch_size:
    bucket_of[bucket_of == used[-2]] = used[-1]
    used.pop(-2)
  return bucket_of


class BucketedBatches:
  """Endless, seeded, checkpointable batches of right-padded examples grouped by length bucket.

  Each epoch shuffles every bucket's examples with `default_rng([seed, epoch])`, cuts them into full batches
  (the remainder of a bucket waits for the next epoch's shuffle) and shuffles the order of the batches. A bucket
  with fewer examples than a batch would never be served: its examples move up to the next wider bucket
  (`_promote_starved`), so every example is trained on.

  `batch_size` is the global batch. On several processes every process draws the same plan (same seed) and
  serves its own `batch_size // shard_count` rows of each global batch (rows `shard_index * n` onwards), all at
  the global batch's bucket width, so that `core.sharding.shard_batch` assembles exactly the one-process batch.
  `shard_index`/`shard_count` default to `jax.process_index()`/`jax.process_count()`; pass 0 and 1 where every
  process should see the whole batch (a step that is not sharded over processes).
  """

  def __init__(self, examples: Sequence[tuple[np.ndarray, np.ndarray]], buckets: Sequence[int], batch_size: int,
               pad_id: int, seed: int, *, shard_index: int | None = None, shard_count: int | None = None):
    self.shard_count = jax.process_count() if shard_count is None else int(shard_count)
    self.shard_index = jax.process_index() if shard_index is None else int(shard_index)
    if not 0 <= self.shard_index < self.shard_count:
      raise ValueError(f"shard_index {self.shard_index} is outside [0, shard_count = {self.shard_count}). Fix: pass "
                       "the process's index (jax.process_index()) and the process count.")
    if batch_size % self.shard_count:
      raise ValueError(f"the global batch of {batch_size} examples cannot be split evenly over {self.shard_count} "
                       f"processes. Fix: make sft.batch_size a multiple of {self.shard_count}.")
    self.buckets, self.batch_size, self.pad_id, self.seed = tuple(buckets), batch_size, pad_id, seed
    self.local_batch_size = batch_size // self.shard_count
    self.examples = list(examples)
    self.bucket_of = []
    for i, (ids, _) in enumerate(self.examples):
      fits = [b for b in self.buckets if b >= len(ids)]
      if not fits:
        raise ValueError(f"example {i} has {len(ids)} tokens, above the largest length bucket {self.buckets[-1]}. "
                         f"Fix: add a bucket >= {len(ids)} to sft.length_buckets or drop long examples.")
      self.bucket_of.append(fits[0])
    self.bucket_of = _promote_starved(np.asarray(self.bucket_of), self.buckets, batch_size)
    # Full batches per bucket do not depend on the shuffle, so every epoch has the same number of batches.
    self.batches_per_epoch = sum(int((self.bucket_of == b).sum()) // batch_size for b in self.buckets)
    if self.batches_per_epoch == 0:
      raise ValueError(f"no length bucket holds a full batch of {batch_size} examples ({len(self.examples)} "
                       "examples in all). Fix: lower sft.batch_size or add data.")
    self.position = 0  # batches handed out so far
    self._epoch, self._plan = None, []

  def _epoch_plan(self, epoch: int) -> list[np.ndarray]:
    rng = np.random.default_rng([self.seed, epoch])
    batches = []
    for bucket in self.buckets:
      members = rng.permutation(np.flatnonzero(self.bucket_of == bucket))
      for start in range(0, len(members) - self.batch_size + 1, self.batch_size):
        batches.append(members[start:start + self.batch_size])
    return [batches[i] for i in rng.permutation(len(batches))]

  def _batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    width = int(self.bucket_of[rows[0]])
    tokens = np.full((len(rows), width), self.pad_id, np.int32)
    attention, loss_mask = np.zeros_like(tokens), np.zeros_like(tokens)
    for r, index in enumerate(rows):
      ids, mask = self.examples[index]
      tokens[r, :len(ids)], attention[r, :len(ids)], loss_mask[r, :len(ids)] = ids, 1, mask
    return {"tokens": tokens, "attention_mask": attention, "loss_mask": loss_mask}

  def _epoch_batches(self):
    """Every example once, in order, one per batch (batch_size 1): for evaluation."""
    for index in range(len(self.examples)):
      yield self._batch(np.asarray([index]))

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    epoch, index = divmod(self.position, self.batches_per_epoch)
    if epoch != self._epoch:
      self._epoch, self._plan = epoch, self._epoch_plan(epoch)
    self.position += 1
    rows = self._plan[index]
    start = self.shard_index * self.local_batch_size
    return self._batch(rows[start:start + self.local_batch_size])

  def get_state(self) -> dict[str, int]:
    return {"position": self.position}

  def set_state(self, state: Mapping[str, int]) -> None:
    self.position = int(state["position"])


# ---- the loss -------------------------------------------------------------------------------------------

def assistant_nll(model: Llama, batch: Mapping[str, jax.Array], rng: jax.Array):
  """Mean NLL over masked tokens; also the number of target tokens (for throughput)."""
  del rng
  mask = batch["attention_mask"].astype(bool)
  logits, _ = model(batch["tokens"], positions_from_mask(mask), mask)
  logprobs = scoring.logprobs_from_logits(logits, batch["tokens"])
  weight = scoring.score_weight(batch)
  count = jnp.maximum(weight.sum(), 1.0)
  return -(logprobs * weight).sum() / count, {"target_tokens": weight.sum()}


# ---- training -------------------------------------------------------------------------------------------

def prepare_model(pretrained: weights.Pretrained, sft: ml_collections.ConfigDict, seed: int) -> tuple[Llama, Any]:
  """The model to train (a copy: training donates its buffers) and the NNX filter of its trainable variables."""
  if sft.mode == "full" and (pretrained.config.weight_format != "float" or pretrained.config.embed_format != "float"):
    # Quantized matrices are not nnx.Params: "full" fine-tuning would silently train only the norms.
    raise ValueError(f"full fine-tuning needs float weights, but this model stores weight_format="
                     f"{pretrained.config.weight_format!r}, embed_format={pretrained.config.embed_format!r}. Fix: load "
                     "it with weight_format='float' and embed_format='float'.")
  model = nnx.merge(pretrained.graphdef, jax.tree.map(jnp.copy, pretrained.state))
  if sft.mode == "lora":
    lora.add_lora(model, rank=sft.lora_rank, alpha=sft.lora_alpha, targets=sft.lora_targets, seed=seed)
    return model, nnx.LoRAParam
  return model, nnx.Param


def finetune(config: ml_collections.ConfigDict, workdir: str, records: Iterable[Mapping[str, Any]],
             pretrained: weights.Pretrained) -> tuple[Llama, dict[str, Any]]:
  """Fine-tunes `pretrained` on chat `records` ({"messages": [...]}) with `core.train`; returns the trained
  model (adapters not merged) and a summary."""
  validate_sft_config(config)
  tokenizer = weights.text_tokenizer(pretrained)
  examples = [tokenize_chat(tokenizer, r["messages"]) for r in records]
  batches = BucketedBatches(examples, config.sft.length_buckets, config.sft.batch_size, pad_id=tokenizer.pad_id,
                            seed=config.seed)
  model, trainable = prepare_model(pretrained, config.sft, config.seed)
  tx = optim.make_optimizer(config.optimizer, config.train.num_steps)
  graphdef, state = create_train_state(model, tx, trainable)
  step = make_train_step(graphdef, assistant_nll, tx, trainable)
  state = loop.run_training(workdir=workdir, config=config.train, state=state, step_fn=step, batches=batches,
                            seed=config.seed, mesh=sharding_lib.mesh_from_config(config.mesh),
                            fsdp_min_size=config.mesh.fsdp_min_size)
  trained = model_from_state(graphdef, state)
  summary = {"mode": config.sft.mode, "steps": int(state.step), "examples": len(examples),
             "trainable_params": int(sum(x.size for x in jax.tree.leaves(state.params)))}
  return trained, summary


def export(model: Llama, directory: str, tokenizer=None) -> str:
  """Merges LoRA adapters (if any) into the base weights and writes a Hugging Face safetensors directory."""
  lora.merge_lora(model)
  weights.save_pretrained(model, directory, tokenizer=tokenizer)
  return directory


def read_chat_records(path: str) -> list[dict[str, Any]]:
  """JSONL of {"messages": [{"role": ..., "content": ...}, ...]} records (the common SFT data format)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"SFT data file {path!r} does not exist. Fix: pass --config.data.path=<a JSONL file of "
                            '{"messages": [...]} records> or leave it empty for the built-in quiz data.')
  records = []
  with open(path) as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path} line {number} is not JSON ({e.msg} at column {e.colno}). Fix: one "
                         '{"messages": [...]} record per line.') from None
      if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise ValueError(f"{path} line {number}: expected {{\"messages\": [...]}}, got {str(record)[:80]!r}.")
      records.append(record)
  return records


CAPITAL_QUIZZES = ("africa", "america", "asia", "europe")


def capital_chat_records(quizzes: Sequence[str] = CAPITAL_QUIZZES) -> list[dict[str, Any]]:
  """Real question/answer chats from the bsdgames capital quizzes (Debian `bsdgames`): "What is the capital of
  Albania?" -> "The capital of Albania is Tirana." A small built-in SFT set for demos and tests."""
  from core.data import canonical_text, load_quiz
  records = []
  for name in quizzes:
    for row in load_quiz(name):
      country_field, capital_field = list(row)[:2]
      country, capital = canonical_text(row[country_field]), canonical_text(row[capital_field])
      records.append({"messages": [
          {"role": "user", "content": f"What is the capital of {country}?"},
          {"role": "assistant", "content": f"The capital of {country} is {capital}."}]})
  return records


def data_config(**overrides) -> ml_collections.ConfigDict:
  """The `data` section: `path` of a JSONL file of chat records, or '' for the built-in capital quizzes;
  `eval_fraction` of the records is held out to measure the loss before and after."""
  return config_lib.section("data", dict(path="", eval_fraction=0.1, max_records=0), overrides)


def heldout_loss(model: Llama, batches: Sequence[Mapping[str, np.ndarray]]) -> float:
  graphdef, state = nnx.split(model)

  @jax.jit
  def batch_loss(state, batch):
    loss, metrics = assistant_nll(nnx.merge(graphdef, state), batch, None)
    return loss * metrics["target_tokens"], metrics["target_tokens"]

  total = count = 0.0
  for batch in batches:
    loss_sum, tokens = batch_loss(state, batch)
    total, count = total + float(loss_sum), count + float(tokens)
  return total / max(count, 1.0)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """What `python -m core.llm.finetune` runs: load, split, fine-tune, held-out loss before/after, export."""
  validate_sft_config(config)
  config_lib.check_existing_path(config, "model.source", allow_empty=True)
  config_lib.check_existing_path(config, "data.path", allow_empty=True)
  pretrained = weights.load_from_config(config.model)
  records = read_chat_records(config.data.path) if config.data.path else capital_chat_records()
  order = np.random.default_rng(config.seed).permutation(len(records))
  if config.data.max_records:
    order = order[:config.data.max_records]
  n_eval = max(1, int(len(order) * config.data.eval_fraction))
  eval_records = [records[i] for i in order[:n_eval]]
  train_records = [records[i] for i in order[n_eval:]]
  tokenizer = weights.text_tokenizer(pretrained)
  eval_batches = list(BucketedBatches([tokenize_chat(tokenizer, r["messages"]) for r in eval_records],
                                      config.sft.length_buckets, 1, tokenizer.pad_id, seed=0)._epoch_batches())
  before = heldout_loss(pretrained.model(), eval_batches)
  model, summary = finetune(config, workdir, train_records, pretrained)
  after = heldout_loss(model, eval_batches)
  export_dir = os.path.join(workdir, "export")
  export(model, export_dir, tokenizer)
  results = {**summary, "heldout_examples": n_eval, "heldout_loss_before": before, "heldout_loss_after": after,
             "export": export_dir}
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  return results
