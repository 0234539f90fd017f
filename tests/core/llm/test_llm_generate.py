"""Generation: greedy answer of the real model, cache decode = recomputation, buckets compile once, sampling
options, per-row stops and budgets, and clear errors on bad prompts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core.llm import generate as G
from core.llm import scoring
from core.llm.model import forward, positions_from_mask
from core.llm.sampling import SamplingParams, sample

GREEDY = dict(prompt_buckets=(8, 16, 32), batch_buckets=(1, 2, 4), new_token_buckets=(8, 16))


def _gen(tiny, prompts, **kw):
  config, graphdef, state = tiny
  settings = dict(GREEDY, max_new_tokens=kw.pop("max_new_tokens", 8))
  settings.update({k: kw.pop(k) for k in list(kw) if k in ("temperature", "top_k", "top_p", "seed",
                                                            "truncate_prompt")})
  return G.generate(graphdef, state, config, prompts, G.GenerationConfig(**settings), **kw)


def test_paris(smollm):
  gen = G.GenerationConfig(max_new_tokens=24)
  answer = G.chat(smollm, [[{"role": "user", "content": "What is the capital of France?"}]], gen)[0]
  assert "Paris" in answer, answer
  # raw text, no chat format: the base continuation of a sentence
  continuation = G.generate_text(smollm, ["The capital of France is"], G.GenerationConfig(max_new_tokens=3))[0]
  assert continuation.strip().startswith("Paris"), continuation


def test_greedy_decode_equals_full_recompute(tiny):
  config, graphdef, state = tiny
  prompt = [5, 17, 200, 3, 42]
  out = _gen(tiny, [prompt], max_new_tokens=8)
  seq = list(prompt)
  full_forward = jax.jit(forward, static_argnums=0)
  for token, lp in zip(out.tokens[0], out.logprobs[0]):
    ids = jnp.asarray([seq + [0] * (16 - len(seq))], jnp.int32)  # right padding: one shape, causal = unaffected
    mask = jnp.arange(16)[None] < len(seq)
    logits = full_forward(graphdef, state, ids, positions_from_mask(mask), mask)[0][0, len(seq) - 1]
    assert int(token) == int(jnp.argmax(logits))
    np.testing.assert_allclose(lp, jax.nn.log_softmax(logits)[token], atol=1e-4)
    seq.append(int(token))
  # The returned log-probs are what scoring recomputes for the same sequence.
  full = scoring.jit_token_logprobs(graphdef, state, jnp.asarray([seq]), jnp.ones((1, len(seq)), bool))
  np.testing.assert_allclose(np.asarray(full)[0, len(prompt):], out.logprobs[0], atol=1e-4)


def test_batched_left_padded_equals_one_by_one(tiny):
  prompts = [[1, 2, 3], [9, 8, 7, 6, 5, 4, 3, 2, 1, 7, 7], [100]]
  batched = _gen(tiny, prompts)
  for i, p in enumerate(prompts):
    alone = _gen(tiny, [p])
    np.testing.assert_array_equal(batched.tokens[i], alone.tokens[0])
    np.testing.assert_allclose(batched.logprobs[i], alone.logprobs[0], atol=1e-5)


def test_compiles_once_per_bucket(tiny):
  _gen(tiny, [[1, 2, 3]])  # warm the (1, 8, 8) bucket
  before = G.compiled_programs()
  _gen(tiny, [[4, 5, 6, 7]])
  _gen(tiny, [[9] * 8], max_new_tokens=5)
  assert G.compiled_programs() == before
  _gen(tiny, [[1], [2, 3]])  # batch bucket 2: one new program
  _gen(tiny, [[4, 5], [6, 7, 8]])
  assert G.compiled_programs() == before + 1


def test_per_row_stops_and_budgets(tiny):
  prompts = [[1, 2, 3], [4, 5, 6]]
  free = _gen(tiny, prompts, max_new_tokens=8)
  stop = int(free.tokens[0][2])
  out = _gen(tiny, prompts, stop_ids=[[stop], []], max_new_tokens=8)
  first = list(free.tokens[0]).index(stop)
  assert list(out.tokens[0]) == list(free.tokens[0][:first + 1]) and out.finish_reasons[0] == "stop"
  assert len(out.tokens[1]) == 8 and out.finish_reasons[1] == "length"
  as_arrays = _gen(tiny, prompts, stop_ids=[np.array([stop]), np.array([], np.int64)], max_new_tokens=8)
  assert [list(t) for t in as_arrays.tokens] == [list(t) for t in out.tokens]  # per-row lists given as arrays
  shared = _gen(tiny, prompts, stop_ids=np.array([stop]), max_new_tokens=8)  # one flat array: every row
  assert list(shared.tokens[0]) == list(out.tokens[0]) and shared.finish_reasons[0] == "stop"
  config, graphdef, state = tiny
  budgets = G.generate(graphdef, state, config, prompts, G.GenerationConfig(max_new_tokens=8, **GREEDY),
                       max_new_tokens=[3, 6])
  assert [len(t) for t in budgets.tokens] == [3, 6]
  np.testing.assert_array_equal(budgets.tokens[1], free.tokens[1][:6])


def test_sampling_options(tiny):
  prompts = [[1, 2, 3], [7, 8]]
  greedy = _gen(tiny, prompts)
  top1 = _gen(tiny, prompts, temperature=1.0, top_k=1)
  tiny_p = _gen(tiny, prompts, temperature=0.7, top_p=1e-6)
  for a, b, c in zip(greedy.tokens, top1.tokens, tiny_p.tokens):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
  s1 = _gen(tiny, prompts, temperature=1.0, seed=3)
  s2 = _gen(tiny, prompts, temperature=1.0, seed=3)
  for a, b in zip(s1.tokens, s2.tokens):
    np.testing.assert_array_equal(a, b)
  # and temperature 1 really samples: it leaves the greedy path, and another seed draws other tokens
  s3 = _gen(tiny, prompts, temperature=1.0, seed=4)
  assert any(not np.array_equal(a, g) for a, g in zip(s1.tokens, greedy.tokens))
  assert any(not np.array_equal(a, b) for a, b in zip(s1.tokens, s3.tokens))


def test_sample_respects_top_k_and_top_p():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]] * 2000))
  keys = jax.random.key(0)
  tokens, logprobs = sample(logits, keys, SamplingParams(temperature=1.0, top_k=2))
  assert set(np.unique(tokens)) == {0, 1}
  np.testing.assert_allclose(logprobs, np.log([0.5, 0.3])[np.asarray(tokens)], rtol=1e-5)
  tokens, _ = sample(logits, jax.random.key(1), SamplingParams(temperature=1.0, top_p=0.75))
  assert set(np.unique(tokens)) == {0, 1}  # 0.5 + 0.3 reach 0.75; 0.15 and 0.05 are cut
  tokens, _ = sample(logits, jax.random.key(2), SamplingParams(temperature=1.0))
  assert set(np.unique(tokens)) == {0, 1, 2, 3}
  assert abs(float(np.mean(np.asarray(tokens) == 0)) - 0.5) < 0.05


def _frequencies_match(tokens, probs, z=5.0):
  """Each token's frequency lies within z standard errors of its probability (a fixed key: deterministic)."""
  tokens, probs = np.asarray(tokens), np.asarray(probs, np.float64)
  freq = np.bincount(tokens, minlength=probs.size) / tokens.size
  stderr = np.sqrt(probs * (1 - probs) / tokens.size)
  assert np.all(np.abs(freq - probs) <= z * stderr + 1e-12), (freq, probs)


def test_temperature_samples_softmax_of_scaled_logits_and_zero_is_argmax():
  """Sampling at temperature T draws from softmax(logits / T) (with and without a top-k cut), and reports the
  log-prob under the raw logits; T = 0 and T -> 0 give the argmax. The distributions at T = 0.5, 1 and 2 are
  hundreds of standard errors apart at 40k draws, so a sampler that ignored or inverted T would fail."""
  row = np.asarray([2.0, 1.0, 0.0, -1.0, 0.5], np.float32)
  logits = jnp.asarray(np.tile(row, (40000, 1)))
  for i, temperature in enumerate((0.5, 1.0, 2.0)):
    tokens, logprobs = sample(logits, jax.random.key(10 + i), SamplingParams(temperature=temperature))
    _frequencies_match(tokens, jax.nn.softmax(row / temperature))
    np.testing.assert_allclose(logprobs, np.asarray(jax.nn.log_softmax(row))[np.asarray(tokens)], rtol=1e-5)
  # top-k with a temperature: the k best logits, renormalised after scaling
  tokens, _ = sample(logits, jax.random.key(20), SamplingParams(temperature=2.0, top_k=3))
  _frequencies_match(tokens, np.concatenate([jax.nn.softmax(row[[0, 1, 4]] / 2.0), [0.0, 0.0]])[[0, 1, 3, 4, 2]])
  # greedy: T = 0, and a tiny T over logits whose top two are >= 0.1 apart, both pick the row's argmax
  rng = np.random.default_rng(0)
  spread = jnp.asarray(np.stack([rng.permutation(50) * 0.1 for _ in range(64)]), jnp.float32)
  for temperature in (0.0, 1e-3):
    tokens, logprobs = sample(spread, jax.random.key(30), SamplingParams(temperature=temperature))
    np.testing.assert_array_equal(tokens, np.argmax(np.asarray(spread), axis=-1))
    np.testing.assert_allclose(logprobs, np.max(np.asarray(jax.nn.log_softmax(spread)), axis=-1), rtol=1e-5)


def test_bad_prompts_are_clear_errors(tiny):
  config = tiny[0]
  with pytest.raises(G.GenerationError, match="prompt 1 is empty"):
    _gen(tiny, [[1], []])
  with pytest.raises(G.GenerationError, match=r"token id\(s\) \[256, -1\] outside the vocabulary \[0, 256\)"):
    _gen(tiny, [[1, 256, -1]])
  too_long = list(range(1, config.max_seq_len))
  with pytest.raises(G.GenerationError, match="exceeds the context window of 128.*truncate_prompt=True"):
    _gen(tiny, [too_long], max_new_tokens=8)
  settings = dict(GREEDY, prompt_buckets=(8, 16, 32, 128))
  out = G.generate(tiny[1], tiny[2], config, [too_long],
                   G.GenerationConfig(max_new_tokens=8, truncate_prompt=True, **settings))
  assert len(out.tokens[0]) == 8
  with pytest.raises(G.GenerationError, match="exceeds the largest bucket 32"):
    _gen(tiny, [list(range(1, 40))])
  with pytest.raises(G.GenerationError, match="leaves no room for a prompt in the context window of 128. Fix: "
                                               "lower max_new_tokens below 128"):
    G.generate(tiny[1], tiny[2], config, [[1, 2, 3]], G.GenerationConfig(max_new_tokens=128, truncate_prompt=True,
                                                                          **dict(GREEDY, new_token_buckets=(128,))))
  with pytest.raises(ValueError, match="top_p must be in"):
    G.GenerationConfig(top_p=0.0)
  for temperature in (float("nan"), float("inf"), -1.0):  # NaN decoded token 0 everywhere, inf sampled uniformly
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
      G.GenerationConfig(temperature=temperature)
  for top_k in (2.5, True, -1):
    with pytest.raises(ValueError, match="top_k must be an integer >= 0"):
      G.GenerationConfig(top_k=top_k)
  with pytest.raises(G.GenerationError, match="unknown generation setting"):
    G.GenerationConfig.from_dict({"max_new_token": 3})
