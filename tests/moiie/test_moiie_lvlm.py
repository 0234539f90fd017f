"""A tiny MoIIE LVLM overfits a few examples through the stage-2 update (moiie/lvlm.py, moiie/training.py)."""

import jax
import numpy as np
import optax
from flax import nnx

from core import train as train_lib
from core.llm import config as llm_config
from core.llm import model as llm_model
from moiie import lvlm, training, upcycle
from moiie.routing import MoESpec


def test_tiny_lvlm_overfits_a_few_examples():
  rng = np.random.default_rng(0)
  n, seq, n_img, vocab = 8, 10, 4, 16
  images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  tokens = np.tile(rng.integers(2, vocab, (1, seq)), (n, 1)).astype(np.int32)  # one prompt for every row
  image_mask = np.zeros((n, seq), bool)
  image_mask[:, 1:1 + n_img] = True
  attention = np.ones((n, seq), bool)
  attention[:, -1] = False  # one padding slot per row
  loss_mask = np.zeros((n, seq), bool)
  loss_mask[:, 6:8] = True  # two answer tokens per row: the text before them is the same in every row, so only
  tokens[:, 7] = rng.permutation(np.arange(2, vocab))[:n]  # the image tells the rows apart (distinct first
  tokens[:, 8] = rng.integers(2, vocab, n)  # answer tokens)
  targets = np.concatenate([tokens[:, 1:], np.zeros((n, 1), np.int32)], 1)
  batch = {"image": images, "tokens": tokens, "image_mask": image_mask, "attention_mask": attention,
           "targets": targets, "loss_mask": loss_mask}

  rngs = nnx.Rngs(0)
  vit = lvlm.ViT(32, 8, 16, 1, 2, 32, 3, 8, rngs=rngs)
  llm = llm_model.Llama(llm_config.tiny(num_layers=2, hidden_size=32, intermediate_size=64, vocab_size=vocab,
                                        num_heads=2, num_kv_heads=1), rngs)
  model = lvlm.LVLM(vit, lvlm.Projector(16, 32, rngs), llm, image_pool=2)  # a 4x4 patch grid pooled to 4 tokens
  upcycle.upcycle(model.llm, MoESpec(block_size=8), rngs=rngs)
  trainable = training._trainable_all_but_vit()  # stage 2's filter
  tx = optax.adam(1e-2)
  graphdef, state = train_lib.create_train_state(model, tx, trainable)
  step = jax.jit(train_lib.make_train_step(graphdef, training.lvlm_loss, tx, trainable))
  vit_before = jax.tree.leaves(nnx.state(model.vit))
  # The ViT's outputs pass a stop_gradient, so Adam would leave it unchanged even if it were trained: check that
  # neither the parameters nor the optimizer state hold it at all.
  for tree in (state.params, state.opt_state):
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert paths and not [p for p in paths if "vit" in p], paths[:5]
  for i in range(60):
    state, metrics = step(state, batch, jax.random.key(i))
  assert float(metrics["exact_match"]) == 1.0, metrics
  assert float(metrics["answer_nll"]) < 0.05
  assert float(metrics["aux_loss"]) > 0  # the MoE layers were in the graph
  trained = train_lib.model_from_state(graphdef, state)
  # the answers come through the image path: with the images given to other rows, they are lost
  shuffled = dict(batch, image=np.roll(images, 1, axis=0))
  assert float(training.lvlm_loss(trained, shuffled, None)[1]["exact_match"]) < 0.5
  for a, b in zip(vit_before, jax.tree.leaves(nnx.state(trained.vit))):  # the frozen encoder did not move
    np.testing.assert_array_equal(a, b)
