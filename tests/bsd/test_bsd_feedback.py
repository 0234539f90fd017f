"""Feedback alignment and direct feedback alignment on every task family (bsd/networks.py `feedback_linear`,
bsd/methods.py `_dfa_term`): the baselines of arXiv 2509.20284's comparison, on the MLP, the autoencoder and the
recurrent network.

FA: a block's input-gradient goes through a fixed random copy of its weights (Lillicrap et al. 2016), so with
every feedback matrix set to the weights themselves FA *is* backprop (checked to the bit pattern of BP-SNN's
gradient, recurrent weights included). DFA: the output error reaches each hidden level through that level's own
fixed matrix (Nokland 2016), so a level's blocks depend on their own matrix only, and the output block gets
exactly backprop's gradient.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bsd import datasets, methods, networks, training
from core import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_feedback_linear_dense_and_conv_gradients():
  ks = jax.random.split(jax.random.key(0), 6)
  x, w, fb, g = (jax.random.normal(ks[0], (5, 7)), jax.random.normal(ks[1], (7, 3)),
                 jax.random.normal(ks[2], (7, 3)), jax.random.normal(ks[3], (5, 3)))
  _, vjp = jax.vjp(networks._FA_DENSE, x, w, fb)
  dx, dw, dfb = vjp(g)
  np.testing.assert_allclose(dx, g @ fb.T, rtol=1e-5, atol=1e-6)  # the feedback matrix, not w
  np.testing.assert_allclose(dw, x.T @ g, rtol=1e-5, atol=1e-6)  # the weight gradient is backprop's
  assert not np.any(np.asarray(dfb))  # the feedback is fixed
  np.testing.assert_allclose(networks._FA_DENSE(x, w, fb), x @ w, rtol=1e-6)
  xi, wc, fc = (jax.random.normal(ks[4], (2, 6, 6, 3)), jax.random.normal(ks[5], (3, 3, 3, 4)),
                jax.random.normal(ks[0], (3, 3, 3, 4)))
  gc = jnp.ones((2, 6, 6, 4))
  dxi, dwc, _ = jax.vjp(networks._FA_CONV, xi, wc, fc)[1](gc)
  np.testing.assert_allclose(dxi, jax.vjp(lambda a: networks._conv_op(a, fc), xi)[1](gc)[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dwc, jax.vjp(lambda b: networks._conv_op(xi, b), wc)[1](gc)[0], rtol=1e-5, atol=1e-5)


def _task(name, method, *overrides):
  """A tiny model, its loss and one batch for a task family (random inputs of the task's shapes)."""
  config = config_lib.load_config(os.path.join(ROOT, "configs/bsd", f"{name}:quick,{method}"), list(overrides))
  rng = np.random.default_rng(0)
  if config.task == "generate":
    images = rng.random((12, 28, 28, 1)).astype(np.float32)
    split = {"image": images, "label": np.zeros(12, np.int32)}
    data, batch = datasets.TaskData(train=split, test=split, num_classes=10), {"image": jnp.asarray(images)}
  elif config.task == "next_char":
    chars = rng.integers(0, 63, (8, 13)).astype(np.int32)
    split = {"input": chars[:, :-1], "target": chars[:, 1:]}
    data = datasets.TaskData(train=split, test=split, num_classes=63)
    batch = {k: jnp.asarray(v) for k, v in split.items()}
  else:
    series = rng.standard_normal((8, 13)).astype(np.float32)
    split = {"input": series[:, :-1], "target": series[:, 1:]}
    data = datasets.TaskData(train=split, test=split)
    batch = {k: jnp.asarray(v) for k, v in split.items()}
  model = training.build_model(config, data)
  obj = methods.make_objective(config)
  return model, training.make_loss_fn(config, obj, data), obj, batch


TASKS = {
    "generate": ("mnist_autoencoder.py", "model.hidden=(24,)", "model.code_dim=8", "neuron.time_steps=3"),
    "next_char": ("kjv_rnn.py", "model.hidden=(16, 12)", "sequence.burn_in=3"),
    "forecast": ("co2_rnn.py", "model.hidden=(16,)", "sequence.burn_in=3"),
}


def _grads(model, loss_fn, batch):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  grad = jax.jit(jax.grad(lambda p, r: loss_fn(nnx.merge(graphdef, p, r, copy=True), batch, jax.random.key(0))[0]))
  return nnx.to_pure_dict(grad(params, rest))


def _block_grads(grads, pathway, index):
  return jax.tree.leaves(grads[pathway][index])


@pytest.mark.parametrize("task", list(TASKS))
def test_fa_with_feedback_equal_to_the_weights_is_backprop(task):
  name, *overrides = TASKS[task]
  fa, fa_loss, _, batch = _task(name, "fa", *overrides)
  bp, bp_loss, _, _ = _task(name, "bp_snn", *overrides)
  blocks = list(fa.forward) + list(fa.backward)
  assert all(b.feedback is not None for b in blocks)
  if task != "generate":
    assert all(b.recurrent_feedback is not None for b in fa.forward if b.recurrent is not None)
    assert any(b.recurrent is not None for b in fa.forward)
  g_random = _grads(fa, fa_loss, batch)
  for b in blocks:  # transport the weights into the feedback paths: FA becomes exact backprop
    b.feedback[...] = b.kernel[...]
    if b.recurrent is not None:
      b.recurrent_feedback[...] = b.recurrent[...]
  g_fa, g_bp = _grads(fa, fa_loss, batch), _grads(bp, bp_loss, batch)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g_fa, g_bp)
  # with random feedback the first block learns from a different (aligned-to-be) signal; the output block does not
  assert not np.allclose(_block_grads(g_random, "forward", 0)[0], _block_grads(g_bp, "forward", 0)[0])
  out = ("backward", 0) if task == "generate" else ("forward", len(fa.forward) - 1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               _block_grads(g_random, *out), _block_grads(g_bp, *out))


def _hidden_owners(model, task):
  """(matrix list, index) -> the block producing that hidden level: F_{i-1} for forward level i, B_i for the
  decoder's level i."""
  owners = {("dfa", i): ("forward", i) for i in range(len(model.dfa))}
  if task == "generate":
    owners.update({("dfa_backward", i): ("backward", i + 1) for i in range(len(model.dfa_backward))})
  return owners


@pytest.mark.parametrize("task", list(TASKS))
def test_dfa_each_level_learns_from_its_own_projection_only(task):
  name, *overrides = TASKS[task]
  model, loss_fn, _, batch = _task(name, "dfa", *overrides)
  bp, bp_loss, _, _ = _task(name, "bp_snn", *overrides)
  owners = _hidden_owners(model, task)
  expected = {"generate": 2 + 1, "next_char": 2, "forecast": 1}[task]  # encoder levels + latent (+ decoder)
  assert len(owners) == expected
  err = 784 if task == "generate" else (126 if task == "next_char" else 1)
  assert model.dfa_error_dim == err and all(
      getattr(model, m)[i][...].shape[0] == err for m, i in owners)
  base = _grads(model, loss_fn, batch)
  # The output block (B_0 of the decoder, the top forward block otherwise) gets backprop's exact gradient.
  out = ("backward", 0) if task == "generate" else ("forward", len(model.forward) - 1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               _block_grads(base, *out), _block_grads(_grads(bp, bp_loss, batch), *out))
  for (matrices, i), owner in owners.items():
    saved = getattr(model, matrices)[i][...]
    getattr(model, matrices)[i][...] = jnp.zeros_like(saved)
    zeroed = _grads(model, loss_fn, batch)
    getattr(model, matrices)[i][...] = saved
    for pathway in ("forward", "backward"):
      for j in range(len(getattr(model, pathway))):
        before, after = _block_grads(base, pathway, j), _block_grads(zeroed, pathway, j)
        if (pathway, j) == owner:  # its own matrix silenced: its block learns nothing
          assert any(np.abs(a).sum() > 0 for a in before) and all(not np.any(a) for a in after), owner
        else:  # every other block is untouched: no error crosses a level
          for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)


def test_fa_and_dfa_train_the_sequence_and_generation_tasks(tmp_path):
  quiet = ["train.progress_bar=false", "train.tensorboard=false", "eval.plots=false"]
  for method in ("fa", "dfa"):
    config = config_lib.load_config(os.path.join(ROOT, f"configs/bsd/co2_rnn.py:quick,{method}"), [
        *quiet, "train.num_steps=40", "optimizer.warmup_steps=2", "train.checkpoint_every=40", "sequence.length=16",
        "sequence.burn_in=4", "model.hidden=(16,)"])
    results = training.train_and_evaluate(config, str(tmp_path / f"co2_{method}"))
    # below the train-mean predictor's MSE: it learned something about the series
    assert results["test_mse"] < results["test_mse_train_mean"], (method, results)
    config = config_lib.load_config(os.path.join(ROOT, f"configs/bsd/mnist_autoencoder.py:quick,{method}"), [
        *quiet, "train_subset=512", "test_subset=100", "train.num_steps=40", "optimizer.warmup_steps=2",
        "train.checkpoint_every=40", "eval.frechet_classifier_steps=30", "model.hidden=(64,)",
        "model.code_dim=16", "neuron.time_steps=2"])
    results = training.train_and_evaluate(config, str(tmp_path / f"ae_{method}"))
    assert results["test_recon_mse"] < 0.15, (method, results)  # an all-0.5 output scores ~0.2
