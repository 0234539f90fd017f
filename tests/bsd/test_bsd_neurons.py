"""LIF dynamics on a hand-worked input, exact 0/1 spikes, and the surrogate gradients' values and shapes."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bsd import neurons

X = jnp.array([0.6, 0.6, 0.6, 1.2, 0.0])


def test_lif_hard_reset_hand_worked():
  # beta = 1 - 1/2 = 0.5, threshold 1:  H = 0.6, 0.9, 1.05 (spike, reset to 0), 1.2 (spike), 0.
  p = neurons.LIFParams(tau=2.0, threshold=1.0, reset="hard")
  spikes, h = neurons.lif(p, X)
  np.testing.assert_allclose(h, [0.6, 0.9, 1.05, 1.2, 0.0], atol=1e-6)
  np.testing.assert_array_equal(spikes, [0, 0, 1, 1, 0])


def test_lif_soft_reset_hand_worked():
  # Soft reset subtracts the threshold: after 1.05 the potential keeps 0.05, then 0.025 + 1.2 = 1.225 (spike),
  # keeps 0.225, then 0.1125.
  p = neurons.LIFParams(tau=2.0, threshold=1.0, reset="soft")
  spikes, h = neurons.lif(p, X)
  np.testing.assert_allclose(h, [0.6, 0.9, 1.05, 1.225, 0.1125], atol=1e-6)
  np.testing.assert_array_equal(spikes, [0, 0, 1, 1, 0])


def test_lif_decay_input_hand_worked():
  # H = 0.5 U + 0.5 X, threshold 0.5: 0.3, 0.45, 0.525 (spike, reset), 0.6 (spike), 0.
  p = neurons.LIFParams(tau=2.0, threshold=0.5, reset="hard", decay_input=True)
  spikes, h = neurons.lif(p, X)
  np.testing.assert_allclose(h, [0.3, 0.45, 0.525, 0.6, 0.0], atol=1e-6)
  np.testing.assert_array_equal(spikes, [0, 0, 1, 1, 0])


@pytest.mark.parametrize("reset", neurons.RESETS)
@pytest.mark.parametrize("surrogate", neurons.SURROGATES)
def test_spikes_are_exactly_binary(reset, surrogate):
  x = jax.random.normal(jax.random.key(0), (6, 32, 17)) * 2.0
  p = neurons.LIFParams(reset=reset, surrogate=surrogate)
  spikes, h = neurons.lif(p, x)
  chex.assert_shape(spikes, x.shape)
  chex.assert_shape(h, x.shape)
  assert spikes.dtype == jnp.float32
  assert set(np.unique(np.asarray(spikes)).tolist()) == {0.0, 1.0}


# g at x = 0.1, by hand: sigmoid 4 s(0.4)(1 - s(0.4)); atan 1 / (1 + (0.1 pi)^2); SuperSpike 1 / (1 + 10 * 0.1)^2;
# triangle 2 (1 - 2 * 0.1).
_SIG = 1.0 / (1.0 + math.exp(-0.4))
_AT_TENTH = {"sigmoid": 4.0 * _SIG * (1.0 - _SIG), "atan": 1.0 / (1.0 + (0.1 * math.pi) ** 2), "superspike": 0.25,
             "triangle": 1.6}


@pytest.mark.parametrize("kind,alpha,at_zero", [("sigmoid", 4.0, 1.0), ("atan", 2.0, 1.0),
                                                ("superspike", 10.0, 1.0), ("triangle", 2.0, 2.0)])
def test_surrogate_gradient_values(kind, alpha, at_zero):
  """g(0): sigmoid alpha/4 = 1 at alpha 4, atan alpha/2 = 1 at alpha 2, SuperSpike 1, triangle alpha; and g(0.1)
  against the formulas worked by hand (above), on both sides of the threshold."""
  spike = neurons.spike_function(kind, alpha)
  for at in (0.1, -0.1):
    np.testing.assert_allclose(jax.grad(spike)(jnp.float32(at)), _AT_TENTH[kind], rtol=1e-5)
  x = jnp.linspace(-3.0, 3.0, 601)
  grad = jax.grad(lambda z: jnp.sum(spike(z)))(x)
  chex.assert_shape(grad, x.shape)
  np.testing.assert_allclose(grad, neurons.surrogate_grad(kind, alpha, x), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(spike)(jnp.float32(0.0)), at_zero, rtol=1e-6)
  # The forward value is the step function whatever the surrogate.
  np.testing.assert_array_equal(spike(x), (x >= 0).astype(jnp.float32))
  if kind != "superspike":  # sigmoid, atan and triangle are normalised densities
    wide = jnp.linspace(-200.0, 200.0, 400001)
    area = float(jnp.sum(neurons.surrogate_grad(kind, alpha, wide)) * (wide[1] - wide[0]))
    assert abs(area - 1.0) < 0.01, area
  if kind == "triangle":
    assert float(jax.grad(spike)(jnp.float32(1.5 / alpha))) == 0.0


def test_gradient_flows_through_lif_over_time():
  p = neurons.LIFParams(tau=2.0, threshold=0.6, surrogate="atan")
  x = jnp.full((4, 3), 0.5)
  grad = jax.grad(lambda z: jnp.sum(neurons.lif(p, z)[0]))(x)
  chex.assert_shape(grad, x.shape)
  assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad) > 0)
  # The first step's input also reaches later steps through the membrane (leak beta = 0.5).
  later = jax.grad(lambda z: neurons.lif(p, z)[0][1].sum())(x)
  assert float(later[0].sum()) != 0.0 and float(later[2:].sum()) == 0.0


def test_detach_reset_changes_only_the_gradient():
  x = jax.random.normal(jax.random.key(1), (5, 8)) + 0.8
  a, b = neurons.LIFParams(detach_reset=False), neurons.LIFParams(detach_reset=True)
  np.testing.assert_array_equal(neurons.lif(a, x)[0], neurons.lif(b, x)[0])
  ga = jax.grad(lambda z: neurons.lif(a, z)[0].sum())(x)
  gb = jax.grad(lambda z: neurons.lif(b, z)[0].sum())(x)
  assert not np.allclose(ga, gb)


@pytest.mark.parametrize("reset,surrogate,detach_reset,decay_input", [
    *[("hard", kind, False, False) for kind in neurons.SURROGATES],
    ("hard", "atan", True, True), ("soft", "sigmoid", False, True), ("soft", "atan", True, False)])
def test_fused_lif_gradient_equals_autodiff_through_the_scan(reset, surrogate, detach_reset, decay_input):
  """`lif`'s hand-written reverse pass gives the gradient of `lif_reference` (autodiff of `lif_step`'s scan)."""
  p = neurons.LIFParams(reset=reset, surrogate=surrogate, detach_reset=detach_reset, decay_input=decay_input)
  keys = jax.random.split(jax.random.key(3), 4)
  x = jax.random.normal(keys[0], (5, 7, 9)) + 0.5
  u0 = 0.3 * jax.random.normal(keys[1], (7, 9))
  ws, wh = jax.random.normal(keys[2], x.shape), jax.random.normal(keys[3], x.shape)

  def grads(fn):
    both = lambda z, u: jnp.sum(fn(p, z, u)[0] * ws) + jnp.sum(fn(p, z, u)[1] * wh)
    # Spikes only and membrane only: the unused output is never read, so its cotangent is a symbolic zero and
    # the fused backward's branches for a missing cotangent run (a 0.0 weight would give a real zero array).
    spikes_only = lambda z, u: jnp.sum(fn(p, z, u)[0] * ws)
    membrane_only = lambda z, u: jnp.sum(fn(p, z, u)[1] * wh)
    return jax.jit(lambda z, u: [jax.grad(loss, argnums=(0, 1))(z, u)
                                 for loss in (both, spikes_only, membrane_only)])(x, u0)

  for fused, ref in zip(grads(neurons.lif), grads(neurons.lif_reference)):
    for a, b in zip(fused, ref):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  s, h = neurons.lif(p, x, u0)
  s_ref, h_ref = neurons.lif_reference(p, x, u0)
  np.testing.assert_array_equal(s, s_ref)
  np.testing.assert_allclose(h, h_ref, rtol=1e-6, atol=1e-6)
