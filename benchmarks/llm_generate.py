"""Generation speed and memory of core/llm against Hugging Face transformers, on the same weights and prompts.

Run by hand (about 25 minutes on 2 cores: the peers are re-timed next to every variant):

    python -m benchmarks.llm_generate [--config configs/llm/generate_bench.py[:quick]]

For each storage variant of configs/llm/generate_bench.py it prints JSON lines (benchmarks/harness.py): decode
tokens/s at batch 1 and 16, prefill tokens/s at batch 16, next to transformers `generate` (float32) measured in
the same run, with the variant's max |logit - fp32 logit| over the prompt batch and the
share of greedy tokens equal to fp32's; at batch 1 also next to llama.cpp (llama-cpp-python, the same GGUF file
as stored, its own quantized kernels) when it is installed; then the peak resident memory of 135M inference (one
subprocess each).

Every side runs on the same number of threads, `config.threads` (0 = the cores XLA:CPU would use: PJRT_NPROC if
set, else this process's CPU affinity): torch.set_num_threads, llama.cpp's n_threads/n_threads_batch, and XLA:CPU's
intra-op pool, sized through PJRT_NPROC before the CPU backend starts (XLA_FLAGS cannot size it in jax 0.10; if the
backend already started, e.g. `run_benchmark` called after other JAX work, the pool keeps its size and the lines
say so in `threads_note`). Each line records `ours_threads` (the XLA pool as observed: its tf_XLAEigen threads)
and `peer_threads`.

The peers are timed again right after each variant, and each line's ratio uses the peer figure from that same
window (`peer_window`), so a change in the shared machine's load between variants does not enter a ratio.
The memory probes run in fresh processes: ours through `--memory_probe=<variant>` of this module, the
transformers peer through benchmarks/hf_generate_peer.py, which imports only torch and transformers (this module
imports jax, flax and core.llm, ~186 MB that would otherwise count in the peer's figure). Each probe also reports
its VmHWM after its imports, before loading a model (`import_rss_mb`, `peer_import_rss_mb`).

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
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from benchmarks import hf_generate_peer
from benchmarks.harness import emit, limit_xla_cpu_threads, time_fn, xla_cpu_threads, xla_default_threads
from core.llm import generate as G
from core.llm import weights
from core.llm.model import forward, positions_from_mask

_CONFIG = config_flags.DEFINE_config_file("config", "configs/llm/generate_bench.py", "benchmark config")
_PROBE = flags.DEFINE_string("memory_probe", None, "internal: run one of our variants and print its peak RSS "
                             "(the transformers peer's probe is benchmarks/hf_generate_peer.py)")

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


PEER_PAD_ID = 2


def peer_runner(hf_model, prompts, pad_id):
  return hf_generate_peer.runner(hf_model, [list(map(int, p)) for p in prompts], pad_id)


def bench_threads(config) -> int:
  """The thread count of every side: `config.threads`, or (0 or unset) the cores XLA:CPU would use by default."""
  return int(config.get("threads", 0) or 0) or xla_default_threads()


def thread_fields(threads: int, limited: bool) -> dict:
  """`ours_threads` (XLA:CPU's pool as observed, once it started), `peer_threads`, and a `threads_note` when the
  two may differ, for each emitted line."""
  ours = xla_cpu_threads()
  out = {"ours_threads": ours, "peer_threads": threads}
  if not limited:
    out["threads_note"] = (f"XLA:CPU's backend started before its pool could be sized to {threads} threads "
                           "(PJRT_NPROC is read once, at backend start): ours ran on the pool it had")
  elif ours is None:
    out["threads_note"] = "XLA:CPU's pool size was not observable (no tf_XLAEigen threads in /proc/self/task)"
  elif ours != threads:
    out["threads_note"] = f"XLA:CPU's pool has {ours} threads, the peers {threads}"
  return out


def load_llamacpp(config):
  """llama.cpp on the GGUF file itself (None if llama-cpp-python is not installed or the source is a directory)."""
  try:
    import llama_cpp
  except ImportError:
    return None, None
  path = config.source or weights.default_gguf_path()
  if os.path.isdir(path):
    return None, None
  threads = bench_threads(config)
  llm = llama_cpp.Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=512, n_batch=512,
                        verbose=False)
  return llm, f"llama.cpp (llama-cpp-python {llama_cpp.__version__}, {os.path.basename(path)}, {threads} threads)"


def llamacpp_runner(llm, prompts):
  """Batch 1 only (llama-cpp-python decodes one sequence): greedy, EOS ignored, N new tokens from a fresh cache."""
  def run(batch, n):
    assert batch == 1, "llama-cpp-python runs one sequence at a time"
    # generate(reset=True) keeps the longest prefix it shares with the last call: start from an empty cache
    llm.reset()
    out = []
    for token in llm.generate(prompts[0], top_k=1, temp=0.0, reset=True):
      out.append(token)
      if len(out) == n:
        return out
  return run


def measure(run, config, prompts, batch_sizes=None):
  """{'decode_b{B}': tok/s, 'prefill_b{B}': tok/s, 'compile_s': s} for a `run(batch, n)` callable."""
  out, compile_s, compiles = {}, 0.0, 0
  n = config.new_tokens
  for batch in batch_sizes or config.batch_sizes:
    full = time_fn(run, batch, n, warmup=config.warmup, iters=config.iters, block=lambda x: x)
    first = time_fn(run, batch, 1, warmup=config.warmup, iters=config.iters, block=lambda x: x)
    out[f"decode_b{batch}"] = batch * (n - 1) / max(full.median_s - first.median_s, 1e-9)
    out[f"prefill_b{batch}"] = sum(len(p) for p in prompts[:batch]) / first.median_s
    compile_s += full.compile_s + first.compile_s
    compiles += full.compiles_during_timing + first.compiles_during_timing
  out["compile_s"] = compile_s
  out["compiles_during_timing"] = compiles
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


def _source_path(config) -> str:
  return config.source or weights.default_gguf_path()


def load_peer(config):
  return hf_generate_peer.load(_source_path(config), bench_threads(config))


def _tokenizer(config):
  from core.llm.tokenizer import Tokenizer
  path = _source_path(config)
  return Tokenizer.from_directory(path) if os.path.isdir(path) else Tokenizer.from_gguf(path)


def memory_probe(config, name):
  """Loads one of our variants, generates at every batch size, prints VmHWM in MB after the imports (before
  loading) and at the end, and XLA:CPU's pool size, as JSON."""
  limit_xla_cpu_threads(bench_threads(config))
  import_rss = peak_rss_mb()
  pre = load_variant(config, name)
  prompts = _prompts(pre.tokenizer, config.questions)
  run = ours_runner(pre, prompts, config)
  for batch in config.batch_sizes:
    run(batch, config.new_tokens)
  print(json.dumps({"import_rss_mb": import_rss, "peak_rss_mb": peak_rss_mb(), "xla_threads": xla_cpu_threads()}))


peak_rss_mb = hf_generate_peer.peak_rss_mb


def _last_json(stdout: str) -> dict:
  return json.loads(stdout.strip().splitlines()[-1])


def _probe_subprocess(name) -> dict:
  """{"import_rss_mb", "peak_rss_mb"} of one of our variants, in a fresh process."""
  argv = [sys.executable, "-m", "benchmarks.llm_generate", f"--memory_probe={name}"] + \
      [a for a in sys.argv[1:] if not a.startswith("--memory_probe")]
  return _last_json(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def peer_probe_argv(config, prompts_file: str) -> list[str]:
  """The transformers probe's command line: a script that imports only torch and transformers."""
  return [sys.executable, os.path.abspath(hf_generate_peer.__file__), "--model", _source_path(config),
          "--prompts", prompts_file, "--batch-sizes", *map(str, config.batch_sizes),
          "--new-tokens", str(config.new_tokens), "--threads", str(bench_threads(config)), "--pad-id", str(PEER_PAD_ID)]


def _peer_probe_subprocess(config, prompts) -> dict:
  """{"import_rss_mb", "peak_rss_mb"} of transformers generate on the same prompt ids, in a fresh process."""
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "prompts.json")
    with open(path, "w") as f:
      json.dump([list(map(int, p)) for p in prompts], f)
    result = subprocess.run(peer_probe_argv(config, path), capture_output=True, text=True, check=True)
  return _last_json(result.stdout)


def main(argv):
  del argv
  if _PROBE.value:
    memory_probe(_CONFIG.value, _PROBE.value)
    return
  run_benchmark(_CONFIG.value)


def run_benchmark(config) -> None:
  """Every JSON line of the benchmark for `config` (configs/llm/generate_bench.py)."""
  # before any JAX work of ours: XLA:CPU sizes its pool once, when its backend starts
  threads = bench_threads(config)
  limited = limit_xla_cpu_threads(threads)
  reference = load_variant(config, "fp32")
  prompts = _prompts(reference.tokenizer, config.questions)
  ref_logits = prompt_logits(reference, prompts)
  ref_tokens = ours_runner(reference, prompts, config)(max(config.batch_sizes), config.new_tokens).tokens
  del reference
  peer_name, peer_run = None, None
  if config.peer:  # loaded once, kept, and timed again right after each variant
    hf_model, peer_name = load_peer(config)
    peer_run = peer_runner(hf_model, prompts, PEER_PAD_ID)
  cpp_name, cpp_run = None, None
  if config.get("llamacpp", True):
    llm, cpp_name = load_llamacpp(config)
    if llm is not None:
      cpp_run = llamacpp_runner(llm, prompts)
  for window, name in enumerate(config.variants):
    pre = load_variant(config, name)
    logit_diff = float(np.abs(prompt_logits(pre, prompts) - ref_logits).max())
    run = ours_runner(pre, prompts, config)
    tokens = run(max(config.batch_sizes), config.new_tokens).tokens
    agreement = float(np.mean([np.mean(a == b) for a, b in zip(tokens, ref_tokens)]))
    ours = measure(run, config, prompts)
    # the peers right after: each ratio's two figures come from one window of the shared machine
    peer = measure(peer_run, config, prompts) if peer_run else {}
    cpp = measure(cpp_run, config, prompts, batch_sizes=(1,)) if cpp_run else {}
    extra = dict(variant=name, numerics=dict(config.numerics[name]), max_logit_diff_vs_fp32=logit_diff,
                 greedy_token_agreement_vs_fp32=agreement, compile_s=ours["compile_s"],
                 compiles_during_timing=ours["compiles_during_timing"], new_tokens=config.new_tokens,
                 peer_window=window, **thread_fields(threads, limited))
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
  if peer_run:
    del peer_run, hf_model
  if config.memory:
    peer_rss = _peer_probe_subprocess(config, prompts) if config.peer else {}
    for name in config.variants:
      probe = _probe_subprocess(name)
      emit(BENCH, "peak_rss_mb", probe["peak_rss_mb"], unit="MB", peer=peer_name,
           peer_value=peer_rss.get("peak_rss_mb"), higher_is_better=False, variant=name,
           batch_sizes=list(config.batch_sizes), import_rss_mb=probe["import_rss_mb"],
           peer_import_rss_mb=peer_rss.get("import_rss_mb"), ours_threads=probe.get("xla_threads"),
           peer_threads=threads if config.peer else None,
           note="VmHWM of a fresh process; import_rss_mb: after its imports, before loading a model")


if __name__ == "__main__":
  app.run(main)
