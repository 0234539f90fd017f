"""Paper-independent policy-gradient building blocks (used by agents/, there for any RL paper): advantages
(GAE at token or turn level, GRPO, RLOO, REINFORCE++), token-level losses (PPO clip, policy gradient, value,
KL, entropy), loss aggregation, KL estimators. All pure and jitted, on [batch, time] grids with a mask of the
model's own tokens."""

from core.rl.advantages import (discounted_returns, gae, grpo_advantages, outcome_token_rewards,
                                reinforce_pp_advantages, rloo_advantages, sequence_to_tokens, turn_index,
                                turn_level_gae)
from core.rl.distributions import entropy_from_logits, token_log_probs
from core.rl.kl import ESTIMATORS as KL_ESTIMATORS
from core.rl.kl import kl_estimate, kl_k1, kl_k2, kl_k3
from core.rl.losses import (AGGREGATION_MODES, aggregate, kl_loss, policy_gradient_loss, ppo_clip_loss,
                            value_loss)
from core.rl.masked import masked_mean, masked_sum, masked_var, whiten

__all__ = [
    "AGGREGATION_MODES", "KL_ESTIMATORS", "aggregate", "discounted_returns", "entropy_from_logits", "gae",
    "grpo_advantages", "kl_estimate", "kl_k1", "kl_k2", "kl_k3", "kl_loss", "masked_mean", "masked_sum",
    "masked_var", "outcome_token_rewards", "policy_gradient_loss", "ppo_clip_loss", "reinforce_pp_advantages",
    "rloo_advantages", "sequence_to_tokens", "token_log_probs", "turn_index", "turn_level_gae", "value_loss",
    "whiten",
]
