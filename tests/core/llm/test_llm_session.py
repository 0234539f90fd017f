"""GenerationSession (cross-call KV-cache reuse) gives what `generate` gives on the full sequences, turn after
turn: with rows left out of a call, a row whose history was edited (prefix mismatch), and cache compaction."""

import dataclasses

import numpy as np
import pytest
from flax import nnx

from core.llm import generate as G
from core.llm.session import GenerationSession
from llm_fixtures import tiny_model

GEN = G.GenerationConfig(max_new_tokens=6, prompt_buckets=(8, 16, 32, 64), batch_buckets=(1, 2, 4),
                         new_token_buckets=(8,))
STOP = [7]


@pytest.fixture(scope="module")
def model():
  m = tiny_model(seed=3)
  graphdef, state = nnx.split(m)
  return graphdef, state, m.config


def _reference(model, prompts, budgets):
  graphdef, state, config = model
  return G.generate(graphdef, state, config, prompts, GEN, stop_ids=STOP, max_new_tokens=budgets)


def _check_turn(model, session, rows, prompts, budgets):
  got = session.generate(rows, prompts, budgets)
  want = _reference(model, prompts, budgets)
  for g, w in zip(got.tokens, want.tokens):
    np.testing.assert_array_equal(g, w)
  for g, w in zip(got.logprobs, want.logprobs):
    np.testing.assert_allclose(g, w, atol=2e-4)
  assert got.finish_reasons == want.finish_reasons
  return got


def test_session_matches_full_recomputation(model):
  graphdef, state, config = model
  rng = np.random.default_rng(0)
  session = GenerationSession(graphdef, state, config, GEN, 3, stop_ids=STOP)
  history = [list(rng.integers(10, 200, n)) for n in (5, 11, 3)]
  total_prompt_tokens = 0
  for turn in range(5):
    rows = [0, 2] if turn == 1 else [0, 1, 2]  # row 1 sits out a turn
    if turn == 3:
      history[1][1] = 201  # an edited history: only the unchanged prefix may be reused
    prompts = [history[r] for r in rows]
    budgets = [6, 4, 5][:len(rows)]
    total_prompt_tokens += sum(map(len, prompts))
    out = _check_turn(model, session, rows, prompts, budgets)
    for r, tokens in zip(rows, out.tokens):
      observation = list(rng.integers(10, 200, rng.integers(2, 9)))
      history[r] = history[r] + [int(t) for t in tokens] + observation
  assert session.valid.shape[1] > 64  # the cache grew (and was compacted) on the way
  assert session.prefilled_tokens < total_prompt_tokens / 2  # most of every history came from the cache


def test_session_errors(model):
  graphdef, state, config = model
  with pytest.raises(G.GenerationError, match="rows"):
    GenerationSession(graphdef, state, config, GEN, 5)
  session = GenerationSession(graphdef, state, config, GEN, 2)
  with pytest.raises(G.GenerationError, match="distinct"):
    session.generate([0, 0], [[1, 2], [3, 4]])
  with pytest.raises(G.GenerationError, match="distinct"):
    session.generate([2], [[1, 2]])
  with pytest.raises(G.GenerationError, match="empty"):
    session.generate([0], [[]])
  too_long = [1] * (config.max_seq_len - 2)
  with pytest.raises(G.GenerationError, match="exceeds the context window") as error:
    session.generate([0], [too_long], [4])
  assert "a session never truncates" in str(error.value) and "truncate_prompt" not in str(error.value)


def test_calls_without_a_key_sample_with_fresh_noise(model, monkeypatch):
  """Two sessions at temperature 1, fed identical histories: the same seed draws the same samples, and the
  second call of either one gets another key than its first."""
  from core.llm import session as session_lib

  graphdef, state, config = model
  sampled = dataclasses.replace(GEN, temperature=1.0)
  keys = []
  original = session_lib._continue

  def recording(*args, **kwargs):
    keys.append(np.asarray(session_lib.jax.random.key_data(args[11])))
    return original(*args, **kwargs)

  monkeypatch.setattr(session_lib, "_continue", recording)
  outputs = []
  for _ in range(2):
    session = GenerationSession(graphdef, state, config, sampled, 1, stop_ids=[])
    history, tokens = [11, 12, 13], []
    for _ in range(2):
      out = session.generate([0], [history])
      history = history + [int(t) for t in out.tokens[0]] + [14]
      tokens.append(list(out.tokens[0]))
    outputs.append(tokens)
  assert outputs[0] == outputs[1]  # reproducible from gen.seed
  assert not np.array_equal(keys[0], keys[1]) and np.array_equal(keys[0], keys[2])
  # the keys are used: the sampled replies leave the greedy path of the same histories
  greedy_session, history, greedy = GenerationSession(graphdef, state, config, GEN, 1, stop_ids=[]), [11, 12, 13], []
  for _ in range(2):
    out = greedy_session.generate([0], [history])
    history = history + [int(t) for t in out.tokens[0]] + [14]
    greedy.append(list(out.tokens[0]))
  assert greedy != outputs[0], greedy
