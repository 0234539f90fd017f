"""Upcycling parity, the decoder on input embeddings, the modality mask from image positions, and image-size
errors (moiie/upcycle.py, moiie/lvlm.py)."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from core import config as config_lib
from core.llm import config as llm_config
from core.llm import model as llm_model
from moiie import lvlm, training, upcycle
from moiie.routing import TEXT, VISION, MoESpec

CFG = llm_config.tiny(num_layers=4, hidden_size=32, intermediate_size=64, vocab_size=50)


def _batch():
  tokens = jax.random.randint(jax.random.key(0), (2, 12), 0, 50)
  mask = jnp.array([[True] * 12, [False] * 3 + [True] * 9])  # the second row is left-padded
  positions = llm_model.positions_from_mask(mask)
  modality = (jax.random.uniform(jax.random.key(1), (2, 12)) < 0.5).astype(jnp.int32)
  return tokens, mask, positions, modality


def test_decoder_forward_on_embeddings_equals_core_forward():
  model = llm_model.Llama(CFG, nnx.Rngs(0))
  tokens, mask, positions, modality = _batch()
  graphdef, state = nnx.split(model)
  want, _ = jax.jit(llm_model.forward)(graphdef, state, tokens, positions, mask)

  @jax.jit
  def ours(state):
    m = nnx.merge(graphdef, state)
    return upcycle.decoder_forward(m, m.embed_tokens(tokens), positions, mask, modality, mask)
  got, aux = ours(state)
  np.testing.assert_allclose(np.asarray(got)[np.asarray(mask)], np.asarray(want)[np.asarray(mask)], rtol=1e-6,
                             atol=1e-6)
  assert float(aux["aux_loss"]) == 0.0


@pytest.mark.parametrize("spec", [MoESpec(), MoESpec(n_vision_intra=2, n_inter=2, n_text_intra=2, top_k=2),
                                  MoESpec(n_vision_intra=0, n_inter=4, n_text_intra=0, per_modality_routers=False),
                                  MoESpec(n_vision_intra=1, n_inter=0, n_text_intra=1, top_k=1),
                                  MoESpec(n_vision_intra=2, n_inter=0, n_text_intra=2, top_k=2)],
                         ids=["1+2+1", "2+2+2", "vanilla", "modality", "modality_top2"])
def test_upcycled_model_equals_dense_model(spec):
  model = llm_model.Llama(CFG, nnx.Rngs(0))
  tokens, mask, positions, modality = _batch()
  h = model.embed_tokens(tokens)
  dense, _ = jax.jit(upcycle.decoder_forward)(model, h, positions, mask, modality, mask)
  layers = upcycle.upcycle(model, spec, rngs=nnx.Rngs(1), router_init_std=1.0)  # strong, random routers
  assert layers == [1, 3]
  moe, aux = jax.jit(upcycle.decoder_forward)(model, h, positions, mask, modality, mask)
  m = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(moe)[m], np.asarray(dense)[m], rtol=1e-5, atol=1e-5)
  assert aux["load_vision"].shape == (2, spec.num_experts)
  with pytest.raises(ValueError, match="already upcycled"):
    upcycle.upcycle(model, spec, rngs=nnx.Rngs(1))


def test_modality_mask_from_image_positions():
  text = jnp.zeros((2, 8, 4))
  images = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4) + 1
  image_mask = jnp.array([[0, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 1, 1]], bool)  # anywhere, even split
  h = lvlm.place_images(text, images, image_mask)
  np.testing.assert_array_equal(h[0, 1:4], images[0])
  np.testing.assert_array_equal(h[1, jnp.array([4, 6, 7])], images[1])
  np.testing.assert_array_equal(h[~image_mask], 0)
  ids = lvlm.modality_ids(image_mask)
  np.testing.assert_array_equal(ids, np.where(np.asarray(image_mask), VISION, TEXT))
  with pytest.raises(ValueError, match=r"marks \[2, 3\] image slots per row.*3 tokens"):
    lvlm.place_images(text, images, image_mask.at[0, 1].set(False))


def test_images_of_the_wrong_size_are_rejected():
  vit = lvlm.ViT(64, 8, 16, 1, 2, 32, 3, 8, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"do not fit the vision encoder.*64x64"):
    vit(jnp.zeros((2, 32, 32, 3), jnp.uint8))
  with pytest.raises(ValueError, match="not a multiple of patch_size"):
    lvlm.ViT(64, 7, 16, 1, 2, 32, 3, 8, rngs=nnx.Rngs(0))
  for override, key in (("vision.image_size=32", "image_size"), ("vision.patch_size=7", "image_size"),
                        ("vision.image_pool=3", "image_pool")):
    config = config_lib.load_config("configs/moiie/easyvqa_tiny.py", [override])
    with pytest.raises(config_lib.ConfigError, match=key):
      training.validate_config(config)


@pytest.mark.parametrize("spec", [MoESpec(), MoESpec(n_vision_intra=0, n_inter=4, n_text_intra=0,
                                                     per_modality_routers=False),
                                  MoESpec(n_vision_intra=1, n_inter=0, n_text_intra=1, top_k=1)],
                         ids=["moiie", "vanilla", "modality"])
@pytest.mark.parametrize("path", ["sparse", "reference"])
def test_upcycled_gradients_sum_to_the_dense_gradients(spec, path):
  """Right after upcycling, a token's output is sum_i w_i FFN(x) with sum_i w_i = 1, so each expert's weight
  gradient is the dense FFN's gradient from the tokens routed to it, weighted by w_i: the experts' gradients sum to
  the dense one, every other parameter gets the dense gradient, and the task loss sends nothing to the routers
  (only the aux loss does). This is the first stage-2 step of every variant starting where the dense run does."""
  spec = dataclasses.replace(spec, path=path)
  tokens, mask, positions, modality = _batch()
  cotangent = jax.random.normal(jax.random.key(2), (2, 12, CFG.vocab_size)) * mask[..., None]

  def task_loss(model):  # a fixed linear read-out of the logits on real tokens; the aux loss is left out
    logits, _ = upcycle.decoder_forward(model, model.embed_tokens(tokens), positions, mask, modality, mask)
    return jnp.sum(logits * cotangent)

  dense = llm_model.Llama(CFG, nnx.Rngs(0))
  want = nnx.to_pure_dict(nnx.state(jax.jit(nnx.grad(task_loss))(dense), nnx.Param))
  moe = llm_model.Llama(CFG, nnx.Rngs(0))
  layers = upcycle.upcycle(moe, spec, rngs=nnx.Rngs(1), router_init_std=1.0)
  got = nnx.to_pure_dict(nnx.state(jax.jit(nnx.grad(task_loss))(moe), nnx.Param))

  close = dict(rtol=1e-4, atol=1e-5)
  for i in layers:
    g_mlp, w_mlp = got["layers"][i].pop("mlp"), want["layers"][i].pop("mlp")
    for name in ("gate", "up", "down"):
      per_expert = jnp.max(jnp.abs(g_mlp[name]).reshape(g_mlp[name].shape[0], -1), axis=-1)
      assert bool(jnp.all(per_expert > 0)), (name, per_expert)  # every expert is reached by some token here
      np.testing.assert_allclose(np.sum(g_mlp[name], axis=0), w_mlp[f"{name}_proj"]["kernel"], **close)
    np.testing.assert_allclose(g_mlp["router"], 0.0, atol=1e-5)
  chex.assert_trees_all_close(got, want, **close)
