"""Generation speed and memory of core/llm against Hugging Face transformers, on the same weights and prompts.

Run by hand (about 10 minutes on 2 cores):

    python -m benchmarks.llm_generate [--config configs/llm/generate_bench.py[:quick]]

For each storage variant of configs/llm/generate_bench.py it prints JSON lines (benchmarks/harness.py): decode
tokens/s at batch 1 and 16, prefill tokens/s at batch 16, next to transformers `generate` (float32, torch threads
as configured) measured in the same run, with the variant's max |logit - fp32 logit| over the prompt batch and the
share of greedy tokens equal to fp32's; at batch 1 also next to llama.cpp (llama-cpp-python, the same GGUF file
as stored, its own quantized kernels) when it is installed; then the peak resident memory of 135M inference (one
subprocess each).

llama.cpp is an optional peer (its build takes ~7 minutes; on this machine its native build crashed in an AMX
path, so build it as):

    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON -DGGML_FMA=ON -DGGML_F16C=ON \
      -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" pip install llama-cpp-python==0.3.36 diskcache

Decode tokens/s = B * (N - 1) / (time(N new tokens) - time(1 new token)): the prefill and the first token are
subtracted, the same way on both sides; EOS is ignored on both sides so every row makes N tokens.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from benchmarks.harness import emit, time_fn
from core.llm import generate as G
from core.llm import weights
from core.llm.model import forward, positions_from_mask

_CONFIG = config_flags.DEFINE_config_file("config", "configs/llm/generate_bench.py", "benchmark config")
_PROBE = flags.DEFINE_string("memory_probe", None, "internal: run one variant (or 'transformers') and print its "
                             "peak RSS")

BENCH = "llm_generate"


def _prompts(tokenizer, questions):
  return [tokenizer.encode_chat([{"role": "user", "content": q}]) for q in questions]


def _padded(prompts, pad_id):
  width = max(len(p) for p in prompts)
  tokens = np.full((len(prompts), width), pad_id, np.int64)
  mask = np.zeros((len(prompts), width), np.int64)
  for i, p in enumerate(prompts):
    tokens[i, width - len(p):], mask[i, width - len(p):] = p, 1
  return tokens, mask


def _gen_config(config, n):
  values = dict(config.generation)
  values["max_new_tokens"] = n
  return G.GenerationConfig.from_dict(values)


def ours_runner(pre, prompts, config):
  def run(batch, n):
    return G.generate(pre.graphdef, pre.state, pre.config, prompts[:batch], _gen_config(config, n), stop_ids=[],
                      pad_id=pre.tokenizer.pad_id)
  return run


def peer_runner(hf_model, prompts, pad_id):
  import torch

  def run(batch, n):
    tokens, mask = _padded(prompts[:batch], pad_id)
    with torch.no_grad():
      return hf_model.generate(torch.tensor(tokens), attention_mask=torch.tensor(mask), max_new_tokens=n,
                               min_new_tokens=n, do_sample=False, pad_token_id=pad_id)
  return run


def load_llamacpp(config):
  """llama.cpp on the GGUF file itself (None if llama-cpp-python is not installed or the source is a directory)."""
  try:
    import llama_cpp
  except ImportError:
    return None, None
  path = config.source or weights.default_gguf_path()
  if os.path.isdir(path):
    return None, None
  llm = llama_cpp.Llama(model_path=path, n_threads=config.threads, n_threads_batch=config.threads, n_ctx=512,
                        n_batch=512, verbose=False)
  return llm, f"llama.cpp (llama-cpp-python {llama_cpp.__version__}, {os.path.basename(path)}, " \
              f"{config.threads} threads)"


def llamacpp_runner(llm, prompts):
  """Batch 1 only (llama-cpp-python decodes one sequence): greedy, EOS ignored, N new tokens from a fresh cache."""
  def run(batch, n):
    assert batch == 1, "llama-cpp-python runs one sequence at a time"
    out = []
    for token in llm.generate(prompts[0], top_k=1, temp=0.0, reset=True):
      out.append(token)
      if len(out) == n:
        return out
  return run


def measure(run, config, prompts, batch_sizes=None):
  """{'decode_b{B}': tok/s, 'prefill_b{B}': tok/s, 'compile_s': s} for a `run(batch, n)` callable."""
  out, compile_s = {}, 0.0
  n = config.new_tokens
  for batch in batch_sizes or config.batch_sizes:
    full = time_fn(run, batch, n, warmup=config.warmup, iters=config.iters, block=lambda x: x)
    first = time_fn(run, batch, 1, warmup=config.warmup, iters=config.iters, block=lambda x: x)
    out[f"decode_b{batch}"] = batch * (n - 1) / max(full.median_s - first.median_s, 1e-9)
    out[f"prefill_b{batch}"] = sum(len(p) for p in prompts[:batch]) / first.median_s
    compile_s += full.compile_s + first.compile_s
  out["compile_s"] = compile_s
  return out


def prompt_logits(pre, prompts):
  tokens, mask = _padded(prompts, pre.tokenizer.pad_id)
  mask = jnp.asarray(mask, bool)
  logits, _ = jax.jit(forward, static_argnums=0)(pre.graphdef, pre.state, jnp.asarray(tokens, jnp.int32),
                                                 positions_from_mask(mask), mask)
  return np.asarray(logits)[np.asarray(mask)]


def load_variant(config, name):
  numerics = dict(config.numerics[name])
  numerics.pop("source", None)
  return weights.load_pretrained(config.source or None, **numerics)


def load_peer(config):
  import torch
  import transformers
  torch.set_num_threads(config.threads)
  path = config.source or weights.default_gguf_path()
  if os.path.isdir(path):
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
  else:
    directory, name = os.path.split(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
  return model.eval(), f"transformers {transformers.__version__} generate (torch {torch.__version__} fp32, " \
                       f"{config.threads} threads)"


def _tokenizer(config):
  from core.llm.tokenizer import Tokenizer
  path = config.source or weights.default_gguf_path()
  return Tokenizer.from_directory(path) if os.path.isdir(path) else Tokenizer.from_gguf(path)


def memory_probe(config, name):
  """Loads one variant (or the peer), generates at every batch size, prints peak RSS in MB as JSON."""
  if name == "transformers":
    model, _ = load_peer(config)
    prompts = _prompts(_tokenizer(config), config.questions)
    run = peer_runner(model, prompts, 2)
  else:
    pre = load_variant(config, name)
    prompts = _prompts(pre.tokenizer, config.questions)
    run = ours_runner(pre, prompts, config)
  for batch in config.batch_sizes:
    run(batch, config.new_tokens)
  print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
  """Peak resident memory of this process. Linux keeps ru_maxrss across fork+exec (a child of a big parent
  reports the parent's peak), so read the fresh mm's high-water mark VmHWM instead where it exists."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _probe_subprocess(name):
  argv = [sys.executable, "-m", "benchmarks.llm_generate", f"--memory_probe={name}"] + \
      [a for a in sys.argv[1:] if not a.startswith("--memory_probe")]
  result = subprocess.run(argv, capture_output=True, text=True, check=True)
  return json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main(argv):
  del argv
  config = _CONFIG.value
  if _PROBE.value:
    memory_probe(config, _PROBE.value)
    return
  peer_name, peer = None, {}
  reference = load_variant(config, "fp32")
  prompts = _prompts(reference.tokenizer, config.questions)
  ref_logits = prompt_logits(reference, prompts)
  ref_tokens = ours_runner(reference, prompts, config)(max(config.batch_sizes), config.new_tokens).tokens
  del reference
  if config.peer:
    hf_model, peer_name = load_peer(config)
    peer = measure(peer_runner(hf_model, prompts, 2), config, prompts)
    del hf_model
  cpp_name, cpp = None, {}
  if config.get("llamacpp", True):
    llm, cpp_name = load_llamacpp(config)
    if llm is not None:
      cpp = measure(llamacpp_runner(llm, prompts), config, prompts, batch_sizes=(1,))
      del llm
  for name in config.variants:
    pre = load_variant(config, name)
    logit_diff = float(np.abs(prompt_logits(pre, prompts) - ref_logits).max())
    run = ours_runner(pre, prompts, config)
    tokens = run(max(config.batch_sizes), config.new_tokens).tokens
    agreement = float(np.mean([np.mean(a == b) for a, b in zip(tokens, ref_tokens)]))
    ours = measure(run, config, prompts)
    extra = dict(variant=name, numerics=dict(config.numerics[name]), max_logit_diff_vs_fp32=logit_diff,
                 greedy_token_agreement_vs_fp32=agreement, compile_s=ours["compile_s"],
                 new_tokens=config.new_tokens)
    for batch in config.batch_sizes:
      emit(BENCH, f"decode_tokens_per_s_batch{batch}", ours[f"decode_b{batch}"], unit="tokens/s", peer=peer_name,
           peer_value=peer.get(f"decode_b{batch}"), **extra)
    if cpp:
      emit(BENCH, "decode_tokens_per_s_batch1", ours["decode_b1"], unit="tokens/s", peer=cpp_name,
           peer_value=cpp["decode_b1"], **extra)
    big = max(config.batch_sizes)
    emit(BENCH, f"prefill_tokens_per_s_batch{big}", ours[f"prefill_b{big}"], unit="tokens/s", peer=peer_name,
         peer_value=peer.get(f"prefill_b{big}"), **extra)
    del pre
  if config.memory:
    peer_rss = _probe_subprocess("transformers") if config.peer else None
    for name in config.variants:
      emit(BENCH, "peak_rss_mb", _probe_subprocess(name), unit="MB", peer=peer_name, peer_value=peer_rss,
           higher_is_better=False, variant=name, batch_sizes=list(config.batch_sizes))


if __name__ == "__main__":
  app.run(main)
