"""BSD's layer locality: the gradient of level i's local loss reaches only the two blocks producing level i.

No signed error vector crosses a level: for every level loss and every parameter outside its own blocks the
gradient is exactly zero (not small: zero), for the MLP and for the CNN with BatchNorm. One `jax.grad` of the
summed loss equals the sum of the per-level gradients, so the single jitted step is the local rule.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bsd import datasets, losses, methods, networks, training
from core import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _setup(arch, method="bsd"):
  overrides = ["model.reconstruct=true", "model.code_dim=20", f"method={method}"]
  if arch == "mlp":
    overrides += ["model.hidden=(12, 10)"]
  else:
    overrides += ["model.arch=cnn", "model.channels=(3, 4)", "model.hidden=(6,)", "model.batch_norm=true"]
    if arch == "cnn_after":  # the backward blocks upsample after their conv
      overrides += ["model.backward_upsample=after"]
  config = config_lib.load_config(os.path.join(ROOT, "configs/bsd/digits_mlp.py"), overrides)
  rng = np.random.default_rng(0)
  images = rng.random((16, 8, 8, 1)).astype(np.float32)
  labels = np.arange(16, dtype=np.int32) % 10
  data = datasets.TaskData(train={"image": images, "label": labels}, test={"image": images, "label": labels},
                           num_classes=10)
  model = training.build_model(config, data)
  obj = methods.make_objective(config)
  return model, obj, {"image": jnp.asarray(images), "label": jnp.asarray(labels)}


def _owner_blocks(model, level):
  """The blocks a level's local loss may reach: F_{level-1} and B_level."""
  owners = set()
  if level >= 1:
    owners.add(("forward", level - 1))
  if level < model.num_levels and level >= model.backward_start:
    owners.add(("backward", level - model.backward_start))
  return owners


def _grads_by_block(model, loss_of_model):
  """{(pathway, block index): [gradient leaves]} of a scalar loss, or of a vector of losses (leading axis)."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  # Jitted with the BatchNorm statistics as an argument: BatchNorm updates them in place while tracing.
  grads = jax.jit(jax.jacrev(lambda p, r: loss_of_model(nnx.merge(graphdef, p, r, copy=True))))(params, rest)
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(grads))[0]:
    keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
    out.setdefault((keys[0], int(keys[1])), []).append(np.asarray(leaf))
  return out


@pytest.mark.parametrize("arch", ["mlp", "cnn", "cnn_after"])
def test_each_local_loss_reaches_only_its_own_blocks(arch):
  model, obj, batch = _setup(arch)
  levels = list(range(model.num_levels + 1))

  def stacked(m):
    out = methods.local_losses(obj, m, batch)
    assert sorted(out) == levels  # reconstruction, hidden ReCo levels, top
    return jnp.stack([out[level] for level in levels])

  # One Jacobian: row `level` holds the gradient of that level's loss.
  grads = _grads_by_block(model, stacked)
  for level in levels:
    owners = _owner_blocks(model, level)
    for block, leaves in grads.items():
      rows = [g[level] for g in leaves]
      total = sum(float(np.abs(g).sum()) for g in rows)
      if block in owners:
        assert total > 0, f"level {level}: its own block {block} got no gradient"
      else:
        assert all(np.all(g == 0) for g in rows), f"level {level} leaked into {block}: {total}"


def test_the_training_loss_gradient_is_the_sum_of_local_gradients():
  model, obj, batch = _setup("mlp")
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def total(p):
    return methods.classify_loss(obj, nnx.merge(graphdef, p, rest), batch, jax.random.key(0))[0]

  def summed_levels(p):
    out = methods.local_losses(obj, nnx.merge(graphdef, p, rest), batch)
    # classify_loss weights: top, ReCo (reco_weight) and reconstruction (recon_weight) -- all 1 by default.
    return sum(out.values())

  g_total = jax.jit(jax.grad(total))(params)
  g_levels = jax.jit(jax.grad(summed_levels))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g_total, g_levels)


def test_bp_snn_is_not_local():
  """Sanity check of the test itself: with backprop the top loss does reach the first layer."""
  model, obj, batch = _setup("mlp", method="bp_snn")
  grads = _grads_by_block(model, lambda m: methods.classify_loss(obj, m, batch, jax.random.key(0))[0])
  assert sum(float(np.abs(g).sum()) for g in grads[("forward", 0)]) > 0


def test_dfa_updates_hidden_layers_without_backprop():
  """DFA on the classifier: hidden level i+1 learns from its own fixed projection dfa[i] of the output error only,
  so silencing dfa[i] zeroes the gradient of the block producing that level and leaves every other block's as it
  was (with backprop the levels' gradients would depend on each other)."""
  model, obj, batch = _setup("mlp", method="dfa")
  loss = lambda m: methods.classify_loss(obj, m, batch, jax.random.key(0))[0]  # noqa: E731
  base = _grads_by_block(model, loss)
  assert len(model.dfa) == model.num_levels - 1  # every hidden level, not the output block
  for i in range(len(model.dfa)):
    saved = model.dfa[i][...]
    model.dfa[i][...] = jnp.zeros_like(saved)
    silenced = _grads_by_block(model, loss)
    model.dfa[i][...] = saved
    for block in base:
      if block == ("forward", i):  # the block producing hidden level i + 1: no error reaches it any more
        assert any(np.any(g) for g in base[block]) and not any(np.any(g) for g in silenced[block]), block
      else:
        for a, b in zip(base[block], silenced[block]):
          np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_time_averaged_top_and_bottom_equal_the_average_over_steps(arch):
  """The classifier reads mean_t v_L and the reconstruction mean_t v_0; computing them once on the averaged
  spikes (affine blocks) gives the same numbers as averaging the per-step voltages."""
  model, obj, batch = _setup(arch)
  x = methods.to_float(batch["image"])
  full = networks.forward_pass(model, x, obj.spec, train=False, static=True)
  once = networks.forward_pass(model, x, obj.spec, train=False, static=True, top_mean=True)
  top = model.num_levels
  assert once.drives[top].shape[0] == 1 and full.drives[top].shape[0] == obj.spec.time_steps
  np.testing.assert_allclose(once.drives[top][0], full.drives[top].mean(0), rtol=1e-5, atol=1e-5)
  code = model.codes[...][batch["label"]]
  full_b = networks.backward_pass(model, code, obj.spec, train=False, static=True)
  once_b = networks.backward_pass(model, code, obj.spec, train=False, static=True, bottom_mean=True)
  np.testing.assert_allclose(once_b.drives[0][0], full_b.drives[0].mean(0), rtol=1e-5, atol=1e-5)


def test_fa_starts_from_the_same_forward_weights_as_the_other_methods():
  """FA's fixed feedback matrices do not shift the parameter stream: at one seed every forward kernel equals
  BP-SNN's and BSD's, so the methods differ only in how they learn."""
  kernels = {}
  for method in ("bp_snn", "fa", "bsd"):
    model, _, _ = _setup("mlp", method=method)
    kernels[method] = [np.asarray(block.kernel[...]) for block in model.forward]
  for method in ("fa", "bsd"):
    for a, b in zip(kernels[method], kernels["bp_snn"]):
      np.testing.assert_array_equal(a, b)


def test_dfa_without_hidden_levels_is_the_top_loss():
  config = config_lib.load_config(os.path.join(ROOT, "configs/bsd/digits_mlp.py"), ["method=dfa", "model.hidden=()"])
  rng = np.random.default_rng(0)
  images = rng.random((8, 8, 8, 1)).astype(np.float32)
  labels = np.arange(8, dtype=np.int32)
  data = datasets.TaskData(train={"image": images, "label": labels}, test={"image": images, "label": labels},
                           num_classes=10)
  model = training.build_model(config, data)
  obj = methods.make_objective(config)
  loss, metrics = methods.classify_loss(obj, model, {"image": jnp.asarray(images), "label": jnp.asarray(labels)},
                                        jax.random.key(0))
  np.testing.assert_allclose(loss, metrics["top_loss"], rtol=1e-6)


def test_odd_level_sizes_in_the_cnn_layout_are_a_clear_error():
  with pytest.raises(ValueError, match=r"level 3 of the cnn layout is 7x7.*even size.*model.channels"):
    networks.make_layout("cnn", (28, 28, 1), channels=(2, 3, 4), top_dim=10, backward_top_dim=10)
  networks.make_layout("cnn", (28, 28, 1), channels=(2, 3), top_dim=10, backward_top_dim=10)  # 28 -> 14 -> pool 7


def test_the_backward_blocks_upsample_after_or_before_their_conv():
  """"after": B_1 convolves level-2 spikes at 14x14 and repeats each value over a 2x2 block of level 1, and the
  dense block writes 7x7 and repeats it; "before": the repeated spikes are convolved at 28x28 (so neighbouring
  cells differ), and the dense block writes all 14x14 cells itself."""
  spikes = (np.random.default_rng(0).random((2, 14, 14, 4)) < 0.5).astype(np.float32)
  blocky = {}
  for order in networks.BACKWARD_UPSAMPLE:
    layout = networks.make_layout("cnn", (28, 28, 1), channels=(3, 4), hidden=(6,), top_dim=10, backward_top_dim=10,
                                  backward_upsample=order)
    net = networks.BSDNet(layout, rngs=nnx.Rngs(0), with_backward=True, reconstruct=False)
    conv, dense = net.backward[0], net.backward[1]
    assert conv.kernel.shape == (3, 3, 4, 3)
    assert dense.kernel.shape == (6, 7 * 7 * 4 if order == "after" else 14 * 14 * 4)
    v = np.asarray(conv(jnp.asarray(spikes), train=False))
    assert v.shape == (2, 28, 28, 3)
    blocky[order] = np.array_equal(v[:, 0::2, 0::2], v[:, 1::2, 1::2])
  assert blocky == {"after": True, "before": False}
  with pytest.raises(ValueError, match="backward_upsample = 'sideways'"):
    networks.make_layout("cnn", (28, 28, 1), channels=(3, 4), top_dim=10, backward_top_dim=10,
                         backward_upsample="sideways")


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_same_target_mask_comes_from_the_backward_voltages(arch):
  """Pairs are left out of the relaxed term exactly when their backward voltages are equal (a numpy row
  comparison): always for two samples of one class (also through BatchNorm), and for two classes only where the
  backward pathway happened to compute the same voltage (tiny layers here); a small difference still counts."""
  model, obj, batch = _setup(arch)
  labels = np.asarray(batch["label"])
  same_class = np.equal.outer(labels, labels)
  bwd = networks.backward_pass(model, model.codes[...][batch["label"]], obj.spec, train=True, static=True)
  for level in range(1, model.num_levels):
    for b in (bwd.drives[level].mean(0), bwd.drives[level][1], bwd.membranes[level].mean(0)):
      rows = np.asarray(b).reshape(b.shape[0], -1)
      equal = np.array([[np.array_equal(x, y) for y in rows] for x in rows])
      assert equal[same_class].all()
      np.testing.assert_array_equal(np.asarray(methods._negatives(b)), 1.0 - equal, err_msg=str(level))
  b = bwd.drives[1].mean(0)
  nudged = b.at[0].set(b[0] * (1 + 1e-5) + 1e-6)
  assert float(methods._negatives(jnp.stack([b[0], nudged[0]]))[0, 1]) == 1.0


@pytest.mark.parametrize("task", ["next_char", "forecast"])
def test_each_local_loss_of_the_recurrent_pair_reaches_only_its_own_blocks(task):
  """The RNN: the top loss and each hidden level's per-step ReCo (with the recurrent input s_{t-1} and every
  block input stop-gradiented) reach only the blocks producing that level, recurrent weights included."""
  name = "kjv_rnn" if task == "next_char" else "co2_rnn"
  vocab = datasets.kjv_vocab_size() if task == "next_char" else 0
  code_dim = 2 * vocab if task == "next_char" else 16
  config = config_lib.load_config(os.path.join(ROOT, f"configs/bsd/{name}.py"), [
      "model.hidden=(6, 5)", f"model.code_dim={code_dim}", "sequence.burn_in=2"])
  rng = np.random.default_rng(0)
  if task == "next_char":
    inputs = rng.integers(0, vocab, (4, 8)).astype(np.int32)
    targets = rng.integers(0, vocab, (4, 8)).astype(np.int32)
  else:
    inputs, targets = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=(4, 8)).astype(np.float32)
  batch = {"input": jnp.asarray(inputs), "target": jnp.asarray(targets)}
  data = datasets.TaskData(train=dict(batch), test=dict(batch), num_classes=vocab)
  model = training.build_model(config, data)
  obj = methods.make_objective(config)
  num = model.num_levels
  assert num == 3 and model.forward[0].recurrent is not None and model.forward[1].recurrent is not None

  def stacked(m):
    outputs, fwd = methods.sequence_outputs(obj, m, batch, vocab, train=True)
    bwd = networks.backward_pass(m, methods.sequence_top(obj, m, batch["target"]), obj.spec, train=True,
                                 static=False)
    per_level = [methods._alignment(obj, fwd, bwd, [level], per_step=True, steps=slice(obj.burn_in, None))[0]
                 for level in range(1, num)]
    return jnp.stack([*per_level, methods.sequence_top_loss(obj, outputs, batch["target"])[0]])

  grads = _grads_by_block(model, stacked)
  for row, level in enumerate(range(1, num + 1)):
    owners = _owner_blocks(model, level)
    for block, leaves in grads.items():
      rows = [g[row] for g in leaves]
      if block in owners:
        assert sum(float(np.abs(g).sum()) for g in rows) > 0, f"level {level}: its own block {block} got none"
      else:
        assert all(np.all(g == 0) for g in rows), f"level {level} leaked into {block}"


def test_no_error_flows_back_through_time_in_the_recurrent_pair():
  """v_t = W x_t + R s_{t-1} with s_{t-1} a stop-gradient: a ReCo loss on the last step only, whose input is 0,
  gives W exactly zero gradient (with the error through s_{t-1}, W would learn from the earlier steps' inputs)."""
  config = config_lib.load_config(os.path.join(ROOT, "configs/bsd/co2_rnn.py"), [
      "model.hidden=(6,)", "model.code_dim=16", "model.batch_norm=false", "sequence.burn_in=0"])
  rng = np.random.default_rng(0)
  inputs = rng.normal(size=(4, 8)).astype(np.float32)
  inputs[:, -1] = 0.0
  batch = {"input": jnp.asarray(inputs), "target": jnp.asarray(rng.normal(size=(4, 8)).astype(np.float32))}
  model = training.build_model(config, datasets.TaskData(train=dict(batch), test=dict(batch)))
  obj = methods.make_objective(config)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def last_step_reco(p):
    m = nnx.merge(graphdef, p, rest, copy=True)
    _, fwd = methods.sequence_outputs(obj, m, batch, 0, train=True)
    bwd = networks.backward_pass(m, methods.sequence_top(obj, m, batch["target"]), obj.spec, train=True,
                                 static=False)
    return methods._alignment(obj, fwd, bwd, [1], per_step=True, steps=slice(7, 8))[0]

  grads = jax.jit(jax.grad(last_step_reco))(params)
  assert np.all(np.asarray(grads["forward"][0]["kernel"]) == 0)
  assert np.abs(np.asarray(grads["forward"][0]["recurrent"])).sum() > 0  # R learns from s_{t-1} itself


def test_the_autoencoder_losses_reach_only_their_own_blocks_and_the_latent_loop():
  """Generation: the reconstruction loss reaches only the decoder's bottom block B_0; hidden level l's alignment
  reaches F_{l-1} and B_l; the latent level L-1 also reaches F_{L-1} through B_{L-1} (the documented two-block
  loop: the backward pathway is driven by the latent spikes). Nothing else, and every owner gets a gradient."""
  config = config_lib.load_config(os.path.join(ROOT, "configs/bsd/mnist_autoencoder.py"),
                                  ["model.hidden=(12, 10)", "model.code_dim=8", "neuron.time_steps=3"])
  rng = np.random.default_rng(0)
  images = (rng.random((16, 28, 28, 1)) * 255).astype(np.uint8)
  labels = np.arange(16, dtype=np.int32) % 10
  data = datasets.TaskData(train={"image": images, "label": labels}, test={"image": images, "label": labels},
                           num_classes=10)
  model, obj = training.build_model(config, data), methods.make_objective(config)
  x = methods.to_float(jnp.asarray(images))
  top = model.num_levels - 1  # the latent level: the decoder's input

  def stacked(m):
    recon, fwd, bwd = methods.generate_outputs(obj, m, jnp.asarray(images), train=True)
    out = [losses.reconstruction_loss(recon, x)]
    out += [methods._alignment(obj, fwd, bwd, [level], per_step=obj.reco_time == "per_step")[0]
            for level in range(1, top + 1)]
    return jnp.stack(out)

  grads = _grads_by_block(model, stacked)
  owners = {0: {("backward", 0)}}
  owners.update({level: {("forward", level - 1), ("backward", level)} for level in range(1, top + 1)})
  owners[top].add(("forward", top))
  for level, own in owners.items():
    for block, leaves in grads.items():
      total = sum(float(np.abs(g[level]).sum()) for g in leaves)
      if block in own:
        assert total > 0, f"level {level}: its own block {block} got no gradient"
      else:
        assert total == 0, f"level {level} leaked into {block}: {total}"
