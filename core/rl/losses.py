"""Token-level policy, value, KL and entropy losses, and how per-token losses are reduced to one number.

* PPO clipped surrogate (Schulman et al. 2017, "Proximal Policy Optimization Algorithms", eq. 7):
  L = -E_t[min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps_high) A_t)],  rho_t = pi(a_t|s_t) / pi_old(a_t|s_t).
  `clip_eps_high` allows the asymmetric "clip-higher" of DAPO (Yu et al. 2025); `dual_clip` the lower bound
  -c A_t for A_t < 0 of dual-clip PPO (Ye et al. 2020), as verl does. The log-ratio is clamped to +-20
  before exp (verl does the same): past ~88.7 exp overflows float32, and inf times the clip's zero gradient is
  NaN. A clamped token has a constant ratio, so it gives no gradient; within +-20 nothing changes. GRPO, REINFORCE++ and PPO in
  AgentGym-RL all use this surrogate (clip 0.2); they differ in the advantages fed to it (advantages.py).
* Plain policy gradient -A_t log pi(a_t|s_t): RLOO's REINFORCE estimator (Ahmadian et al. 2024), exact
  when the samples come from the current policy.
* Clipped value loss of PPO implementations: 0.5 max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2).
* KL loss: a per-token estimator of KL(pi || pi_ref) (kl.py) added to the loss with its coefficient (GRPO eq. 3;
  AgentGym-RL: low-variance k3, coefficient 0.001). Its value estimates KL(pi || pi_ref); its gradient, for k3,
  is that of KL(pi_ref || pi) (k2's is that of KL(pi || pi_ref); k1's is 0 in expectation; see kl.py).
  Entropy bonus: minus the coefficient times the entropy.

Aggregation (`aggregate`), the modes of verl's `agg_loss`, over a mask of model tokens:
  token-mean                 sum over all model tokens / their number (every token weighs the same);
  seq-mean-token-sum         per sequence, sum over its tokens; then mean over sequences;
  seq-mean-token-mean        per sequence, mean over its tokens; then mean over sequences (GRPO's 1/|o_i|);
  seq-mean-token-sum-norm    per sequence, sum over tokens / a constant horizon (Dr. GRPO; default T), then the
                             mean over sequences. verl's mode of this name sums over the sequences instead, a
                             factor of B larger (the same direction; under Adam only clipping and eps see it).
Sequence means run over rows with at least one model token. Masked positions never reach the value or the
gradient: each function selects with `jnp.where` before arithmetic, so garbage at environment positions
(including inf/NaN log-probs) cannot leak in.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from core.rl.kl import LOG_RATIO_CLAMP, kl_estimate
from core.rl.masked import masked_mean

AGGREGATION_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


@functools.partial(jax.jit, static_argnames=("mode", "horizon"))
def aggregate(per_token: jax.Array, mask: jax.Array, mode: str, horizon: int | None = None) -> jax.Array:
  """Reduces a [B, T] per-token loss to a scalar over the model tokens in `mask`, in one of AGGREGATION_MODES."""
  if mode not in AGGREGATION_MODES:
    raise ValueError(f"unknown loss aggregation {mode!r}; valid: {', '.join(AGGREGATION_MODES)}.")
  mask = jnp.asarray(mask).astype(bool)
  if mode == "token-mean":
    return masked_mean(per_token, mask)
  token_sum = jnp.sum(jnp.where(mask, per_token, 0.0), axis=-1)
  count = jnp.sum(mask, axis=-1)
  if mode == "seq-mean-token-sum":
    per_sequence = token_sum
  elif mode == "seq-mean-token-mean":
    per_sequence = token_sum / jnp.maximum(count, 1)
  else:
    per_sequence = token_sum / (per_token.shape[-1] if horizon is None else horizon)
  return masked_mean(per_sequence, count > 0)


@functools.partial(jax.jit, static_argnames=("dual_clip",))
def ppo_clip_loss(log_probs: jax.Array, old_log_probs: jax.Array, advantages: jax.Array, mask: jax.Array,
                  clip_eps: float, clip_eps_high: float | None = None,
                  dual_clip: float | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Per-token PPO clipped-surrogate loss [B, T] (0 at masked positions) and token-mean diagnostics.

  Diagnostics: `clip_frac` (share of tokens whose gradient the clip removed), `approx_kl` (k3 estimate of
  KL(pi_old || pi) from the ratio), `ratio_mean`.
  """
  if dual_clip is not None and not dual_clip > 1.0:
    raise ValueError(f"dual_clip must be > 1 (verl's clip_ratio_c, e.g. 3), got {dual_clip}: a bound below 1 "
                     "would cut the loss of negative-advantage tokens below the unclipped surrogate.")
  mask = jnp.asarray(mask).astype(bool)
  log_ratio = jnp.clip(jnp.where(mask, log_probs - old_log_probs, 0.0), -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  ratio = jnp.exp(log_ratio)
  advantages = jnp.where(mask, advantages, 0.0)
  high = clip_eps if clip_eps_high is None else clip_eps_high
  unclipped = -advantages * ratio
  clipped = -advantages * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + high)
  loss = jnp.maximum(unclipped, clipped)
  if dual_clip is not None:
    loss = jnp.where(advantages < 0, jnp.minimum(loss, -advantages * dual_clip), loss)
  loss = jnp.where(mask, loss, 0.0)
  metrics = {
      "clip_frac": masked_mean((clipped > unclipped).astype(jnp.float32), mask),
      # k3 with r = pi / pi_old, the tokens drawn from pi_old: (r - 1) - log r, unbiased for KL(pi_old || pi).
      "approx_kl": masked_mean(jnp.expm1(log_ratio) - log_ratio, mask),
      "ratio_mean": masked_mean(ratio, mask),
  }
  return loss, metrics


@jax.jit
def policy_gradient_loss(log_probs: jax.Array, advantages: jax.Array, mask: jax.Array) -> jax.Array:
  """Per-token REINFORCE loss -A_t log pi(a_t|s_t) [B, T]; the advantage is a constant (no gradient)."""
  mask = jnp.asarray(mask).astype(bool)
  advantages = jax.lax.stop_gradient(jnp.where(mask, advantages, 0.0))
  return jnp.where(mask, -advantages * jnp.where(mask, log_probs, 0.0), 0.0)


@jax.jit
def value_loss(values: jax.Array, old_values: jax.Array, returns: jax.Array, mask: jax.Array,
               clip_range: float) -> jax.Array:
  """Per-token clipped value loss [B, T] (0 at masked positions)."""
  mask = jnp.asarray(mask).astype(bool)
  values = jnp.where(mask, values, 0.0)
  old_values = jnp.where(mask, old_values, 0.0)
  returns = jnp.where(mask, returns, 0.0)
  clipped = old_values + jnp.clip(values - old_values, -clip_range, clip_range)
  loss = 0.5 * jnp.maximum(jnp.square(values - returns), jnp.square(clipped - returns))
  return jnp.where(mask, loss, 0.0)


@functools.partial(jax.jit, static_argnames=("estimator", "clip"))
def kl_loss(log_probs: jax.Array, ref_log_probs: jax.Array, mask: jax.Array, estimator: str,
            clip: float | None = None) -> jax.Array:
  """Per-token KL(pi || pi_ref) estimate [B, T] (0 at masked positions), to add with its coefficient."""
  mask = jnp.asarray(mask).astype(bool)
  kl = kl_estimate(jnp.where(mask, log_probs, 0.0), jnp.where(mask, ref_log_probs, 0.0), estimator, clip)
  return jnp.where(mask, kl, 0.0)
