"""Masked reductions over token sequences, and advantage whitening.

Every RL quantity here lives on a `[batch, time]` grid whose mask marks the tokens the policy produced (1) and
everything else (0): prompt, environment observations, padding. A reduction over the grid must ignore masked
positions both in value and in gradient, so values there are replaced with `jnp.where` before any arithmetic:
multiplying by the mask would let a NaN or inf from an environment position leak through (nan * 0 = nan).

Whitening follows the PPO/RLHF practice of normalising advantages to zero mean and unit variance over the
batch's live tokens (Andrychowicz et al. 2021, "What matters in on-policy RL"); the variance uses
Bessel's correction like `verl.utils.torch_functional.masked_var`, which AgentGym-RL trains with.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _as_bool(mask: jax.Array) -> jax.Array:
  return jnp.asarray(mask).astype(bool)


def masked_sum(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
  """Sum of `x` over positions where `mask` is true; masked values never enter (not even as NaN)."""
  return jnp.sum(jnp.where(_as_bool(mask), x, 0.0), axis=axis)


def masked_mean(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
  """Mean over unmasked positions; 0 where there are none (an empty sequence has no loss, not a NaN)."""
  count = jnp.sum(_as_bool(mask), axis=axis)
  return masked_sum(x, mask, axis) / jnp.maximum(count, 1)


def masked_var(x: jax.Array, mask: jax.Array, unbiased: bool = True) -> jax.Array:
  """Variance over all unmasked positions, with Bessel's correction when `unbiased`."""
  mask = _as_bool(mask)
  count = jnp.sum(mask)
  centred = jnp.where(mask, x - masked_mean(x, mask), 0.0)
  denominator = jnp.maximum(count - 1, 1) if unbiased else jnp.maximum(count, 1)
  return jnp.sum(centred**2) / denominator


@functools.partial(jax.jit, static_argnames=("shift_mean", "unbiased"))
def whiten(x: jax.Array, mask: jax.Array, eps: float = 1e-8, shift_mean: bool = True,
           unbiased: bool = True) -> jax.Array:
  """(x - mean) / sqrt(var + eps) over the unmasked positions of the whole batch; 0 at masked positions.

  `shift_mean=False` keeps the mean (scales only), as `verl`'s `masked_whiten(..., shift_mean=False)`.
  """
  mask = _as_bool(mask)
  mean = masked_mean(x, mask)
  out = (x - mean) * jax.lax.rsqrt(masked_var(x, mask, unbiased) + eps)
  if not shift_mean:
    out = out + mean
  return jnp.where(mask, out, 0.0)
