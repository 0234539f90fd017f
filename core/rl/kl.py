"""Per-token Monte-Carlo estimators of KL(pi || pi_ref) from samples of pi (J. Schulman, "Approximating KL
Divergence", blog post, 2020, http://joschu.net/blog/kl-approx.html).

With x ~ pi and r = pi_ref(x) / pi(x), i.e. log r = ref_log_prob - log_prob:
  k1 = -log r                unbiased, high variance, can be negative;
  k2 = (log r)^2 / 2         biased, low variance, always >= 0;
  k3 = (r - 1) - log r       unbiased and always >= 0 (the "low-variance KL" that GRPO, Shao et al. 2024 eq. 4,
                             and AgentGym-RL's `low_var_kl` loss use).
As losses (differentiated through log_prob, the samples held fixed) they pull in different directions: the
expected gradient of k1 is 0 (E_pi[grad log pi] = 0: it only adds noise), that of k2 is grad KL(pi || pi_ref), and
that of k3 is grad KL(pi_ref || pi), the reverse KL, which is what GRPO's and verl's k3 loss optimise.
`clip` bounds the estimate as verl does for k3 (to +-10; here it bounds k1 and k2 too when given, which verl does
not: pass no clip, `algorithm.kl_clip=0`, for verl's k1/k2), because exp(log r) explodes for tokens the reference
finds very unlikely. Clipping the value is not enough for the gradient: past log r ~ 88.7, exp overflows to inf
in float32, and the clip's zero gradient times inf is NaN. So k3 first clamps log r to +-LOG_RATIO_CLAMP (20,
verl's `low_var_kl`), where exp is still finite; beyond it the estimate is constant (its gradient is 0).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

ESTIMATORS = ("k1", "k2", "k3")
LOG_RATIO_CLAMP = 20.0  # |log r| beyond this is treated as this: exp(20) ~ 5e8 is finite in float32


def kl_k1(log_probs: jax.Array, ref_log_probs: jax.Array) -> jax.Array:
  return log_probs - ref_log_probs


def kl_k2(log_probs: jax.Array, ref_log_probs: jax.Array) -> jax.Array:
  return 0.5 * jnp.square(ref_log_probs - log_probs)


def kl_k3(log_probs: jax.Array, ref_log_probs: jax.Array) -> jax.Array:
  log_ratio = jnp.clip(ref_log_probs - log_probs, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  return jnp.expm1(log_ratio) - log_ratio  # expm1 keeps precision when the two policies are close


@functools.partial(jax.jit, static_argnames=("estimator", "clip"))
def kl_estimate(log_probs: jax.Array, ref_log_probs: jax.Array, estimator: str,
                clip: float | None = None) -> jax.Array:
  """Per-token KL estimate, `estimator` one of k1, k2, k3; clipped to [-clip, clip] when `clip` is given."""
  if estimator not in ESTIMATORS:
    raise ValueError(f"unknown KL estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}.")
  kl = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}[estimator](log_probs, ref_log_probs)
  return kl if clip is None else jnp.clip(kl, -clip, clip)
