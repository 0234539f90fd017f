"""Advantage estimators for multi-turn LLM agents: GAE at token or turn level, discounted returns, GRPO, RLOO and
REINFORCE++.

Layout. A trajectory is one token row `[T]` holding prompt, the model's turns and the environment's replies;
`mask` is 1 on the model's own tokens only. Environment tokens are *skipped*, not zeroed: the next state of a
model token is the next model token, wherever it is, so a reward earned at the end flows back through the
observation text to earlier turns undiminished by the observation's length. Rewards placed on masked positions
are ignored; put the outcome score on the last model token with `outcome_token_rewards` (AgentGym-RL: one outcome
score at the end, on the last response token).

Equations.
* GAE (Schulman et al. 2016, "High-Dimensional Continuous Control Using GAE", eq. 16):
  A_t = sum_l (gamma lam)^l delta_{t+l},  delta_t = r_t + gamma V(s_{t+1}) - V(s_t),  computed backwards as
  A_t = delta_t + gamma lam A_{t+1}; returns (critic targets) are A_t + V(s_t).
* Turn-level GAE: the same recursion over turns instead of tokens (one state per turn: its reward is the sum of
  its tokens' rewards, its value the value at its first token); each token of a turn gets its turn's advantage.
* GRPO (Shao et al. 2024, "DeepSeekMath", sec. 4.1.2, outcome supervision): A_i = (R_i - mean(R)) / (std(R) + eps)
  over the G rollouts of one task, the same for every token of rollout i.
* RLOO (Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization"): the baseline of
  rollout i is the mean of the other k-1 rollouts' rewards, A_i = R_i - (sum_{j != i} R_j) / (k - 1).
* REINFORCE++ (Hu 2025, arXiv 2501.03262): token reward r_t = 1[t = last] R - beta KL_t, return-to-go
  G_t = sum_{s >= t} gamma^(s-t) r_s, then the advantage is G normalised over the whole global batch
  (A = (G - mean) / std), with no critic and no per-prompt baseline.
Group layouts are consecutive: scores `[B]` with B = num_groups * group_size, group g at rows
g*group_size ... (g+1)*group_size - 1 (the rollout code samples a task's group together).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from core.rl.masked import masked_mean, masked_sum, whiten


def _bool(mask: jax.Array) -> jax.Array:
  return jnp.asarray(mask).astype(bool)


@jax.jit
def outcome_token_rewards(scores: jax.Array, mask: jax.Array) -> jax.Array:
  """[B] scores -> [B, T] rewards: each score on its row's last model token, zero elsewhere (and on empty rows)."""
  mask = _bool(mask)
  time = mask.shape[-1]
  last = time - 1 - jnp.argmax(mask[:, ::-1], axis=-1)
  at_last = (jnp.arange(time)[None, :] == last[:, None]) & jnp.any(mask, axis=-1, keepdims=True)
  return jnp.where(at_last, scores[:, None].astype(jnp.float32), 0.0)


@jax.jit
def sequence_to_tokens(values: jax.Array, mask: jax.Array) -> jax.Array:
  """[B] per-sequence values (e.g. GRPO advantages) -> [B, T] on model tokens, 0 elsewhere."""
  return jnp.where(_bool(mask), values[:, None].astype(jnp.float32), 0.0)


@jax.jit
def gae(rewards: jax.Array, values: jax.Array, mask: jax.Array, gamma: float, lam: float,
        last_value: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """GAE over the unmasked steps of each row, skipping masked ones. Shapes [B, T] -> (advantages, returns).

  `last_value` [B] bootstraps after the last step (the value of the state the trajectory was cut in, for a
  truncated episode); None means the episode ended (value 0). Outputs are 0 at masked positions.
  """
  mask = _bool(mask)
  rewards = jnp.where(mask, rewards, 0.0).astype(jnp.float32)
  values = jnp.where(mask, values, 0.0).astype(jnp.float32)
  batch = rewards.shape[0]
  next_value = jnp.zeros((batch,), jnp.float32) if last_value is None else last_value.astype(jnp.float32)

  def backward(carry, step):
    next_value, next_adv = carry
    r, v, m = step
    adv = r + gamma * next_value - v + gamma * lam * next_adv
    # A masked step is not a step of the MDP: it passes the later step's value and advantage through unchanged.
    return (jnp.where(m, v, next_value), jnp.where(m, adv, next_adv)), jnp.where(m, adv, 0.0)

  _, adv = jax.lax.scan(backward, (next_value, jnp.zeros((batch,), jnp.float32)),
                        (rewards.T, values.T, mask.T), reverse=True)
  adv = adv.T
  return adv, jnp.where(mask, adv + values, 0.0)


@jax.jit
def discounted_returns(rewards: jax.Array, mask: jax.Array, gamma: float) -> jax.Array:
  """Return-to-go G_t = r_t + gamma G_{next unmasked step}, over unmasked steps; 0 at masked ones. [B, T]."""
  mask = _bool(mask)
  rewards = jnp.where(mask, rewards, 0.0).astype(jnp.float32)

  def backward(next_return, step):
    r, m = step
    g = r + gamma * next_return
    return jnp.where(m, g, next_return), jnp.where(m, g, 0.0)

  _, returns = jax.lax.scan(backward, jnp.zeros((rewards.shape[0],), jnp.float32), (rewards.T, mask.T),
                            reverse=True)
  return returns.T


@jax.jit
def turn_index(mask: jax.Array) -> jax.Array:
  """[B, T] -> the turn each model token belongs to (0, 1, ...: each maximal run of 1s is one turn); -1 elsewhere."""
  mask = _bool(mask)
  previous = jnp.pad(mask[:, :-1], ((0, 0), (1, 0)))
  starts = mask & ~previous
  return jnp.where(mask, jnp.cumsum(starts, axis=-1) - 1, -1)


def turn_level_gae(rewards: jax.Array, values: jax.Array, mask: jax.Array, gamma: float, lam: float,
                   max_turns: int) -> tuple[jax.Array, jax.Array]:
  """GAE with one MDP step per turn, broadcast back to tokens. [B, T] inputs -> [B, T] (advantages, returns).

  A turn's reward is the sum of its tokens' rewards and its value is the value at its first token (the critic's
  estimate of the context the turn starts from). `max_turns` (static) bounds the turns of a row: a row with more
  would lose its later turns' rewards, and with them every earlier turn's advantage, so a concrete `mask` with
  more turns raises. Under an outer `jit` the mask is abstract and the caller must guarantee the bound.
  """
  if not isinstance(mask, jax.core.Tracer):
    turns = int(jnp.max(turn_index(mask))) + 1
    if turns > max_turns:
      raise ValueError(f"a row of the mask has {turns} model turns, more than max_turns={max_turns}. Fix: pass "
                       "max_turns >= the largest turn limit of the rollouts.")
  return _turn_level_gae(rewards, values, mask, gamma, lam, max_turns)


@functools.partial(jax.jit, static_argnames=("max_turns",))
def _turn_level_gae(rewards: jax.Array, values: jax.Array, mask: jax.Array, gamma: float, lam: float,
                    max_turns: int) -> tuple[jax.Array, jax.Array]:
  mask = _bool(mask)
  turns = turn_index(mask)
  one_hot = jax.nn.one_hot(turns, max_turns, dtype=jnp.float32)  # index -1 gives an all-zero row
  previous = jnp.pad(mask[:, :-1], ((0, 0), (1, 0)))
  first = (mask & ~previous).astype(jnp.float32)
  turn_rewards = jnp.einsum("btk,bt->bk", one_hot, jnp.where(mask, rewards, 0.0).astype(jnp.float32))
  turn_values = jnp.einsum("btk,bt->bk", one_hot * first[..., None], jnp.where(mask, values, 0.0).astype(jnp.float32))
  turn_mask = jnp.sum(one_hot, axis=1) > 0
  turn_adv, turn_returns = gae(turn_rewards, turn_values, turn_mask, gamma, lam)
  return (jnp.einsum("btk,bk->bt", one_hot, turn_adv), jnp.einsum("btk,bk->bt", one_hot, turn_returns))


def _groups(scores: jax.Array, group_size: int, valid: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  if group_size < 2:
    raise ValueError(f"group_size must be >= 2 for a group baseline, got {group_size}.")
  if scores.ndim != 1 or scores.shape[0] % group_size:
    raise ValueError(f"scores must be [num_groups * group_size]; got shape {scores.shape} with group_size "
                     f"{group_size}. Fix: sample group_size rollouts per task, consecutively.")
  valid = jnp.ones(scores.shape, bool) if valid is None else _bool(valid)
  if valid.shape != scores.shape:
    raise ValueError(f"valid must have the shape of scores {scores.shape}, got {valid.shape}.")
  return scores.astype(jnp.float32).reshape(-1, group_size), valid.reshape(-1, group_size)


@functools.partial(jax.jit, static_argnames=("group_size", "scale_by_std", "unbiased_std"))
def grpo_advantages(scores: jax.Array, group_size: int, eps: float = 1e-6, scale_by_std: bool = True,
                    unbiased_std: bool = True, valid: jax.Array | None = None) -> jax.Array:
  """GRPO outcome advantages (R - group mean) / (group std + eps): [B] -> [B].

  `unbiased_std` uses Bessel's correction as `torch.std` does in verl/AgentGym-RL; `scale_by_std=False` gives
  the mean-only variant of Dr. GRPO (Liu et al. 2025). `valid` [B] (default: all) marks the rollouts that count:
  the group's mean and std run over its valid rollouts only, invalid ones (say, an environment that failed at
  reset: no model token, score 0) get 0, and so does every rollout of a group with fewer than 2 valid ones.
  """
  groups, valid = _groups(scores, group_size, valid)
  count = valid.sum(axis=1, keepdims=True)
  mean = masked_mean(groups, valid, axis=1)[:, None]
  centred = jnp.where(valid, groups - mean, 0.0)
  if scale_by_std:
    ddof = 1 if unbiased_std else 0
    variance = masked_sum(jnp.square(centred), valid, axis=1)[:, None] / jnp.maximum(count - ddof, 1)
    centred = centred / (jnp.sqrt(variance) + eps)
  return jnp.where(count >= 2, centred, 0.0).reshape(-1)


@functools.partial(jax.jit, static_argnames=("group_size",))
def rloo_advantages(scores: jax.Array, group_size: int, valid: jax.Array | None = None) -> jax.Array:
  """RLOO: each rollout's reward minus the mean reward of the other rollouts of its task. [B] -> [B].

  `valid` as in `grpo_advantages`: the baseline averages the other valid rollouts; invalid rollouts, and groups
  with fewer than 2 valid ones, get 0."""
  groups, valid = _groups(scores, group_size, valid)
  count = valid.sum(axis=1, keepdims=True)
  others = masked_sum(groups, valid, axis=1)[:, None] - groups
  leave_one_out = others / jnp.maximum(count - 1, 1)
  return jnp.where(valid & (count >= 2), groups - leave_one_out, 0.0).reshape(-1)


@jax.jit
def reinforce_pp_advantages(rewards: jax.Array, mask: jax.Array, gamma: float, kl: jax.Array | None = None,
                            kl_coef: float = 0.0, eps: float = 1e-8) -> tuple[jax.Array, jax.Array]:
  """REINFORCE++: returns of the KL-penalised token rewards, whitened over all model tokens of the batch.

  `rewards` [B, T] are the environment rewards (the outcome score on the last model token), `kl` [B, T] the
  per-token KL estimate to the reference policy (k1 in the paper), subtracted with weight `kl_coef`.
  Returns (advantages, returns).
  """
  if kl is not None:
    rewards = rewards - kl_coef * kl
  returns = discounted_returns(rewards, mask, gamma)
  return whiten(returns, mask, eps), returns
