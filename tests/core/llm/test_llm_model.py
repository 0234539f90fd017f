"""Model invariants on a tiny random model: KV-cache decode = full recomputation, padding does not matter."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core.llm.model import forward, init_cache, positions_from_mask
from llm_fixtures import jit_forward, tiny_model
from flax import nnx


def _full(graphdef, state, tokens):
  mask = jnp.ones(tokens.shape, bool)
  logits, _ = jit_forward(graphdef, state, tokens, positions_from_mask(mask), mask)
  return logits


def test_forward_shapes(tiny):
  config, graphdef, state = tiny
  tokens = jnp.arange(10, dtype=jnp.int32).reshape(2, 5)
  logits = _full(graphdef, state, tokens)
  chex.assert_shape(logits, (2, 5, config.vocab_size))
  assert logits.dtype == jnp.float32
  assert float(jnp.std(logits)) > 0.5  # peaked enough for the comparisons below to mean something


def test_kv_cache_decode_matches_full_recompute(tiny):
  config, graphdef, state = tiny
  rng = np.random.default_rng(1)
  tokens = jnp.asarray(rng.integers(0, config.vocab_size, (2, 12)), jnp.int32)
  full = _full(graphdef, state, tokens)
  slots, prompt = 16, 5
  cache = init_cache(config, 2, slots)
  kv_mask = jnp.zeros((2, slots), bool).at[:, :prompt].set(True)
  pos = jnp.broadcast_to(jnp.arange(prompt), (2, prompt))
  step = jax.jit(forward, static_argnums=0)
  logits, cache = step(graphdef, state, tokens[:, :prompt], pos, kv_mask, cache, 0)
  np.testing.assert_allclose(logits, full[:, :prompt], atol=1e-5, rtol=1e-5)
  for t in range(prompt, 12):
    kv_mask = kv_mask.at[:, t].set(True)
    logits, cache = step(graphdef, state, tokens[:, t:t + 1], jnp.full((2, 1), t), kv_mask, cache, t)
    np.testing.assert_allclose(logits[:, 0], full[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_logits(tiny, side):
  config, graphdef, state = tiny
  rng = np.random.default_rng(2)
  rows = [rng.integers(0, config.vocab_size, n) for n in (7, 3, 5)]
  width = 9
  tokens = np.zeros((3, width), np.int32)
  mask = np.zeros((3, width), bool)
  for i, r in enumerate(rows):
    sl = slice(width - len(r), width) if side == "left" else slice(0, len(r))
    tokens[i, sl], mask[i, sl] = r, True
  logits, _ = jit_forward(graphdef, state, jnp.asarray(tokens), positions_from_mask(jnp.asarray(mask)),
                          jnp.asarray(mask))
  for i, r in enumerate(rows):
    alone = _full(graphdef, state, jnp.asarray(r[None], jnp.int32))[0]
    np.testing.assert_allclose(np.asarray(logits[i])[mask[i]], alone, atol=1e-5, rtol=1e-5)


def test_bf16_compute_close_to_fp32():
  config_kw = dict(dtype="bfloat16", param_dtype="bfloat16")
  f32 = tiny_model()
  bf16 = tiny_model(**config_kw)
  tokens = jnp.arange(8, dtype=jnp.int32)[None]
  a = _full(*nnx.split(f32), tokens)
  b = _full(*nnx.split(bf16), tokens)
  assert b.dtype == jnp.float32
  assert {p.dtype for p in jax.tree.leaves(nnx.state(bf16, nnx.Param))} == {jnp.dtype(jnp.bfloat16)}
  # bf16 keeps 8 mantissa bits: through 2 layers the logits move, but well within their own spread.
  difference = float(jnp.max(jnp.abs(a - b)))
  assert 0 < difference < 0.15 * float(jnp.std(a)), (difference, float(jnp.std(a)))
  assert float(jnp.mean(jnp.argmax(a, -1) == jnp.argmax(b, -1))) >= 0.75



def test_bf16_stored_weights_get_the_gradients_of_their_float32_values():
  """Weights stored in bfloat16 and cast up for float32 compute train: their gradient is the float32 gradient at
  the same values, rounded to bfloat16 (the cast's fast bit-pattern path once passed none: all zeros)."""
  bf16 = tiny_model(param_dtype="bfloat16")
  graphdef, state = nnx.split(bf16)
  f32_graphdef, _ = nnx.split(tiny_model())
  as_f32 = jax.tree.map(lambda x: x.astype(jnp.float32) if x.dtype == jnp.bfloat16 else x, state)
  tokens = jnp.arange(8, dtype=jnp.int32)[None]

  def loss(graphdef, state):
    return jnp.sum(jax.nn.log_softmax(_full(graphdef, state, tokens))[0, :-1, 1:8])

  ours = jax.grad(loss, argnums=1)(graphdef, state)
  reference = jax.grad(loss, argnums=1)(f32_graphdef, as_f32)
  for g, r in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
    assert g.dtype == jnp.bfloat16 and float(jnp.max(jnp.abs(r))) > 0
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r.astype(jnp.bfloat16), np.float32),
                               rtol=1e-2, atol=1e-6 * float(jnp.max(jnp.abs(r))))

def test_qkv_bias_and_tied_variant_runs():
  model = tiny_model(qkv_bias=True, tie_embeddings=True)
  assert model.lm_head is None and model.layers[0].self_attn.q_proj.bias is not None
  logits = _full(*nnx.split(model), jnp.arange(4, dtype=jnp.int32)[None])
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_bad_config_errors():
  from core.llm import config as C
  with pytest.raises(ValueError, match="num_kv_heads"):
    C.tiny(num_kv_heads=3)
  with pytest.raises(ValueError, match="Did you mean 'num_layers'"):
    C.tiny(num_layer=3)
  with pytest.raises(ValueError, match="activation_format"):
    C.tiny(activation_format="int8")
