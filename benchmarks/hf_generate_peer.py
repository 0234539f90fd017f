"""The transformers peer of benchmarks/llm_generate.py, and its peak-memory probe.

This module imports only the standard library, torch and transformers, so that the probe's peak resident memory
is the peer's alone: run from `benchmarks.llm_generate` (which imports jax, flax and core.llm, ~186 MB before any
model is loaded) the probe would count our imports in the peer's figure. torch and transformers are imported where
they are used, so that importing this module (as llm_generate does) does not put them in our own probe's figure.
llm_generate runs it as a script:

    python benchmarks/hf_generate_peer.py --model PATH --prompts PROMPTS.json --batch-sizes 1 16 --new-tokens 64 \
        --threads 2 --pad-id 2

PATH is a transformers model directory or a GGUF file; PROMPTS.json is a list of token-id lists (the chat
prompts, tokenized by our tokenizer in the parent). It prints one JSON line: `import_rss_mb` (VmHWM after the
imports, before loading the model) and `peak_rss_mb` (VmHWM after generating at every batch size).
"""

from __future__ import annotations

import argparse
import json
import os
import resource


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


def load(path: str, threads: int):
  """(model in eval mode, float32; its description) from a directory or a GGUF file."""
  import torch
  import transformers
  torch.set_num_threads(threads)
  if os.path.isdir(path):
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
  else:
    directory, name = os.path.split(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
  return model.eval(), (f"transformers {transformers.__version__} generate (torch {torch.__version__} fp32, "
                        f"{threads} threads)")


def padded(prompts: list[list[int]], pad_id: int):
  """Left-padded [B, W] token ids and attention mask (torch tensors)."""
  import torch
  width = max(len(p) for p in prompts)
  tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long)
  mask = torch.zeros((len(prompts), width), dtype=torch.long)
  for i, p in enumerate(prompts):
    tokens[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
    mask[i, width - len(p):] = 1
  return tokens, mask


def runner(model, prompts: list[list[int]], pad_id: int):
  """`run(batch, n)`: greedy generate of exactly n new tokens (EOS ignored) for the first `batch` prompts."""
  import torch

  def run(batch: int, n: int):
    tokens, mask = padded(prompts[:batch], pad_id)
    with torch.no_grad():
      return model.generate(tokens, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                            pad_token_id=pad_id)
  return run


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True, help="model directory or GGUF file")
  parser.add_argument("--prompts", required=True, help="JSON file: a list of token-id lists")
  parser.add_argument("--batch-sizes", type=int, nargs="+", required=True)
  parser.add_argument("--new-tokens", type=int, required=True)
  parser.add_argument("--threads", type=int, required=True)
  parser.add_argument("--pad-id", type=int, required=True)
  args = parser.parse_args(argv)
  import torch  # noqa: F401  (both imported before the first reading: they are part of the peer's footprint)
  import transformers  # noqa: F401
  import_rss = peak_rss_mb()
  with open(args.prompts) as f:
    prompts = json.load(f)
  model, _ = load(args.model, args.threads)
  run = runner(model, prompts, args.pad_id)
  for batch in args.batch_sizes:
    run(batch, args.new_tokens)
  print(json.dumps({"import_rss_mb": import_rss, "peak_rss_mb": peak_rss_mb()}), flush=True)


if __name__ == "__main__":
  main()
