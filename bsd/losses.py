"""Layer-local objectives of BSD (arXiv 2509.20284, Sec. 3.2-3.3): the Relaxed Contrastive (ReCo) loss between
the two pathways' voltages, the cosine read-out of the top layer, and the reconstruction loss of generation.

ReCo (the paper's equation for the hidden-layer alignment). For a batch of forward voltages a_1..a_B and
backward voltages b_1..b_B at one layer, with C_kj = cos(a_k, b_j) (a B x B matrix):

    L = sum_k (1 - C_kk)^2  +  lambda * sum_{j != k} max(0, C_kj)^2,      lambda = 0.6

The first term pulls each sample's two voltages into the same direction; the second only pushes apart pairs
of different samples that are positively correlated ("relaxed": negatively correlated pairs cost nothing).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import optax

REDUCTIONS = ("sum", "mean")


def cosine_matrix(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
  """C[k, j] = cos(a_k, b_j) for batches a [B, ...] and b [B', ...] (trailing axes flattened)."""
  a = a.reshape(a.shape[0], -1)
  b = b.reshape(b.shape[0], -1)
  return _unit_rows(a, eps) @ _unit_rows(b, eps).T


def _unit_rows(x: jax.Array, eps: float) -> jax.Array:
  """x / |x| per row. An all-zero row (a sample whose layer is silent at every unit) stays zero, and its gradient
  is that of the row unnormalised (the identity): through x * rsqrt(|x|^2 + eps) it would be 1/sqrt(eps) = 1e4
  times the others' (it swamped the autoencoder's first steps, where the decoder's zero-bias top level sees silent
  latents), while no gradient at all would leave a layer that is silent for every sample silent for good (its
  bias learns only from this row). The identity keeps the direction that aligns the row at the others' scale."""
  squared = jnp.sum(x * x, axis=-1, keepdims=True)
  return jnp.where(squared > 0, x * jax.lax.rsqrt(squared + eps), x)


def reco_loss(a: jax.Array, b: jax.Array, lam: float = 0.6, *, negatives: jax.Array | None = None,
              reduction: str = "sum", eps: float = 1e-8) -> jax.Array:
  """The Relaxed Contrastive loss between forward voltages `a` [B, ...] and backward voltages `b` [B, ...].

  Args:
    lam: weight of the relaxed off-diagonal term (the paper's best: 0.6).
    negatives: optional bool/float [B, B]; 1 where the off-diagonal pair (k, j) counts. The paper's formula
      is all j != k (None). Masking pairs whose backward inputs are identical (same label) is our option:
      such pairs have b_j == b_k, so the paper's formula both pulls a_k onto b_k and pushes it off b_j.
    reduction: "sum" is the paper's formula; "mean" divides it by B so that it does not grow with the batch.
  """
  if reduction not in REDUCTIONS:
    raise ValueError(f"unknown reduction {reduction!r}; valid: {REDUCTIONS}")
  c = cosine_matrix(a, b, eps)
  n = c.shape[0]
  eye = jnp.eye(n, dtype=c.dtype)
  diagonal = jnp.sum((1.0 - jnp.diagonal(c)) ** 2)
  off = (1.0 - eye) if negatives is None else (1.0 - eye) * negatives.astype(c.dtype)
  relaxed = jnp.sum(off * jnp.maximum(c, 0.0) ** 2)
  total = diagonal + lam * relaxed
  return total / n if reduction == "mean" else total


def cosine_logits(outputs: jax.Array, codes: jax.Array, scale: float, eps: float = 1e-8) -> jax.Array:
  """Logits scale * cos(output_b, code_k) [B, K]: the paper's decoding by cosine similarity to class codes."""
  return scale * cosine_matrix(outputs, codes, eps)


def cosine_cross_entropy(outputs: jax.Array, codes: jax.Array, labels: jax.Array, scale: float
                         ) -> tuple[jax.Array, jax.Array]:
  """Mean cross-entropy of the cosine logits, and the logits."""
  logits = cosine_logits(outputs, codes, scale)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits


def frequency_weights(shape: Sequence[int], high_boost: float) -> jax.Array:
  """Weights 1 + high_boost * r / r_max over the 2-D FFT grid [H, W] (r: radial frequency).

  The paper weights high frequency bands more in generation; the exact bands are not given, so the weight
  grows linearly with the radial frequency (our choice, a config field).
  """
  h, w = shape
  fy = jnp.fft.fftfreq(h)[:, None]
  fx = jnp.fft.fftfreq(w)[None, :]
  r = jnp.sqrt(fy ** 2 + fx ** 2)
  return 1.0 + high_boost * r / jnp.max(r)


def reconstruction_loss(recon: jax.Array, target: jax.Array, fft_weight: float = 0.0,
                        high_boost: float = 0.0) -> jax.Array:
  """Pixel MSE plus, if fft_weight > 0, a frequency-weighted MSE of the 2-D spectra (images [B, H, W, C])."""
  loss = jnp.mean((recon - target) ** 2)
  if fft_weight > 0:
    weights = frequency_weights(recon.shape[1:3], high_boost)[None, :, :, None]
    diff = jnp.fft.fft2(recon - target, axes=(1, 2), norm="ortho")
    loss = loss + fft_weight * jnp.mean(weights * jnp.abs(diff) ** 2)
  return loss
