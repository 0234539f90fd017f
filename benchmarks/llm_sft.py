"""SFT training throughput of SmolLM2-135M and its model FLOP utilisation against this machine's matmul peak.

    python -m benchmarks.llm_sft [--batch 8 --seq 256 --mode full]

Model FLOPs per trained token follow PaLM (Chowdhery et al. 2022, app. B): 6 N + 12 L d T, with N the weights
that take part in matmuls (every projection and the LM head; the embedding lookup is free) and the second term
the attention scores and values over T positions. LoRA updates no base weight, so its backward pass skips the
weight gradients: 4 N + 12 L d T (plus the adapters' own, negligible). The denominator is
`benchmarks.matmul_peak.measure_peak` in the compute dtype, measured right before and right after each timed
step (the shared machine's load moves it): the line's "peer" is the mean of the two, and both are printed
(`peak_before_gflops`, `peak_after_gflops`, and `mfu_range` against each).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import matmul_peak
from benchmarks.harness import emit, time_fn
from core.llm import lora, sft, weights
from core.train import optim
from core.train.state import create_train_state, make_train_step


def matmul_params(config) -> int:
  d, f, hd = config.hidden_size, config.intermediate_size, config.head_size
  attention = d * config.num_heads * hd * 2 + d * config.num_kv_heads * hd * 2
  per_layer = attention + 3 * d * f
  return config.num_layers * per_layer + d * config.vocab_size


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, nargs="+", default=[4, 16])
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--mode", choices=("full", "lora"), default="full")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  parser.add_argument("--iters", type=int, default=3)
  args = parser.parse_args()

  pretrained = weights.load_pretrained(dtype=args.dtype, param_dtype="float32")
  config = pretrained.config
  peak_dtype = jnp.float32 if args.dtype == "float32" else jnp.bfloat16
  n = matmul_params(config)
  for batch in args.batch:
    model = nnx.merge(pretrained.graphdef, jax.tree.map(jnp.copy, pretrained.state))
    trainable = nnx.Param
    if args.mode == "lora":
      lora.add_lora(model, rank=8, alpha=16.0)
      trainable = nnx.LoRAParam
    tx = optim.make_optimizer(optim.optimizer_config(name="adamw", learning_rate=1e-5), 100)
    graphdef, state = create_train_state(model, tx, trainable)
    # As core.train.loop runs it: the state donated and carried from step to step, so the new parameters and
    # moments reuse the old buffers instead of fresh memory each step.
    step = jax.jit(make_train_step(graphdef, sft.assistant_nll, tx, trainable), donate_argnums=(0,))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config.vocab_size, (batch, args.seq)).astype(np.int32)
    data = {"tokens": tokens, "attention_mask": np.ones_like(tokens), "loss_mask": np.ones_like(tokens)}
    carried = [state]

    def train_step(step=step, data=data, carried=carried):
      carried[0], metrics = step(carried[0], data, jax.random.key(0))
      return metrics["loss"]

    start = time.perf_counter()  # compile before the first peak measurement, not between it and the timed calls
    jax.block_until_ready(train_step())
    compile_s = time.perf_counter() - start
    peak_before = matmul_peak.measure_peak(peak_dtype)
    timing = time_fn(train_step, warmup=1, iters=args.iters)
    peak_after = matmul_peak.measure_peak(peak_dtype)
    peak = (peak_before + peak_after) / 2
    tokens_per_s = batch * args.seq / timing.median_s
    weight_factor = 6 if args.mode == "full" else 4
    flops_per_token = weight_factor * n + 12 * config.num_layers * config.hidden_size * args.seq
    achieved = tokens_per_s * flops_per_token / 1e9
    emit("llm_sft", f"SmolLM2-135M {args.mode} SFT step, batch {batch} x {args.seq} tokens, {args.dtype}",
         achieved, unit="GFLOP/s (model FLOPs)", peer=f"measured {args.dtype} matmul peak", peer_value=peak,
         tokens_per_s=tokens_per_s, compile_s=compile_s, compiles_during_timing=timing.compiles_during_timing,
         mfu=achieved / peak, peak_before_gflops=peak_before, peak_after_gflops=peak_after,
         mfu_range=[achieved / max(peak_before, peak_after), achieved / min(peak_before, peak_after)], batch=batch,
         seq=args.seq)
    del state, model, carried


if __name__ == "__main__":
  main()
