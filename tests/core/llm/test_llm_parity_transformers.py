"""SmolLM2-135M logits and tokens match Hugging Face transformers (PyTorch, CPU) loading the same GGUF.

Tolerance: max |logit difference| < 2e-3 over every position of a padded batch (logits span about +-30; the
two float32 implementations differ by summation order only). Needs `pip install torch==2.13.0 transformers
accelerate`; skipped without them.
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from core.llm import generate as G
from core.llm import weights
from core.llm.model import forward, positions_from_mask

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

PROMPTS = ["The capital of France is", "def fibonacci(n):\n    return",
           "Numbers 12345 and naïve café, 東京 🚀 — a longer prompt to make the padding matter here.",
           "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"]


@pytest.fixture(scope="module")
def hf(smollm):
  directory, name = os.path.split(weights.default_gguf_path())
  torch.set_num_threads(2)
  model = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
  tokenizer = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=name)
  return model.eval(), tokenizer


def test_tokenizer_matches_transformers(hf, smollm):
  _, hf_tok = hf
  for text in PROMPTS:
    assert smollm.tokenizer.encode(text) == hf_tok(text, add_special_tokens=False)["input_ids"], text


def test_logits_match_transformers(hf, smollm):
  hf_model, _ = hf
  rows = [smollm.tokenizer.encode(p) for p in PROMPTS]
  width = max(len(r) for r in rows)
  tokens = np.zeros((len(rows), width), np.int32)
  mask = np.zeros((len(rows), width), bool)
  for i, r in enumerate(rows):  # left padded, as generation batches are
    tokens[i, width - len(r):], mask[i, width - len(r):] = r, True
  ours, _ = forward(smollm.graphdef, smollm.state, jnp.asarray(tokens), positions_from_mask(jnp.asarray(mask)),
                    jnp.asarray(mask))
  ours = np.asarray(ours)
  worst = 0.0
  for i, r in enumerate(rows):
    with torch.no_grad():
      theirs = hf_model(torch.tensor([r])).logits[0].numpy()
    worst = max(worst, float(np.abs(ours[i][mask[i]] - theirs).max()))
  assert worst < 2e-3, worst


def test_greedy_generation_matches_transformers(hf, smollm):
  hf_model, _ = hf
  ids = smollm.tokenizer.encode_chat([{"role": "user", "content": "Name three colors."}])
  with torch.no_grad():
    theirs = hf_model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False,
                               pad_token_id=smollm.tokenizer.pad_id)[0, len(ids):].tolist()
  ours = G.generate(smollm.graphdef, smollm.state, smollm.config, [ids], G.GenerationConfig(max_new_tokens=24),
                    stop_ids=[smollm.tokenizer.eos_id], pad_id=smollm.tokenizer.pad_id)
  assert ours.tokens[0].tolist() == theirs
