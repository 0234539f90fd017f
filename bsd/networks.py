"""The paired spiking networks of BSD (arXiv 2509.20284, Sec. 3.1, Fig. 1): a feedforward pathway W (stimulus ->
concept) and a backward pathway Theta (concept -> stimulus) with the same level layout and independent weights.

Levels 0..L: level 0 is the stimulus, levels 1..L-1 are hidden LIF layers, level L is the concept (the top).
Forward block F_i maps level-i spikes to the level-(i+1) voltage, `v_{i+1} = F_i(s_i)`, and `s_{i+1} = LIF(v_{i+1})`.
Backward block B_i maps level-(i+1) spikes to the level-i voltage, `v'_i = B_i(s'_{i+1})`, `s'_i = LIF(v'_i)`; the
top of the backward pathway is driven by a spike code of the target (`bsd/codes.py`). B_0 (only built when the
task reconstructs the stimulus) is the decoder's output layer.

Three layouts share this code (`model.arch`):
  mlp: dense levels.
  cnn: [max-pool] conv3x3 + BatchNorm levels, then dense levels; the backward blocks mirror them with
       nearest-neighbour upsampling in place of pooling, before their conv (`backward_upsample="before"`, the
       default: the upsampled spikes are convolved at the level's own size, and the dense block after the last
       conv level maps straight to that level) or after it (`"after"`: the conv runs at the coarse size, 4x
       cheaper, and the level's target is constant over 2x2 blocks).
  rnn: dense levels whose hidden LIF layers are recurrent (`v_t = W s_{i,t} + R s_{i+1,t-1}`), run over the
       sequence's time axis (each sequence element is one SNN time step).

`forward_pass`/`backward_pass` compute every level's voltage, membrane potential and spikes. With
`cut=True` each block's input is passed through `stop_gradient`: the gradient of a loss placed at level i
then reaches only the blocks producing level i (F_{i-1} and B_i) -- BSD's layer locality. With `cut=False`
the same code is backprop-through-time (BP-SNN); `activation="relu"` and T=1 make it the equivalent ANN.
Feedback alignment replaces the input-gradient of every block by one through a fixed random copy of its
weights (`feedback_linear`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bsd import neurons

ARCHS = ("mlp", "cnn", "rnn")
BACKWARD_UPSAMPLE = ("after", "before")  # cnn: where the backward blocks upsample (see the module docstring)
ANN_ACTIVATIONS = ("relu", "tanh")  # of the equivalent ANN (BP-ANN); activation "lif" is the SNN


class Feedback(nnx.Variable):
  """Fixed random feedback weights (feedback alignment); not a Param, so the optimizer leaves them alone."""


class Codes(nnx.Variable):
  """Fixed target spike codes [K, D] (one row per class); not trained."""


# ---------------------------------------------------------------------------------------------------------
# Feedback alignment: the forward value of a linear map, its weight gradient, and an input gradient computed
# with a fixed random matrix in place of the transported weights (Lillicrap et al. 2016).

def feedback_linear(op: Callable[[jax.Array, jax.Array], jax.Array]):
  """Wraps `op(x, w)` (linear in x) so that d/dx uses `op(., feedback)` instead of `op(., w)`."""

  @jax.custom_vjp
  def apply(x, w, fb):
    return op(x, w)

  def fwd(x, w, fb):
    return op(x, w), (x, w, fb)

  def bwd(res, g):
    x, w, fb = res
    _, vjp_w = jax.vjp(lambda w_: op(x, w_), w)
    _, vjp_x = jax.vjp(lambda x_: op(x_, fb), x)
    return vjp_x(g)[0], vjp_w(g)[0], jnp.zeros_like(fb)

  apply.defvjp(fwd, bwd)
  return apply


def _dense_op(x, w):
  return x @ w


def _conv_op(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


_FA_DENSE = feedback_linear(_dense_op)
_FA_CONV = feedback_linear(_conv_op)


def _max_pool2(x):
  # A reshape + max is 2.5x faster on CPU than reduce_window's select-and-scatter gradient, and splits the
  # gradient evenly among tied maxima (common with 0/1 spikes) instead of picking one.
  n, h, w, c = x.shape
  return x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _upsample2(x):
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Block(nnx.Module):
  """One level-to-level map: [pool | upsample] -> dense or conv -> [reshape, upsample] -> [BatchNorm].

  Input [N, *in_shape], output [N, *out_shape]. A recurrent block also holds R [n, n] (used by the runner).
  """

  def __init__(self, kind: str, in_shape: Sequence[int], out_shape: Sequence[int], *, rngs: nnx.Rngs,
               pool_in: bool = False, upsample_in: bool = False, upsample_out: bool = False,
               batch_norm: bool = False, kernel_size: int = 3, recurrent: bool = False, init_scale: float = 1.0,
               feedback: bool = False):
    if pool_in and upsample_in:
      raise ValueError("a block either pools or upsamples its input, not both")
    self.kind, self.pool_in, self.upsample_in, self.upsample_out = kind, pool_in, upsample_in, upsample_out
    eff_in = list(in_shape)
    if pool_in:
      eff_in[0], eff_in[1] = eff_in[0] // 2, eff_in[1] // 2
    if upsample_in:
      eff_in[0], eff_in[1] = eff_in[0] * 2, eff_in[1] * 2
    pre_out = list(out_shape)
    if upsample_out:
      pre_out[0], pre_out[1] = pre_out[0] // 2, pre_out[1] // 2
    self.pre_out = tuple(pre_out)
    key = rngs.params()
    if kind == "dense":
      fan_in, shape = int(np.prod(eff_in)), (int(np.prod(eff_in)), int(np.prod(pre_out)))
    elif kind == "conv":
      if tuple(eff_in[:2]) != tuple(pre_out[:2]):
        raise ValueError(f"conv block keeps the spatial size: {eff_in} -> {pre_out}")
      fan_in, shape = kernel_size * kernel_size * eff_in[-1], (kernel_size, kernel_size, eff_in[-1], out_shape[-1])
    else:
      raise ValueError(f"unknown block kind {kind!r}")
    # LeCun-normal scaled by init_scale: SNN layers need drives near the threshold from the first step.
    std = init_scale / math.sqrt(fan_in)
    self.kernel = nnx.Param(std * jax.random.normal(key, shape, jnp.float32))
    self.bias = nnx.Param(jnp.zeros((shape[-1],), jnp.float32)) if not batch_norm else None
    # FA's fixed feedback comes from the kernel's key, not from the params stream: every later block then starts
    # from the same weights under FA as under the other methods (same seed, same networks).
    self.feedback = (Feedback(std * jax.random.normal(jax.random.fold_in(key, 1), shape, jnp.float32))
                     if feedback else None)
    n_out = int(np.prod(out_shape))
    weights = feedback_weights = None
    if recurrent:
      rkey, rstd = rngs.params(), init_scale / math.sqrt(n_out)
      weights = nnx.Param(rstd * jax.random.normal(rkey, (n_out, n_out)))
      # FA through time: s_{t-1}'s gradient goes through a fixed random copy of R (drawn as the kernel's is).
      feedback_weights = (Feedback(rstd * jax.random.normal(jax.random.fold_in(rkey, 1), (n_out, n_out)))
                          if feedback else None)
    self.recurrent, self.recurrent_feedback = weights, feedback_weights
    self.norm = nnx.BatchNorm(out_shape[-1], momentum=0.9, rngs=rngs) if batch_norm else None

  def __call__(self, x: jax.Array, *, train: bool, feedback_alignment: bool = False) -> jax.Array:
    n = x.shape[0]
    if self.pool_in:
      x = _max_pool2(x)
    if self.upsample_in:
      x = _upsample2(x)
    use_fa = feedback_alignment and self.feedback is not None
    kernel = self.kernel[...]
    if self.kind == "dense":
      x = x.reshape(n, -1)
      y = _FA_DENSE(x, kernel, self.feedback[...]) if use_fa else _dense_op(x, kernel)
    else:
      y = _FA_CONV(x, kernel, self.feedback[...]) if use_fa else _conv_op(x, kernel)
    if self.bias is not None:
      y = y + self.bias[...]
    y = y.reshape(n, *self.pre_out)
    if self.upsample_out:
      y = _upsample2(y)
    if self.norm is not None:
      y = self.norm(y, use_running_average=not train)
    return y


# ---------------------------------------------------------------------------------------------------------
# Layout: the shape of every level and the blocks between them.

@dataclasses.dataclass(frozen=True)
class Layout:
  levels: tuple[tuple[int, ...], ...]  # shape of levels 0..L (level 0: the stimulus, level L: the top)
  forward: tuple[dict, ...]  # Block kwargs of F_0..F_{L-1}
  backward: tuple[dict, ...]  # Block kwargs of B_0..B_{L-1} (B_i: level i+1 -> level i; B_{L-1} takes the code)


def _check_even(h: int, w: int, level: int, in_shape) -> None:
  if h % 2 or w % 2:
    raise ValueError(f"level {level} of the cnn layout is {h}x{w}: the 2x2 pooling after it needs an even size, so "
                     f"that the backward pathway's 2x upsampling can mirror it. Fix: fewer entries in "
                     f"--config.model.channels for a {tuple(in_shape)} input (or an input size with more factors of 2).")


def make_layout(arch: str, in_shape: Sequence[int], *, hidden: Sequence[int] = (), channels: Sequence[int] = (),
                top_dim: int, backward_top_dim: int, batch_norm: bool = False, kernel_size: int = 3,
                backward_upsample: str = "before") -> Layout:
  """Levels and blocks of the MLP, CNN and RNN layouts (see the module docstring)."""
  if backward_upsample not in BACKWARD_UPSAMPLE:
    raise ValueError(f"backward_upsample = {backward_upsample!r}; valid: {BACKWARD_UPSAMPLE}")
  before = backward_upsample == "before"
  in_shape = tuple(int(d) for d in in_shape)
  fwd, bwd, levels = [], [], [in_shape]
  if arch in ("mlp", "rnn"):
    flat = (int(np.prod(in_shape)),)
    levels = [flat] + [(int(h),) for h in hidden] + [(int(top_dim),)]
    for i in range(len(levels) - 1):
      hidden_out = i + 1 < len(levels) - 1
      fwd.append(dict(kind="dense", in_shape=levels[i], out_shape=levels[i + 1],
                      batch_norm=batch_norm and hidden_out, recurrent=(arch == "rnn" and hidden_out)))
      bwd.append(dict(kind="dense", in_shape=levels[i + 1], out_shape=levels[i], batch_norm=batch_norm and i > 0))
  elif arch == "cnn":
    if len(in_shape) != 3:
      raise ValueError(f"the cnn layout needs images [H, W, C]; got {in_shape}")
    h, w, c = in_shape
    prev = in_shape
    for k, ch in enumerate(channels):
      pool = k > 0  # pool between conv levels: level k+1 has half the size of level k (k >= 1)
      if pool:
        _check_even(h, w, k, in_shape)
        h, w = h // 2, w // 2
      shape = (h, w, int(ch))
      fwd.append(dict(kind="conv", in_shape=prev, out_shape=shape, pool_in=pool, batch_norm=batch_norm,
                      kernel_size=kernel_size))
      # Mirror of pool + conv: conv at the coarse size, then upsample ("after", 4x cheaper), or upsample, then
      # conv at the fine size ("before").
      bwd.append(dict(kind="conv", in_shape=shape, out_shape=prev, upsample_out=pool and not before,
                      upsample_in=pool and before, batch_norm=batch_norm and len(levels) > 1,
                      kernel_size=kernel_size))
      levels.append(shape)
      prev = shape
    dense_sizes = [int(d) for d in hidden] + [int(top_dim)]
    for k, size in enumerate(dense_sizes):
      first = k == 0
      if first and len(prev) == 3:
        _check_even(prev[0], prev[1], len(channels), in_shape)
      hidden_out = k + 1 < len(dense_sizes)
      fwd.append(dict(kind="dense", in_shape=prev, out_shape=(size,), pool_in=first and len(prev) == 3,
                      batch_norm=batch_norm and hidden_out))
      # The mirror of pool + flatten + dense is dense + reshape + upsample ("after"), or a dense map straight to
      # the level's full size ("before").
      bwd.append(dict(kind="dense", in_shape=(size,), out_shape=prev,
                      upsample_out=first and len(prev) == 3 and not before, batch_norm=batch_norm))
      levels.append((size,))
      prev = (size,)
  else:
    raise ValueError(f"unknown arch {arch!r}; valid: {ARCHS}")
  bwd[-1] = {**bwd[-1], "in_shape": (int(backward_top_dim),)}
  return Layout(levels=tuple(tuple(l) for l in levels), forward=tuple(fwd), backward=tuple(bwd))


class BSDNet(nnx.Module):
  """The two pathways (and, for the baselines, whatever else they need) as one NNX module.

  `forward`: F_0..F_{L-1}. `backward`: B_{backward_start}..B_{L-1} (empty for the baselines), so
  `backward[i - backward_start]` is B_i. `codes`: fixed class codes [K, D] (classification tasks).
  `dfa`: fixed random projections of the output error to each hidden level of the forward pathway (direct
  feedback alignment); `dfa_backward`: the same for the backward pathway's hidden levels (the autoencoder's
  decoder, whose output carries the error: `dfa_error_dim` = the stimulus size, and the forward pathway's top
  level, the latent spikes, is a hidden level too).
  """

  def __init__(self, layout: Layout, *, rngs: nnx.Rngs, with_backward: bool, reconstruct: bool,
               init_scale: float = 1.0, feedback_alignment: bool = False, direct_feedback: bool = False,
               codes: np.ndarray | None = None):
    self.levels = layout.levels
    self.num_levels = len(layout.levels) - 1  # L
    self.forward = nnx.List([Block(**kw, init_scale=init_scale, feedback=feedback_alignment, rngs=rngs)
                             for kw in layout.forward])
    self.backward_start = 0 if reconstruct else 1
    blocks = layout.backward[self.backward_start:] if with_backward else ()
    self.backward = nnx.List([Block(**kw, init_scale=init_scale, feedback=feedback_alignment, rngs=rngs)
                              for kw in blocks])
    self.codes = Codes(jnp.asarray(codes, jnp.float32)) if codes is not None else None
    dfa = dfa_backward = None
    if direct_feedback:
      # Classification and sequences: the error is at the top level (levels 1..L-1 hidden). The autoencoder
      # (`reconstruct` with a decoder): the error is at the reconstruction, and levels 1..L of the forward
      # pathway and 1..L-1 of the backward one are hidden.
      decoder = reconstruct and with_backward
      err = int(np.prod(layout.levels[0 if decoder else -1]))
      matrix = lambda shape: Feedback(  # noqa: E731
          jax.random.normal(rngs.params(), (err, int(np.prod(shape))), jnp.float32) / math.sqrt(err))
      dfa = nnx.List([matrix(shape) for shape in layout.levels[1:None if decoder else -1]])
      if decoder:
        dfa_backward = nnx.List([matrix(shape) for shape in layout.levels[1:-1]])
    self.dfa, self.dfa_backward = dfa, dfa_backward
    self.dfa_error_dim = err if direct_feedback else 0


# ---------------------------------------------------------------------------------------------------------
# Running the pathways.

class RunSpec(NamedTuple):
  """How a pathway is run (static: closed over by the jitted step)."""
  lif: neurons.LIFParams
  time_steps: int
  activation: str = "lif"  # "lif" (SNN) or "relu"/"tanh" (the equivalent ANN, one time step)
  cut: bool = False  # stop-gradient on every block's input (BSD / DFA locality)
  feedback_alignment: bool = False


class Trace(NamedTuple):
  """Per-level tensors of one pathway, all [T, B, *level_shape], indexed by level (None where absent)."""
  drives: dict  # level -> voltage v (the block's output)
  membranes: dict  # level -> pre-spike membrane potential H (== drive for the ANN)
  spikes: dict  # level -> spikes s (the activation for the ANN)


def _over_time(fn, x: jax.Array) -> jax.Array:
  """Applies a per-example map to [T, B, ...] by folding time into the batch (one big matmul/conv)."""
  t, b = x.shape[:2]
  y = fn(x.reshape(t * b, *x.shape[2:]))
  return y.reshape(t, b, *y.shape[1:])


def _activate(spec: RunSpec, v: jax.Array) -> tuple[jax.Array, jax.Array]:
  if spec.activation == "lif":
    return neurons.lif(spec.lif, v)
  act = jax.nn.relu if spec.activation == "relu" else jnp.tanh
  return act(v), v


def _recurrent(spec: RunSpec, block: Block, inp: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """A recurrent level over time: v_t = inp_t + s_{t-1} R, then the neuron. Returns (drives, membranes, spikes).

  With `spec.cut` the previous step's spikes are a stop-gradient input, so R learns from the same level's
  local loss at each step without a signed error travelling back in time either. With feedback alignment the
  error does travel back in time, but through the block's fixed `recurrent_feedback` instead of R.
  """
  recurrent = block.recurrent[...]
  use_fa = spec.feedback_alignment and block.recurrent_feedback is not None
  feedback = block.recurrent_feedback[...] if use_fa else None
  t, b = inp.shape[:2]
  n = recurrent.shape[0]
  flat = inp.reshape(t, b, n)

  def body(carry, x_t):
    u, s_prev = carry
    s_in = jax.lax.stop_gradient(s_prev) if spec.cut else s_prev
    v = x_t + (_FA_DENSE(s_in, recurrent, feedback) if use_fa else s_in @ recurrent)
    if spec.activation == "lif":
      u, s, h = neurons.lif_step(spec.lif, u, v)
    else:
      s, h = _activate(spec, v)
    return (u, s), (v, h, s)

  zeros = jnp.zeros((b, n), inp.dtype)
  _, (v, h, s) = jax.lax.scan(body, (zeros, zeros), flat)
  shape = inp.shape
  return v.reshape(shape), h.reshape(shape), s.reshape(shape)


def forward_pass(model: BSDNet, x: jax.Array, spec: RunSpec, *, train: bool, static: bool,
                 top_neuron: bool = False, top_mean: bool = False) -> Trace:
  """Runs F_0..F_{L-1} on the stimulus.

  x: [B, *in] presented as a constant input current for T steps (`static=True`; F_0 then runs once), or a
    sequence [T, B, *in] (`static=False`).
  top_neuron: also pass the top voltage through the neuron (the autoencoder's latent spikes).
  top_mean: only the time average of the top drive is read (classification). The top block is affine (no
    BatchNorm, pooling or neuron), so F(mean_t s) == mean_t F(s): it runs once on the time-averaged spikes (T times
    fewer FLOPs in the top block and its gradient) and the top drive comes back as [1, B, D].
  """
  drives, membranes, spikes = {}, {}, {0: x}
  s = x
  num = len(model.forward)
  for i, block in enumerate(model.forward):
    inp = jax.lax.stop_gradient(s) if spec.cut else s
    apply = lambda z, block=block: block(z, train=train, feedback_alignment=spec.feedback_alignment)
    affine_top = (top_mean and i == num - 1 and not top_neuron and block.norm is None and block.recurrent is None
                  and not block.pool_in)  # max-pooling does not commute with the time average
    if static and i == 0:
      v = apply(inp)
      v = v[None] if affine_top else jnp.broadcast_to(v[None], (spec.time_steps, *v.shape))
    elif affine_top:
      v = apply(inp.mean(0))[None]
    else:
      v = _over_time(apply, inp)
    level = i + 1
    if block.recurrent is not None:
      v, h, s = _recurrent(spec, block, v)
    elif level < num or top_neuron:
      s, h = _activate(spec, v)
    else:
      h = s = None
    drives[level], membranes[level], spikes[level] = v, h, s
  return Trace(drives, membranes, spikes)


def backward_pass(model: BSDNet, top: jax.Array, spec: RunSpec, *, train: bool, static: bool,
                  top_gradient: bool = False, bottom_mean: bool = False) -> Trace:
  """Runs B_{L-1}..B_{start} from the top drive `top` ([B, D] constant for T steps if `static`, else [T, B, D]).

  Level 0 (the reconstruction, when B_0 exists) gets a voltage but no neuron. `top_gradient` lets the gradient
  into `top` even when `spec.cut` (the autoencoder's top loop, see bsd/methods.py). `bottom_mean`: only the time
  average of the level-0 voltage is read, so B_0 (affine, no BatchNorm) runs once on the averaged spikes and
  returns [1, B, ...] (as `top_mean` in `forward_pass`).
  """
  drives, membranes, spikes = {}, {}, {model.num_levels: top}
  s = top
  start = model.backward_start
  for level in range(model.num_levels - 1, start - 1, -1):
    block = model.backward[level - start]
    cut_here = spec.cut and not (top_gradient and level == model.num_levels - 1)
    inp = jax.lax.stop_gradient(s) if cut_here else s
    apply = lambda z, block=block: block(z, train=train, feedback_alignment=spec.feedback_alignment)
    affine_bottom = bottom_mean and level == 0 and block.norm is None and not block.pool_in
    if static and level == model.num_levels - 1:
      v = apply(inp)
      v = v[None] if affine_bottom else jnp.broadcast_to(v[None], (spec.time_steps, *v.shape))
    elif affine_bottom:
      v = apply(inp.mean(0))[None]
    else:
      v = _over_time(apply, inp)
    if level > 0:
      s, h = _activate(spec, v)
    else:
      s = h = None
    drives[level], membranes[level], spikes[level] = v, h, s
  return Trace(drives, membranes, spikes)
