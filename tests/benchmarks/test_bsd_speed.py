"""benchmarks.bsd_speed: the peers' "same rewrite" form computes what their idiomatic form computes.

The rewrite (fc1 once for the static image, the head once on the time-averaged spikes) must change only the work,
not the numbers: same read-out and same gradients with the same weights. Skipped where a peer is not installed.
"""

import importlib.util

import numpy as np
import pytest

from benchmarks import bsd_speed

HIDDEN, T, B = (32, 24), 4, 6


def _images():
  return np.random.default_rng(0).integers(0, 256, (B, 28, 28, 1), dtype=np.uint8)


def test_forward_madds_count_the_rewrite():
  # 784-512-512-100, T=4: the figures the README quotes (~1.50M vs ~2.86M)
  assert bsd_speed.forward_madds_per_sample((512, 512), 4, rewrite=True) == 784 * 512 + 4 * 512 * 512 + 512 * 100
  assert bsd_speed.forward_madds_per_sample((512, 512), 4, rewrite=False) == 4 * (784 * 512 + 512 * 512 + 512 * 100)


def test_spyx_rewrite_matches_idiomatic_loop():
  pytest.importorskip("spyx")
  import jax
  import jax.numpy as jnp
  from flax import nnx
  model = bsd_speed.spyx_model(HIDDEN)
  graphdef, params = nnx.split(model)
  images = jnp.asarray(_images())

  def readout(p, rewrite):
    return bsd_speed.spyx_outputs(nnx.merge(graphdef, p), images, T, rewrite)

  idiomatic, rewritten = readout(params, False), readout(params, True)
  assert float(jnp.std(idiomatic, axis=0).max()) > 1e-3  # spikes happened: rows differ, not just the head's bias
  np.testing.assert_allclose(rewritten, idiomatic, rtol=1e-5, atol=1e-5)
  grads = [jax.grad(lambda p, r=r: jnp.sum(readout(p, r) ** 2))(params) for r in (False, True)]
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_snntorch_rewrite_matches_idiomatic_loop():
  pytest.importorskip("snntorch")
  torch = pytest.importorskip("torch")
  net = bsd_speed.snntorch_net(HIDDEN)
  linears, head, _ = net
  params = list(linears.parameters()) + list(head.parameters())
  images = torch.tensor(_images(), dtype=torch.float32).reshape(B, -1) / 255.0
  results = []
  for rewrite in (False, True):
    for p in params:
      p.grad = None
    out = bsd_speed.snntorch_outputs(net, images, T, rewrite)
    (out ** 2).sum().backward()
    results.append((out.detach().numpy(), [p.grad.numpy().copy() for p in params]))
  (out_a, grads_a), (out_b, grads_b) = results
  assert out_a.std(axis=0).max() > 1e-3
  np.testing.assert_allclose(out_b, out_a, rtol=1e-5, atol=1e-5)
  for a, b in zip(grads_a, grads_b):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_spyx_runner_steps_with_donated_state():
  pytest.importorskip("spyx")
  run = bsd_speed.spyx_runner(HIDDEN, 2, B, rewrite=True)
  first, second = float(run()), float(run())  # the second call reads the buffers the first donated and replaced
  assert np.isfinite(first) and np.isfinite(second) and first != second


def test_every_contestant_trains_the_same_weight_matrices():
  # the same work per step: ours, spyx's and snnTorch's BP-SNN multiply by matrices of the same shapes
  import jax
  from flax import nnx
  _, state = bsd_speed.ours_step("bp_snn", HIDDEN, T)
  ours = sorted(x.shape for x in jax.tree.leaves(state.params) if np.ndim(x) == 2)
  assert ours == [(HIDDEN[1], bsd_speed.CODE_DIM), (HIDDEN[0], HIDDEN[1]), (784, HIDDEN[0])]
  if importlib.util.find_spec("spyx") is not None:
    spyx = bsd_speed.spyx_model(HIDDEN)
    assert sorted(x.shape for x in jax.tree.leaves(nnx.state(spyx, nnx.Param)) if np.ndim(x) == 2) == ours
  if importlib.util.find_spec("snntorch") is not None:
    linears, head, _ = bsd_speed.snntorch_net(HIDDEN)
    torch_shapes = sorted(tuple(p.shape[::-1]) for p in [*linears.parameters(), *head.parameters()] if p.ndim == 2)
    assert torch_shapes == ours
