"""Training objectives of BSD and its baselines, for the three task families (arXiv 2509.20284, Sec. 3.2-3.4, 4).

BSD (Sec. 3.2, Eq. for the total loss): the sum of layer-local losses, each reaching only the two blocks that
produce its level (inputs crossing levels are stop-gradients, `networks.RunSpec.cut`):
  * hidden level i (1 <= i < L): ReCo(v_i, v'_i) between the forward and backward voltages -> F_{i-1}, B_i;
  * top level L: cross-entropy of the cosine read-out (classification, next character) or MSE (forecast)
    -> F_{L-1};
  * level 0 (generation): reconstruction MSE of the backward pathway's output -> B_0.
One `jax.grad` of the sum therefore yields every block's local gradient, and one optimizer step updates W and
Theta together. No signed error vector crosses a level.

Baselines on the same networks and data:
  bp_snn  backprop through time through the same SNN (surrogate gradients), the top loss only;
  bp_ann  the same layout with ReLU units and one time step, trained by backprop;
  fa      BP-SNN whose input-gradients use fixed random feedback weights (feedback alignment);
  dfa     the output error projected by fixed random matrices directly to every hidden level (direct feedback
          alignment), each level learning from its projection through its own surrogate; in the autoencoder
          the output is the reconstruction and the hidden levels are the encoder's, the latent and the
          decoder's.

Choices the paper leaves open are fields of the `bsd` config section (`objective_config`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bsd import codes as codes_lib
from bsd import losses, networks, neurons
from core import config as config_lib

METHODS = ("bsd", "bp_snn", "bp_ann", "fa", "dfa")
TASKS = ("classify", "generate", "next_char", "forecast")
VOLTAGES = ("drive", "membrane", "spikes")
TIME_MODES = ("mean", "per_step")


def objective_config(**overrides) -> ml_collections.ConfigDict:
  """The `bsd` config section: how the local losses are formed (the paper's open details are fields here).

  reco_lambda: the relaxed term's weight (paper: 0.6).
  reco_reduction: "sum" (the paper's formula) or "mean" (divided by the batch size).
  reco_time: "mean" aligns the time-averaged voltages; "per_step" averages ReCo over time steps
    (sequence tasks always align per step: there every time step is a different input).
  voltage: "drive" aligns the synaptic drive v = F(s) (the LIF input); "membrane" the integrated potential H;
    "spikes" the level's spike trains themselves (their gradient then goes through the surrogate).
  mask_identical_targets: leave out of the relaxed term the pairs whose backward voltages are identical (same
    class; in generation and sequences the same top input history): the paper's formula would push a sample
    away from its own target. False is the paper's formula.
  top_weight / reco_weight / recon_weight: weights of the top, hidden and reconstruction losses.
  logit_scale: the cosine read-out's inverse temperature (logits = scale * cos).
  top_loop (generation): the top forward block F_{L-1} learns through the backward top block B_{L-1} from the
    level L-1 alignment (a two-block local loop at the latent); False leaves F_{L-1} at its random init.
  fft_weight / fft_high_boost (generation): weight of the frequency-weighted spectral MSE and how much more
    the highest frequency counts than the lowest (the paper weights high frequency bands more).
  """
  return config_lib.section("bsd", dict(
      reco_lambda=0.6, reco_reduction="mean", reco_time="mean", voltage="drive", mask_identical_targets=True,
      top_weight=1.0, reco_weight=1.0, recon_weight=1.0, logit_scale=10.0, top_loop=True, fft_weight=0.0,
      fft_high_boost=1.0), overrides)


def validate_objective_config(config: ml_collections.ConfigDict, prefix: str = "bsd") -> None:
  config_lib.check_positive(config, f"{prefix}.reco_lambda", allow_zero=True)
  config_lib.check_choice(config, f"{prefix}.reco_reduction", losses.REDUCTIONS)
  config_lib.check_choice(config, f"{prefix}.reco_time", TIME_MODES)
  config_lib.check_choice(config, f"{prefix}.voltage", VOLTAGES)
  for key in ("top_weight", "reco_weight", "recon_weight", "fft_weight", "fft_high_boost"):
    config_lib.check_positive(config, f"{prefix}.{key}", allow_zero=True)
  config_lib.check_positive(config, f"{prefix}.logit_scale")


@dataclasses.dataclass(frozen=True)
class Objective:
  """Everything static a loss needs (hashable; closed over by the jitted step)."""
  method: str
  task: str
  spec: networks.RunSpec
  reco_lambda: float
  reco_reduction: str
  reco_time: str
  voltage: str
  mask_identical_targets: bool
  top_weight: float
  reco_weight: float
  recon_weight: float
  logit_scale: float
  top_loop: bool
  fft_weight: float
  fft_high_boost: float
  code_kind: str = "block"
  burn_in: int = 0  # sequence steps left out of the loss and metrics
  population: tuple[int, float, float, float] = (0, 0.0, 0.0, 0.0)  # forecast code: (dim, low, high, width)


def run_spec(method: str, neuron_section: ml_collections.ConfigDict, ann_activation: str = "relu"
             ) -> networks.RunSpec:
  lif = neurons.params_from_config(neuron_section)
  if method == "bp_ann":
    return networks.RunSpec(lif=lif, time_steps=1, activation=ann_activation)
  return networks.RunSpec(lif=lif, time_steps=int(neuron_section.time_steps), activation="lif",
                          cut=method in ("bsd", "dfa"), feedback_alignment=method == "fa")


def make_objective(config: ml_collections.ConfigDict) -> Objective:
  b = config.bsd
  population = (0, 0.0, 0.0, 0.0)
  if config.task == "forecast":
    population = (int(config.model.code_dim), float(config.codes.low), float(config.codes.high),
                  float(config.codes.width))
  return Objective(
      method=config.method, task=config.task,
      spec=run_spec(config.method, config.neuron, config.model.ann_activation),
      reco_lambda=float(b.reco_lambda), reco_reduction=b.reco_reduction, reco_time=b.reco_time,
      voltage=b.voltage, mask_identical_targets=bool(b.mask_identical_targets), top_weight=float(b.top_weight),
      reco_weight=float(b.reco_weight), recon_weight=float(b.recon_weight), logit_scale=float(b.logit_scale),
      top_loop=bool(b.top_loop), fft_weight=float(b.fft_weight), fft_high_boost=float(b.fft_high_boost),
      code_kind=config.codes.kind, burn_in=int(config.sequence.burn_in) if "sequence" in config else 0,
      population=population)


# ---------------------------------------------------------------------------------------------------------
# Pieces shared by the tasks.

def to_float(images: jax.Array) -> jax.Array:
  # uint8 pixels travel to the device (4x fewer bytes) and are scaled there.
  return images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images.astype(jnp.float32)


def _voltage(obj: Objective, trace: networks.Trace, level: int) -> jax.Array:
  if obj.voltage == "drive":
    return trace.drives[level]
  return trace.membranes[level] if obj.voltage == "membrane" else trace.spikes[level]


@functools.lru_cache(maxsize=None)
def _probes(width: int) -> np.ndarray:
  """Fixed random directions [width, 4], made once per width on the host: a constant of the compiled step rather
  than a random draw traced into it at every level."""
  return np.random.default_rng(0).standard_normal((width, 4)).astype(np.float32)


def _negatives(backward: jax.Array) -> jax.Array:
  """[B, B] 1 where two samples' backward voltages differ: the pairs the relaxed term may push apart.

  Pairs whose backward pathways computed the same voltage (in classification the same class code; in generation
  and sequences the same top input history, which below level L-1 is more than the top input of the step) are
  left out. Equal inputs give bit-equal voltages, so the rows are compared exactly, through a few fixed random
  projections (cheap: [B, D] @ [D, 4]; distinct rows collide with probability 0). A distance from the expansion
  |x|^2 + |y|^2 - 2 x.y would need a tolerance for its cancellation.
  """
  flat = jax.lax.stop_gradient(backward).reshape(backward.shape[0], -1)
  proj = flat @ jnp.asarray(_probes(flat.shape[1]), flat.dtype)
  return jnp.any(proj[:, None, :] != proj[None, :, :], axis=-1).astype(jnp.float32)


def _reco(obj: Objective, a: jax.Array, b: jax.Array, per_step: bool) -> jax.Array:
  """ReCo between [T, B, ...] forward and backward voltages (time-averaged, or per step and then averaged)."""

  def one(x, y):
    neg = _negatives(y) if obj.mask_identical_targets else None
    return losses.reco_loss(x, y, obj.reco_lambda, negatives=neg, reduction=obj.reco_reduction)

  if not per_step:
    return one(a.mean(0), b.mean(0))
  return jnp.mean(jax.vmap(one)(a, b))


def _alignment(obj: Objective, fwd: networks.Trace, bwd: networks.Trace, levels, per_step: bool,
               steps: slice = slice(None)) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Sum of the hidden levels' ReCo losses, with per-level loss and spike-agreement metrics."""
  total, metrics = 0.0, {}
  for level in levels:
    a, b = _voltage(obj, fwd, level)[steps], _voltage(obj, bwd, level)[steps]
    loss = _reco(obj, a, b, per_step)
    total = total + loss
    metrics[f"reco_l{level}"] = loss
    # Hamming similarity: the fraction of (time, sample, neuron) where the two pathways agree (both fire or not).
    metrics[f"hamming_l{level}"] = jnp.mean(fwd.spikes[level][steps] == bwd.spikes[level][steps])
  return total, metrics


def _rates(trace: networks.Trace, levels, prefix: str) -> dict[str, jax.Array]:
  return {f"{prefix}rate_l{level}": jnp.mean(trace.spikes[level]) for level in levels}


def _dfa_term(hidden: list[tuple[jax.Array, jax.Array]], error: jax.Array) -> jax.Array:
  """Pseudo-loss whose gradient is DFA's: each hidden level's spikes times the fixed projection B_i e of the error.

  hidden: (spikes [T, B, *shape], B_i [K, prod(shape)]) per hidden level. error: dLoss/d(output) of the task's
  loss, [B, K] for a read-out of the time-averaged output (each step then gets 1/T of it, as backprop through
  the average would give) or [T, B, K] per step (sequences).
  d/dW of sum(s_i * sg(B_i e)) is exactly the DFA update: the projected error through level i's own
  surrogate derivative (and its own BatchNorm, where the level has one), with the level's input a
  stop-gradient. Its value is removed from the reported loss.
  """
  term = 0.0
  for spikes, matrix in hidden:
    proj = error @ matrix
    if error.ndim == 2:
      proj = proj.reshape(spikes.shape[1:])[None] / spikes.shape[0]
    else:
      proj = proj.reshape(spikes.shape)
    term = term + jnp.sum(spikes * jax.lax.stop_gradient(proj))
  return term - jax.lax.stop_gradient(term)


def _dfa_forward_levels(model: networks.BSDNet, fwd: networks.Trace) -> list[tuple[jax.Array, jax.Array]]:
  return [(fwd.spikes[level + 1], matrix[...]) for level, matrix in enumerate(model.dfa)]


# ---------------------------------------------------------------------------------------------------------
# Image classification.

def classify_outputs(obj: Objective, model: networks.BSDNet, images: jax.Array, *, train: bool
                     ) -> tuple[jax.Array, networks.Trace]:
  """The forward pathway's read-out: cosine logits [B, K] against the class codes, and its trace."""
  fwd = networks.forward_pass(model, to_float(images), obj.spec, train=train, static=True, top_mean=True)
  out = fwd.drives[model.num_levels].mean(0)
  dec = jnp.asarray(codes_lib.decoding_codes(obj.code_kind, model.codes[...]))
  return losses.cosine_logits(out, dec, obj.logit_scale), fwd


def classify_loss(obj: Objective, model: networks.BSDNet, batch: dict[str, jax.Array], rng: jax.Array):
  del rng
  labels = batch["label"]
  num = model.num_levels
  fwd = networks.forward_pass(model, to_float(batch["image"]), obj.spec, train=True, static=True,
                                top_mean=True)
  out = fwd.drives[num].mean(0)
  code_table = model.codes[...]
  dec = codes_lib.decoding_codes(obj.code_kind, code_table)
  ce, logits = losses.cosine_cross_entropy(out, dec, labels, obj.logit_scale)
  metrics = {"accuracy": jnp.mean(logits.argmax(-1) == labels), "top_loss": ce}
  hidden = range(1, num)
  if obj.spec.activation == "lif":
    metrics.update(_rates(fwd, hidden, "f"))
  total = obj.top_weight * ce if obj.method == "bsd" else ce
  if obj.method == "bsd":
    top = code_table[labels]
    bwd = networks.backward_pass(model, top, obj.spec, train=True, static=True, bottom_mean=True)
    align, align_metrics = _alignment(obj, fwd, bwd, hidden, per_step=obj.reco_time == "per_step")
    total = total + obj.reco_weight * align
    metrics.update(align_metrics)
    metrics.update(_rates(bwd, hidden, "b"))
    if model.backward_start == 0 and obj.recon_weight > 0:
      recon = jax.nn.sigmoid(bwd.drives[0].mean(0)).reshape(batch["image"].shape)
      rec = losses.reconstruction_loss(recon, to_float(batch["image"]))
      total = total + obj.recon_weight * rec
      metrics["recon_mse"] = rec
  elif obj.method == "dfa":
    error = jax.grad(lambda o: losses.cosine_cross_entropy(o, dec, labels, obj.logit_scale)[0])(
        jax.lax.stop_gradient(out))
    total = total + _dfa_term(_dfa_forward_levels(model, fwd), error)
  return total, metrics


# ---------------------------------------------------------------------------------------------------------
# Generation: an autoencoder whose decoder is the backward pathway, driven by the forward pathway's top spikes.

def generate_outputs(obj: Objective, model: networks.BSDNet, images: jax.Array, *, train: bool
                     ) -> tuple[jax.Array, networks.Trace, networks.Trace]:
  """Reconstructions [B, H, W, C] in [0, 1], and both traces."""
  fwd = networks.forward_pass(model, to_float(images), obj.spec, train=train, static=True, top_neuron=True)
  latent = fwd.spikes[model.num_levels]
  top_gradient = obj.method == "bsd" and obj.top_loop
  bwd = networks.backward_pass(model, latent, obj.spec, train=train, static=False, top_gradient=top_gradient,
                               bottom_mean=True)
  recon = _reconstruction(bwd.drives[0].mean(0), images.shape)
  return recon, fwd, bwd


def _reconstruction(bottom: jax.Array, shape) -> jax.Array:
  """Pixels in [0, 1] from the time-averaged level-0 drive [B, ...]."""
  return jax.nn.sigmoid(bottom).reshape(shape)


def generate_loss(obj: Objective, model: networks.BSDNet, batch: dict[str, jax.Array], rng: jax.Array):
  del rng
  target = to_float(batch["image"])
  recon, fwd, bwd = generate_outputs(obj, model, batch["image"], train=True)
  rec = losses.reconstruction_loss(recon, target, obj.fft_weight, obj.fft_high_boost)
  metrics = {"recon_mse": jnp.mean((recon - target) ** 2)}
  num = model.num_levels
  total = obj.recon_weight * rec if obj.method == "bsd" else rec
  if obj.method == "bsd":
    align, align_metrics = _alignment(obj, fwd, bwd, range(1, num), per_step=obj.reco_time == "per_step")
    total = total + obj.reco_weight * align
    metrics.update(align_metrics)
  elif obj.method == "dfa":
    # The error at the output (the decoder's pre-sigmoid drive), projected to the encoder's hidden levels and
    # latent and to the decoder's hidden levels; B_0 learns from the reconstruction loss directly.
    bottom = bwd.drives[0].mean(0)
    error = jax.grad(lambda d: losses.reconstruction_loss(_reconstruction(d, target.shape), target,
                                                          obj.fft_weight, obj.fft_high_boost))(
        jax.lax.stop_gradient(bottom)).reshape(bottom.shape[0], -1)
    decoder = [(bwd.spikes[level + 1], matrix[...]) for level, matrix in enumerate(model.dfa_backward)]
    total = total + _dfa_term(_dfa_forward_levels(model, fwd) + decoder, error)
  if obj.spec.activation == "lif":
    metrics.update(_rates(fwd, range(1, num + 1), "f"))
  return total, metrics


# ---------------------------------------------------------------------------------------------------------
# Sequences: next character (classification per step) and forecasting (regression per step) with the RNN.

def sequence_inputs(obj: Objective, batch: dict[str, jax.Array], vocab_size: int) -> jax.Array:
  """[T, B, in]: one-hot characters (as input currents) or the series value."""
  x = batch["input"]
  if obj.task == "next_char":
    return jax.nn.one_hot(x.T, vocab_size, dtype=jnp.float32)
  return x.T[..., None].astype(jnp.float32)


def sequence_top(obj: Objective, model: networks.BSDNet, targets: jax.Array) -> jax.Array:
  """The backward pathway's top input per step [T, B, D]: the class code or the value's population code."""
  if obj.task == "next_char":
    return model.codes[...][targets.T]
  dim, low, high, width = obj.population
  return codes_lib.population_code(targets.T.astype(jnp.float32), dim, low, high, width)


def sequence_outputs(obj: Objective, model: networks.BSDNet, batch, vocab_size: int, *, train: bool):
  """Per-step outputs [T, B, K] (cosine logits) or [T, B] (forecasts), and the forward trace."""
  fwd = networks.forward_pass(model, sequence_inputs(obj, batch, vocab_size), obj.spec, train=train, static=False)
  return sequence_readout(obj, model, fwd.drives[model.num_levels]), fwd


def sequence_readout(obj: Objective, model: networks.BSDNet, out: jax.Array) -> jax.Array:
  """From the top drive [T, B, D]: cosine logits [T, B, K] (next character) or the forecasts [T, B]."""
  if obj.task == "next_char":
    dec = codes_lib.decoding_codes(obj.code_kind, model.codes[...])
    t, b = out.shape[:2]
    return losses.cosine_logits(out.reshape(t * b, -1), dec, obj.logit_scale).reshape(t, b, -1)
  return out[..., 0]


def sequence_top_loss(obj: Objective, outputs: jax.Array, targets: jax.Array) -> tuple[jax.Array, dict]:
  steps = slice(obj.burn_in, None)
  outputs, targets = outputs[steps], targets.T[steps]
  if obj.task == "next_char":
    logp = jax.nn.log_softmax(outputs)
    nll = -jnp.mean(jnp.take_along_axis(logp, targets[..., None], -1))
    return nll, {"accuracy": jnp.mean(outputs.argmax(-1) == targets), "bits_per_char": nll / jnp.log(2.0)}
  mse = jnp.mean((outputs - targets) ** 2)
  return mse, {"mse": mse}


def make_sequence_loss(vocab_size: int):
  def sequence_loss(obj: Objective, model: networks.BSDNet, batch: dict[str, jax.Array], rng: jax.Array):
    del rng
    outputs, fwd = sequence_outputs(obj, model, batch, vocab_size, train=True)
    top_loss, metrics = sequence_top_loss(obj, outputs, batch["target"])
    metrics["top_loss"] = top_loss
    num = model.num_levels
    total = obj.top_weight * top_loss if obj.method == "bsd" else top_loss
    if obj.spec.activation == "lif":
      metrics.update(_rates(fwd, range(1, num), "f"))
    if obj.method == "bsd":
      top = sequence_top(obj, model, batch["target"])
      bwd = networks.backward_pass(model, top, obj.spec, train=True, static=False)
      align, align_metrics = _alignment(obj, fwd, bwd, range(1, num), per_step=True,
                                        steps=slice(obj.burn_in, None))
      total = total + obj.reco_weight * align
      metrics.update(align_metrics)
    elif obj.method == "dfa":
      # Per step: each step's output error (0 in the burn-in) projected to the hidden levels of that step.
      top = jax.lax.stop_gradient(fwd.drives[num])
      error = jax.grad(lambda o: sequence_top_loss(obj, sequence_readout(obj, model, o), batch["target"])[0])(top)
      total = total + _dfa_term(_dfa_forward_levels(model, fwd), error)
    return total, metrics
  return sequence_loss


def local_losses(obj: Objective, model: networks.BSDNet, batch: dict[str, Any]) -> dict[int, jax.Array]:
  """BSD's loss at each level of a classification model, by level (for tests and analysis).

  Level L: the top cross-entropy; 1..L-1: ReCo; 0: reconstruction (when B_0 exists).
  """
  labels = batch["label"]
  num = model.num_levels
  fwd = networks.forward_pass(model, to_float(batch["image"]), obj.spec, train=True, static=True,
                                top_mean=True)
  dec = codes_lib.decoding_codes(obj.code_kind, model.codes[...])
  out = {num: losses.cosine_cross_entropy(fwd.drives[num].mean(0), dec, labels, obj.logit_scale)[0]}
  top = model.codes[...][labels]
  bwd = networks.backward_pass(model, top, obj.spec, train=True, static=True, bottom_mean=True)
  for level in range(1, num):
    out[level] = _reco(obj, _voltage(obj, fwd, level), _voltage(obj, bwd, level), obj.reco_time == "per_step")
  if model.backward_start == 0:
    recon = jax.nn.sigmoid(bwd.drives[0].mean(0)).reshape(batch["image"].shape)
    out[0] = losses.reconstruction_loss(recon, to_float(batch["image"]))
  return out
