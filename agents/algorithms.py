"""The four RL algorithms of AgentGym-RL (arXiv 2509.08755, sec. 3 and its released verl configs) as two pure
pieces per algorithm: the advantages of a rollout batch, and the token-level actor loss.

All four optimise the PPO clipped surrogate (Schulman et al. 2017, eq. 7) on the model's own tokens; they differ
in the advantage:

  ppo           GAE (Schulman et al. 2016, eq. 16) with a learned critic, gamma = lambda = 1, whitened over the
                batch's model tokens; the critic fits the GAE returns with a clipped value loss. `gae_level`
                "token" (default: each model token is a step) or "turn" (each turn is a step, its value the
                critic's at its first token; core.rl.turn_level_gae).
  grpo          (R - mean_group R) / (std_group R + 1e-6) over the `group_size` rollouts of a task (Shao 2024).
  rloo          R minus the mean of the other rollouts of the task (Ahmadian 2024).
  reinforce_pp  returns of the token rewards minus `kl_coef` * k1 KL to the reference policy, whitened over the
                batch (Hu 2025, REINFORCE++).

The reward is one outcome score per trajectory on its last model token (`agents.rollout.to_batch`). Regularisers:
entropy bonus 0.001 and the "low-variance" k3 KL loss to the frozen reference policy with weight 0.001 (the paper's
settings); REINFORCE++ puts its KL in the reward instead (`kl_mode = "reward"`), as its paper does.
`kl_mode = "auto"` (the default) picks between the two from the algorithm's name when it is used, so
`--config.algorithm.name=reinforce_pp` alone gets REINFORCE++'s KL-in-reward.

Rollouts that count (`valid` [B]): those with at least one model token. `rollout.to_batch` clears the loss
mask of a trajectory that an environment error ended, so such a rollout neither learns nor moves the group
baseline of its siblings (an infrastructure failure is not a signal about the policy).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from core import config as config_lib
from core import rl
from core.config import section

ALGORITHMS = ("ppo", "grpo", "rloo", "reinforce_pp")
GAE_LEVELS = ("token", "turn")
KL_MODES = ("auto", "loss", "reward", "none")


def algorithm_config(name: str = "grpo", **overrides: Any) -> ml_collections.ConfigDict:
  """The `algorithm` section. `kl_mode` "auto": the reward for REINFORCE++, a loss otherwise (`kl_mode`)."""
  return section("algorithm", dict(
      name=name, clip_eps=0.2,
      clip_eps_high=0.0,  # > 0: DAPO's clip-higher, the ratio's upper bound 1 + clip_eps_high (0: 1 + clip_eps)
      dual_clip=0.0,  # > 1: dual-clip PPO's bound -c A on negative-advantage tokens (verl's clip_ratio_c); 0: off
      entropy_coef=0.001, kl_coef=0.001, kl_estimator="k3", kl_clip=10.0,
      kl_mode="auto", loss_aggregation="token-mean", loss_horizon=0,
      gamma=1.0, lam=1.0, value_clip=0.5, update_epochs=1, minibatches=1, whiten_gae=True, gae_level="token"),
      overrides)


def validate_algorithm_config(config: ml_collections.ConfigDict) -> None:
  config_lib.check_choice(config, "algorithm.name", ALGORITHMS)
  config_lib.check_choice(config, "algorithm.kl_mode", KL_MODES)
  config_lib.check_choice(config, "algorithm.kl_estimator", rl.KL_ESTIMATORS)
  config_lib.check_choice(config, "algorithm.loss_aggregation", rl.AGGREGATION_MODES)
  config_lib.check_choice(config, "algorithm.gae_level", GAE_LEVELS)
  for key in ("algorithm.clip_eps", "algorithm.update_epochs", "algorithm.minibatches", "algorithm.value_clip"):
    config_lib.check_positive(config, key)
  config_lib.check(config, "algorithm.clip_eps", lambda c: c < 1,
                   "must be < 1 (e.g. 0.2, the paper's): the ratio's lower clip bound 1 - clip_eps would be <= 0, "
                   "which no ratio reaches, so nothing would stop a negative-advantage token's probability from "
                   "being pushed towards 0")
  for key in ("algorithm.entropy_coef", "algorithm.kl_coef", "algorithm.kl_clip", "algorithm.loss_horizon",
              "algorithm.clip_eps_high"):
    config_lib.check_positive(config, key, allow_zero=True)
  config_lib.check(config, "algorithm.dual_clip", lambda c: c == 0 or c > 1,
                   "must be 0 (off) or > 1 (e.g. 3, verl's clip_ratio_c): a bound at or below 1 would cut the loss "
                   "of negative-advantage tokens below the unclipped surrogate")
  for key in ("algorithm.gamma", "algorithm.lam"):
    config_lib.check(config, key, lambda v: 0.0 <= v <= 1.0, "must lie in [0, 1]")
  if config.algorithm.name in ("grpo", "rloo"):
    config_lib.check(config, "rollout.group_size", lambda g: g >= 2,
                     f"must be >= 2 for {config.algorithm.name}'s group baseline (the paper samples several "
                     "rollouts per task)")
    config_lib.check(config, "algorithm.kl_mode", lambda m: kl_mode(config.algorithm) != "reward",
                     f"{config.algorithm.name} scores whole trajectories, so its KL goes in the loss",
                     "pass --config.algorithm.kl_mode=loss")
  if kl_mode(config.algorithm) == "loss" and config.algorithm.kl_coef > 0:
    # Differentiated as a loss, k1 = log pi - log pi_ref has expected gradient E_pi[grad log pi] = 0.
    config_lib.check(config, "algorithm.kl_estimator", lambda e: e != "k1",
                     "must not be k1 when the KL is a loss: k1's expected gradient is 0, so it would only add "
                     "noise", "pass --config.algorithm.kl_estimator=k3 (the paper's) or k2")


def kl_mode(algo: ml_collections.ConfigDict) -> str:
  """Where the KL to the reference goes, "loss", "reward" or "none": `algo.kl_mode`, with "auto" resolved from
  the algorithm (REINFORCE++ penalises its rewards, the others add a loss)."""
  if algo.kl_mode != "auto":
    return algo.kl_mode
  return "reward" if algo.name == "reinforce_pp" else "loss"


def advantages(algo: ml_collections.ConfigDict, batch: Mapping[str, jax.Array], group_size: int,
               values: jax.Array | None = None, max_turns: int | None = None) -> tuple[jax.Array, jax.Array | None]:
  """[B, T] advantages on model tokens (0 elsewhere) and, for PPO, the critic's [B, T] return targets.
  `max_turns` (the largest turn limit) is needed by turn-level GAE only.

  `batch` holds `loss_mask`, `scores` [B], `old_logprobs` (the sampling policy's, recomputed by a full forward
  pass) and `ref_logprobs` [B, T].
  Rollouts of one task are consecutive (`rollout` lays them out so).
  """
  mask = batch["loss_mask"].astype(bool)
  scores = batch["scores"]
  valid = mask.any(axis=-1)
  rewards = rl.outcome_token_rewards(scores, mask)
  if kl_mode(algo) == "reward":
    rewards = rewards - algo.kl_coef * kl_reward_penalty(batch)
  if algo.name == "grpo":
    return rl.sequence_to_tokens(rl.grpo_advantages(scores, group_size, valid=valid), mask), None
  if algo.name == "rloo":
    return rl.sequence_to_tokens(rl.rloo_advantages(scores, group_size, valid=valid), mask), None
  if algo.name == "reinforce_pp":
    adv, _ = rl.reinforce_pp_advantages(rewards, mask, algo.gamma)
    return adv, None
  if values is None:
    raise ValueError("ppo needs the critic's values.")
  if algo.gae_level == "turn":
    if max_turns is None:
      raise ValueError("turn-level GAE needs max_turns, the largest turn limit of the rollouts.")
    adv, returns = rl.turn_level_gae(rewards, values, mask, algo.gamma, algo.lam, int(max_turns))
  else:
    adv, returns = rl.gae(rewards, values, mask, algo.gamma, algo.lam)
  if algo.whiten_gae:
    adv = rl.whiten(adv, mask)
  return jnp.where(mask, adv, 0.0), returns


def kl_reward_penalty(batch: Mapping[str, jax.Array]) -> jax.Array:
  """REINFORCE++'s per-token KL penalty (before its coefficient): k1 = log pi_old - log pi_ref on model tokens,
  with the same recomputed log-probs as the PPO ratio (not the sampler's KV-cache numbers)."""
  return rl.kl_loss(batch["old_logprobs"], batch["ref_logprobs"], batch["loss_mask"].astype(bool), "k1")


def loss_horizon(algo: ml_collections.ConfigDict, max_context_tokens: int) -> int:
  """The constant that `seq-mean-token-sum-norm` divides each sequence's token sum by (Dr. GRPO): the configured
  `loss_horizon`, or by default the context limit (the most model tokens a trajectory can hold). A constant, not
  the padded width of the batch, which changes from step to step."""
  return int(algo.loss_horizon) or int(max_context_tokens)


def actor_loss(algo: ml_collections.ConfigDict, logits: jax.Array, batch: Mapping[str, jax.Array],
               horizon: int | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The actor's scalar loss from the policy's logits [B, T, V] on `batch` (tokens, loss_mask, old_logprobs,
  ref_logprobs, advantages): clipped surrogate - entropy_coef * entropy (+ kl_coef * KL when kl_mode = loss),
  each aggregated over model tokens only, so environment and prompt tokens get no gradient. `horizon`: see
  `loss_horizon` (only `seq-mean-token-sum-norm` uses it). The KL estimate is clipped to +-`kl_clip` (0: not
  clipped), as verl does for k3 (verl leaves k1/k2 unclipped; here the clip applies to whichever estimator), since
  k3 = exp(log r) - 1 - log r explodes on a token the policy finds far less likely than the reference does."""
  from core.llm.scoring import logprobs_from_logits

  mask = batch["loss_mask"].astype(bool)
  logprobs = logprobs_from_logits(logits, batch["tokens"])
  surrogate, diagnostics = rl.ppo_clip_loss(logprobs, batch["old_logprobs"], batch["advantages"], mask,
                                            algo.clip_eps, float(algo.clip_eps_high) or None,
                                            float(algo.dual_clip) or None)
  # Entropy of the distribution each model token was drawn from (the logits one position earlier).
  entropy = jnp.pad(rl.entropy_from_logits(logits[:, :-1]), ((0, 0), (1, 0)))
  pg_loss = rl.aggregate(surrogate, mask, algo.loss_aggregation, horizon)
  entropy_mean = rl.aggregate(entropy, mask, algo.loss_aggregation, horizon)
  loss = pg_loss - algo.entropy_coef * entropy_mean
  kl_clip = float(algo.kl_clip) or None
  kl = rl.aggregate(rl.kl_loss(logprobs, batch["ref_logprobs"], mask, algo.kl_estimator, kl_clip), mask,
                    algo.loss_aggregation, horizon)
  if kl_mode(algo) == "loss":
    loss = loss + algo.kl_coef * kl
  return loss, {"pg_loss": pg_loss, "entropy": entropy_mean, "kl_ref": kl, **diagnostics}


def critic_loss(algo: ml_collections.ConfigDict, values: jax.Array, batch: Mapping[str, jax.Array],
                horizon: int | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """PPO's clipped value loss against the GAE returns, over model tokens."""
  mask = batch["loss_mask"].astype(bool)
  per_token = rl.value_loss(values, batch["old_values"], batch["returns"], mask, algo.value_clip)
  loss = rl.aggregate(per_token, mask, algo.loss_aggregation, horizon)
  return loss, {"value_loss": loss, "value_mean": rl.masked_mean(values, mask)}
