"""Leaky integrate-and-fire neurons and surrogate spike gradients (BSD, arXiv 2509.20284, Sec. 3.1).

The paper's neuron model: a layer's voltage (input current) `v_i = W_{i-1} s_{i-1}` is integrated by a LIF
membrane and thresholded into spikes `s_i = LIF(v_i)`, over T time steps; learning uses surrogate gradients.
The paper does not give the time constant, the reset or the surrogate, so each is a parameter here (defaults
in `neuron_config`, stated in bsd/README.md).

Membrane update at step t (H is the pre-spike potential, U the post-reset potential):

    decay_input=False:  H[t] = beta * U[t-1] + X[t]                  (snnTorch `Leaky`)
    decay_input=True:   H[t] = beta * U[t-1] + (1 - beta) * X[t]     (SpikingJelly `LIFNode`, v_reset=0)
    S[t] = Heaviside(H[t] - threshold)
    U[t] = H[t] * (1 - S[t])                 (hard reset to 0)
    U[t] = H[t] - threshold * S[t]           (soft reset: subtract the threshold)

with beta = 1 - 1/tau.  The forward value of a spike is exactly 0.0 or 1.0; its derivative is replaced by a
surrogate g(H - threshold), implemented with `jax.custom_vjp`:

    sigmoid     g(x) = alpha * sig(alpha x) * (1 - sig(alpha x))          (integrates to 1)
    atan        g(x) = (alpha / 2) / (1 + (pi/2 * alpha * x)^2)           (SpikingJelly ATan; integrates to 1)
    superspike  g(x) = 1 / (1 + alpha |x|)^2                              (Zenke & Ganguli 2018; peak 1)
    triangle    g(x) = alpha * max(0, 1 - alpha |x|)                      (Bellec et al. 2018; integrates to 1)

`lif` runs the recursion over time with one `lax.scan` and has a hand-written reverse scan as its `custom_vjp`:
the same surrogate gradient as autodiff through `lif_step` (`lif_reference`, checked by the tests), but it keeps
only H for the backward pass and skips it when no gradient reaches the neuron (BSD's drive alignment).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from jax.custom_derivatives import SymbolicZero

from core import config as config_lib

SURROGATES = ("sigmoid", "atan", "superspike", "triangle")
RESETS = ("hard", "soft")


def surrogate_grad(kind: str, alpha: float, x: jax.Array) -> jax.Array:
  """The surrogate derivative g(x) of the Heaviside step at x = H - threshold (formulas in the docstring)."""
  if kind == "sigmoid":
    sig = jax.nn.sigmoid(alpha * x)
    return alpha * sig * (1.0 - sig)
  if kind == "atan":
    return (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * x) ** 2)
  if kind == "superspike":
    return 1.0 / (1.0 + alpha * jnp.abs(x)) ** 2
  if kind == "triangle":
    return alpha * jnp.maximum(0.0, 1.0 - alpha * jnp.abs(x))
  raise ValueError(f"unknown surrogate {kind!r}; valid: {SURROGATES}")


@functools.lru_cache(maxsize=None)
def spike_function(kind: str, alpha: float) -> Callable[[jax.Array], jax.Array]:
  """Heaviside(x) in the forward pass (exactly 0/1, in x's dtype), surrogate g(x) in the backward pass.

  Cached per (kind, alpha) so that every call site shares one `custom_vjp` object (one trace each).
  """
  if kind not in SURROGATES:
    raise ValueError(f"unknown surrogate {kind!r}; valid: {SURROGATES}")

  @jax.custom_vjp
  def spike(x):
    return (x >= 0).astype(x.dtype)

  def fwd(x):
    return spike(x), x

  def bwd(x, g):
    return (g * surrogate_grad(kind, alpha, x).astype(g.dtype),)

  spike.defvjp(fwd, bwd)
  return spike


class LIFParams(NamedTuple):
  """Static neuron parameters (hashable, so they can be closed over by jitted functions)."""
  tau: float = 2.0
  threshold: float = 0.6
  reset: str = "hard"
  surrogate: str = "atan"
  alpha: float = 2.0
  detach_reset: bool = False
  decay_input: bool = False

  @property
  def beta(self) -> float:
    return 1.0 - 1.0 / self.tau


def neuron_config(**overrides) -> ml_collections.ConfigDict:
  """The `neuron` config section: every number of the LIF model and its surrogate.

  time_steps: T, how many steps a static input is presented (the paper: 4; 8 for the autoencoder).
  The remaining fields are `LIFParams`; the paper leaves them open, these defaults train well here.
  """
  return config_lib.section("neuron", dict(
      time_steps=4, tau=2.0, threshold=0.6, reset="hard", surrogate="atan", alpha=2.0, detach_reset=False,
      decay_input=False), overrides)


def validate_neuron_config(config: ml_collections.ConfigDict, prefix: str = "neuron") -> None:
  config_lib.check_positive(config, f"{prefix}.time_steps")
  config_lib.check(config, f"{prefix}.tau", lambda v: v >= 1.0, "must be >= 1 (beta = 1 - 1/tau in [0, 1))")
  config_lib.check_positive(config, f"{prefix}.threshold")
  config_lib.check_choice(config, f"{prefix}.reset", RESETS)
  config_lib.check_choice(config, f"{prefix}.surrogate", SURROGATES)
  config_lib.check_positive(config, f"{prefix}.alpha")


def params_from_config(section: ml_collections.ConfigDict) -> LIFParams:
  return LIFParams(tau=float(section.tau), threshold=float(section.threshold), reset=str(section.reset),
                   surrogate=str(section.surrogate), alpha=float(section.alpha),
                   detach_reset=bool(section.detach_reset), decay_input=bool(section.decay_input))


def lif_step(params: LIFParams, u: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One step: (post-reset potential U[t-1], input X[t]) -> (U[t], spike S[t], pre-spike potential H[t])."""
  beta = params.beta
  h = beta * u + ((1.0 - beta) * x if params.decay_input else x)
  s = spike_function(params.surrogate, params.alpha)(h - params.threshold)
  # Detaching the spike in the reset keeps the surrogate out of the reset path (SpikingJelly's detach_reset).
  r = jax.lax.stop_gradient(s) if params.detach_reset else s
  if params.reset == "hard":
    u_new = h * (1.0 - r)
  elif params.reset == "soft":
    u_new = h - params.threshold * r
  else:
    raise ValueError(f"unknown reset {params.reset!r}; valid: {RESETS}")
  return u_new, s, h


def lif_reference(params: LIFParams, x: jax.Array, u0: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """`lif` differentiated by JAX's autodiff through `lax.scan` of `lif_step` (the reference that `lif` matches)."""
  if u0 is None:
    u0 = jnp.zeros(x.shape[1:], x.dtype)

  def body(u, xt):
    u, s, h = lif_step(params, u, xt)
    return u, (s, h)

  _, (spikes, membrane) = jax.lax.scan(body, u0, x)
  return spikes, membrane


def _lif_forward(params: LIFParams, x: jax.Array, u0: jax.Array) -> tuple[jax.Array, jax.Array]:
  beta, theta = params.beta, params.threshold

  def body(u, xt):
    h = beta * u + ((1.0 - beta) * xt if params.decay_input else xt)
    s = (h >= theta).astype(h.dtype)
    u = h * (1.0 - s) if params.reset == "hard" else h - theta * s
    return u, (s, h)

  # Unrolled: T is small (4-8 for images), and one straight-line body lets XLA fuse the steps' elementwise
  # work into a few loops instead of paying a while-loop iteration (and its slicing) per step.
  _, (spikes, membrane) = jax.lax.scan(body, u0, x, unroll=min(x.shape[0], 16))
  return spikes, membrane


def _lif_backward(params: LIFParams, membrane: jax.Array, g_spikes: jax.Array | None,
                  g_membrane: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """Reverse pass of the LIF recursion from the saved pre-spike potentials H only (spikes are recomputed).

  With r the spike as seen by the reset (s, or a constant if detach_reset) and g = surrogate(H - threshold):
  dS/dH = g;  dU/dH = (1 - s) - H g [- H g dropped if detached] (hard) or 1 - threshold g [...] (soft);
  dH[t]/dU[t-1] = beta;  dH/dX = 1 or (1 - beta) (decay_input). A cotangent given as None is zero.
  """
  beta, theta = params.beta, params.threshold
  in_scale = (1.0 - beta) if params.decay_input else 1.0

  def body(g_u, inputs):
    h, gs, gh_direct = inputs
    s = (h >= theta).astype(h.dtype)
    sg = surrogate_grad(params.surrogate, params.alpha, h - theta).astype(h.dtype)
    if params.reset == "hard":
      du_dh = (1.0 - s) if params.detach_reset else (1.0 - s) - h * sg
    else:
      du_dh = 1.0 if params.detach_reset else 1.0 - theta * sg
    g_h = g_u * du_dh
    if gs is not None:
      g_h = g_h + gs * sg
    if gh_direct is not None:
      g_h = g_h + gh_direct
    return beta * g_h, in_scale * g_h

  g_u0, g_x = jax.lax.scan(body, jnp.zeros(membrane.shape[1:], membrane.dtype),
                           (membrane, g_spikes, g_membrane), reverse=True, unroll=min(membrane.shape[0], 16))
  return g_x, g_u0


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _lif_fused(params: LIFParams, x: jax.Array, u0: jax.Array) -> tuple[jax.Array, jax.Array]:
  return _lif_forward(params, x, u0)


def _lif_fused_fwd(params, x, u0):
  spikes, membrane = _lif_forward(params, x.value, u0.value)
  return (spikes, membrane), membrane


def _lif_fused_bwd(params, membrane, cotangents):
  g_spikes, g_membrane = (None if isinstance(g, SymbolicZero) else g for g in cotangents)
  if g_spikes is None and g_membrane is None:
    # Nothing downstream needs this neuron's gradient (BSD's layer-local losses on the drive, where the spikes
    # only feed the next level through a stop-gradient): skip the reverse scan, and XLA frees H early.
    zeros = jnp.zeros_like(membrane)
    return zeros, zeros[0]
  return _lif_backward(params, membrane, g_spikes, g_membrane)


# symbolic_zeros: the backward pass sees which outputs carry no gradient at all.
_lif_fused.defvjp(_lif_fused_fwd, _lif_fused_bwd, symbolic_zeros=True)


def lif(params: LIFParams, x: jax.Array, u0: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Runs LIF over the leading time axis of `x` [T, ...] with `lax.scan`; U starts at `u0` (default 0).

  Returns (spikes [T, ...] exactly 0/1, pre-spike membrane potential H [T, ...]). Its gradient is the
  surrogate gradient of `lif_reference` (the same numbers), computed by one hand-written reverse scan that keeps
  only H from the forward pass: autodiff of the scan keeps every step's spikes, resets and surrogate inputs.
  """
  if params.reset not in RESETS:
    raise ValueError(f"unknown reset {params.reset!r}; valid: {RESETS}")
  if params.surrogate not in SURROGATES:
    raise ValueError(f"unknown surrogate {params.surrogate!r}; valid: {SURROGATES}")
  if u0 is None:
    u0 = jnp.zeros(x.shape[1:], x.dtype)
  return _lif_fused(params, x, u0)
