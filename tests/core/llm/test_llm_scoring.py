"""Masked log-probabilities: definition, padding invariance, the SFT loss, and multiple-choice scoring."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from core.llm import scoring
from core.llm.model import forward, positions_from_mask


def test_token_logprobs_definition(tiny):
  config, graphdef, state = tiny
  tokens = jnp.asarray([[5, 9, 13, 200, 7]], jnp.int32)
  mask = jnp.ones(tokens.shape, bool)
  lp = scoring.jit_token_logprobs(graphdef, state, tokens, mask)
  logits = jax.jit(forward, static_argnums=0)(graphdef, state, tokens, positions_from_mask(mask), mask)[0]
  expected = jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], -1)[..., 0]
  np.testing.assert_allclose(lp[:, 1:], expected, atol=1e-5)
  assert float(lp[0, 0]) == 0.0


def test_sequence_logprobs_padding_invariant(tiny):
  config, graphdef, state = tiny
  prompts, conts = [[3, 4, 5], [10]], [[6, 7], [11, 12, 13]]
  right = scoring.continuation_batch(prompts, conts, pad_id=0, length_buckets=(8,))
  left = {k: np.zeros_like(v) for k, v in right.items()}
  for i in range(2):
    n = int(right["attention_mask"][i].sum())
    for k in left:
      left[k][i, 8 - n:] = right[k][i, :n]
  a, count = scoring.jit_sequence_logprobs(graphdef, state, right)
  b, _ = scoring.jit_sequence_logprobs(graphdef, state, left)
  np.testing.assert_allclose(a, b, atol=1e-5)
  np.testing.assert_array_equal(count, [2, 3])
  lp = scoring.jit_token_logprobs(graphdef, state, jnp.asarray([[3, 4, 5, 6, 7]]), jnp.ones((1, 5), bool))
  np.testing.assert_allclose(a[0], lp[0, 3:].sum(), atol=1e-5)


def test_left_padded_first_token_is_never_scored(tiny):
  """A row's first real token has no real token before it: with left padding its 'prediction' would come from a
  padding slot, so it gets no weight even when loss_mask marks it, exactly as in a right-padded row."""
  config, graphdef, state = tiny
  right = {"tokens": np.asarray([[3, 4, 5, 0, 0]]), "attention_mask": np.asarray([[1, 1, 1, 0, 0]]),
           "loss_mask": np.asarray([[1, 1, 1, 0, 0]])}
  left = {k: np.roll(v, 2, axis=1) for k, v in right.items()}
  np.testing.assert_array_equal(scoring.score_weight(right), [[0, 1, 1, 0, 0]])
  np.testing.assert_array_equal(scoring.score_weight(left), [[0, 0, 0, 1, 1]])
  a, count_a = scoring.jit_sequence_logprobs(graphdef, state, right)
  b, count_b = scoring.jit_sequence_logprobs(graphdef, state, left)
  np.testing.assert_allclose(a, b, atol=1e-5)
  np.testing.assert_array_equal(count_a, count_b)


def test_masked_nll_is_a_differentiable_sft_loss(tiny):
  """Value and gradient against the loss written out row by row: each row alone, unpadded, through `forward`."""
  config, graphdef, state = tiny
  prompts, continuations = [[3, 4, 5], [10]], [[6, 7], [11, 12, 13]]
  batch = scoring.continuation_batch(prompts, continuations, 0, (8,))
  params = nnx.state(nnx.merge(graphdef, state), nnx.Param)

  def by_hand(params):
    total = 0.0
    for prompt, continuation in zip(prompts, continuations):
      ids = jnp.asarray([prompt + continuation], jnp.int32)
      mask = jnp.ones(ids.shape, bool)
      logp = jax.nn.log_softmax(forward(graphdef, params, ids, positions_from_mask(mask), mask)[0][0])
      total += sum(logp[len(prompt) - 1 + j, t] for j, t in enumerate(continuation))
    return -total / 5  # five continuation tokens

  loss, grads = jax.jit(jax.value_and_grad(scoring.masked_nll, argnums=1), static_argnums=0)(graphdef, params, batch)
  expected_loss, expected_grads = jax.value_and_grad(by_hand)(params)
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
  norms = [float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)]
  assert min(norms) > 0, norms  # every parameter tensor gets a gradient
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_multiple_choice_prefers_the_right_answer(smollm):
  tok = smollm.tokenizer
  prompt = tok.format_chat([{"role": "user", "content": "What is the capital of France?"}])
  options = [" The capital of France is Paris.", " The capital of France is London.",
             " The capital of France is Berlin."]
  scores = scoring.score_continuations(smollm, [prompt] * 3, [o.strip() for o in options], batch_size=4,
                                       length_buckets=(64,))
  assert int(np.argmax(scores)) == 0, scores
