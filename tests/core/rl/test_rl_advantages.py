"""Advantages and returns: hand-computed values, and GAE/returns against rlax on rows with environment tokens."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from core import rl


def test_gae_matches_hand_computation_and_skips_environment_tokens():
  gamma, lam = 0.9, 0.8
  # Three model tokens: deltas 0.04, 0.03, 0.3 -> A2 = 0.3, A1 = 0.03 + 0.72 * 0.3, A0 = 0.04 + 0.72 * A1.
  a2 = 0.3
  a1 = 0.03 + gamma * lam * a2
  a0 = 0.04 + gamma * lam * a1
  adv, ret = rl.gae(jnp.array([[0.0, 0.0, 1.0]]), jnp.array([[0.5, 0.6, 0.7]]), jnp.ones((1, 3)), gamma, lam)
  chex.assert_trees_all_close(adv, jnp.array([[a0, a1, a2]]), atol=1e-6)
  chex.assert_trees_all_close(ret, jnp.array([[a0 + 0.5, a1 + 0.6, a2 + 0.7]]), atol=1e-6)
  # The same trajectory with two environment tokens (garbage reward/value) between model tokens 0 and 1.
  adv2, ret2 = rl.gae(jnp.array([[0.0, 7.0, -3.0, 0.0, 1.0]]), jnp.array([[0.5, 9.0, 9.0, 0.6, 0.7]]),
                      jnp.array([[1, 0, 0, 1, 1]]), gamma, lam)
  chex.assert_trees_all_close(adv2, jnp.array([[a0, 0.0, 0.0, a1, a2]]), atol=1e-6)
  chex.assert_trees_all_close(ret2, jnp.array([[a0 + 0.5, 0.0, 0.0, a1 + 0.6, a2 + 0.7]]), atol=1e-6)


def test_gae_bootstraps_from_last_value():
  adv, _ = rl.gae(jnp.array([[0.0]]), jnp.array([[0.2]]), jnp.ones((1, 1)), 0.5, 1.0, last_value=jnp.array([1.0]))
  chex.assert_trees_all_close(adv, jnp.array([[0.5 * 1.0 - 0.2]]), atol=1e-6)


def _random_rows(seed, batch=6, time=23):
  rng = np.random.default_rng(seed)
  rewards = rng.normal(size=(batch, time)).astype(np.float32)
  values = rng.normal(size=(batch, time)).astype(np.float32)
  mask = (rng.random((batch, time)) < 0.6).astype(np.int32)
  mask[0] = 1
  mask[1, :] = 0
  mask[1, 5] = 1
  return rewards, values, mask


@pytest.mark.parametrize("seed", [0, 1])
def test_gae_and_returns_match_rlax_on_compressed_rows(seed):
  rlax = pytest.importorskip("rlax")
  gamma, lam = 0.97, 0.9
  rewards, values, mask = _random_rows(seed)
  adv, ret = rl.gae(rewards, values, mask, gamma, lam)
  returns = rl.discounted_returns(rewards, mask, gamma)
  for b in range(rewards.shape[0]):
    keep = mask[b].astype(bool)
    n = int(keep.sum())
    if n == 0:
      continue
    r, v = jnp.asarray(rewards[b, keep]), jnp.asarray(values[b, keep])
    # rlax takes values v_0..v_n with v_n the bootstrap; the episode ended, so it is 0.
    ref_adv = rlax.truncated_generalized_advantage_estimation(r, jnp.full((n,), gamma), lam,
                                                              jnp.concatenate([v, jnp.zeros((1,))]))
    ref_ret = rlax.discounted_returns(r, jnp.full((n,), gamma), jnp.zeros((n,)))
    chex.assert_trees_all_close(adv[b, keep], ref_adv, atol=1e-5)
    chex.assert_trees_all_close(ret[b, keep], ref_adv + v, atol=1e-5)
    chex.assert_trees_all_close(returns[b, keep], ref_ret, atol=1e-5)
    assert np.all(np.asarray(adv[b, ~keep]) == 0) and np.all(np.asarray(returns[b, ~keep]) == 0)


def test_gae_and_returns_against_a_numpy_loop():
  rewards, values, mask = _random_rows(3)
  gamma, lam = 0.8, 0.7
  expected_returns, expected_adv = np.zeros_like(rewards), np.zeros_like(rewards)
  for b in range(rewards.shape[0]):
    running, next_value, next_adv = 0.0, 0.0, 0.0
    for t in reversed(range(rewards.shape[1])):
      if mask[b, t]:  # environment tokens are not steps: the next step is the next model token
        running = rewards[b, t] + gamma * running
        expected_returns[b, t] = running
        delta = rewards[b, t] + gamma * next_value - values[b, t]
        next_adv = expected_adv[b, t] = delta + gamma * lam * next_adv
        next_value = values[b, t]
  chex.assert_trees_all_close(rl.discounted_returns(rewards, mask, gamma), expected_returns, atol=1e-5)
  chex.assert_trees_all_close(rl.gae(rewards, values, mask, gamma, lam)[0], expected_adv, atol=1e-5)


def test_turn_index_and_turn_level_gae_by_hand():
  mask = jnp.array([[1, 1, 0, 0, 1, 1, 0], [0, 1, 0, 1, 0, 1, 1]])
  chex.assert_trees_all_equal(rl.turn_index(mask),
                              jnp.array([[0, 0, -1, -1, 1, 1, -1], [-1, 0, -1, 1, -1, 2, 2]]))
  rewards = jnp.array([[0, 0, 5, 5, 0, 1.0, 5], [0, 0, 0, 0, 0, 0, 2.0]])
  values = jnp.array([[0.2, 9, 9, 9, 0.5, 9, 9], [9, 0.1, 9, 0.3, 9, 0.6, 9]])
  adv, ret = rl.turn_level_gae(rewards, values, mask, 1.0, 0.95, max_turns=4)
  # Row 0: turns (r=0, V=0.2), (r=1, V=0.5): A1 = 1 - 0.5 = 0.5; A0 = 0.5 - 0.2 + 0.95 * 0.5 = 0.775.
  chex.assert_trees_all_close(adv[0], jnp.array([0.775, 0.775, 0, 0, 0.5, 0.5, 0]), atol=1e-6)
  chex.assert_trees_all_close(ret[0], jnp.array([0.975, 0.975, 0, 0, 1.0, 1.0, 0]), atol=1e-6)
  # Row 1: turns V = 0.1, 0.3, 0.6, reward 2 in the last turn: A2 = 1.4, A1 = 0.3 + 0.95 * 1.4, A0 = 0.2 + 0.95 A1.
  a2 = 1.4
  a1 = 0.6 - 0.3 + 0.95 * a2
  a0 = 0.3 - 0.1 + 0.95 * a1
  chex.assert_trees_all_close(adv[1], jnp.array([0, a0, 0, a1, 0, a2, a2]), atol=1e-5)
  with pytest.raises(ValueError, match="3 model turns, more than max_turns=2"):
    rl.turn_level_gae(rewards, values, mask, 1.0, 0.95, max_turns=2)  # would drop row 1's outcome reward


def test_outcome_rewards_sit_on_the_last_model_token():
  mask = jnp.array([[1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
  chex.assert_trees_all_equal(
      rl.outcome_token_rewards(jnp.array([2.0, 3.0, -1.0]), mask),
      jnp.array([[0, 0, 0, 2.0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, -1.0]]))
  chex.assert_trees_all_equal(rl.sequence_to_tokens(jnp.array([2.0, 3.0, -1.0]), mask)[0],
                              jnp.array([2.0, 2.0, 0, 2.0, 0, 0]))


def test_grpo_advantages_by_hand():
  scores = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
  adv = rl.grpo_advantages(scores, group_size=4)
  std = np.sqrt(4 * 0.25 / 3)  # Bessel-corrected std of [1, 0, 0, 1]
  half = 0.5 / (std + 1e-6)
  chex.assert_trees_all_close(adv, jnp.array([half, -half, -half, half, 0, 0, 0, 0]), atol=1e-6)
  population = rl.grpo_advantages(scores, group_size=4, unbiased_std=False)
  chex.assert_trees_all_close(population[:4], jnp.array([1, -1, -1, 1]) * 0.5 / (0.5 + 1e-6), atol=1e-6)
  chex.assert_trees_all_close(rl.grpo_advantages(scores, 4, scale_by_std=False)[:4], jnp.array([.5, -.5, -.5, .5]))
  with pytest.raises(ValueError, match="group_size"):
    rl.grpo_advantages(scores, group_size=3)


def test_group_advantages_count_only_valid_rollouts():
  scores = jnp.array([1.0, 0.0, 1.0, 0.0, 2.0, 5.0, 0.0, 0.0])
  valid = jnp.array([1, 1, 1, 0, 1, 0, 0, 0], bool)  # group 0: [1, 0, 1] valid; group 1: one valid rollout
  adv = rl.grpo_advantages(scores, group_size=4, valid=valid)
  mean, std = 2 / 3, np.std([1.0, 0.0, 1.0], ddof=1)
  expected = [(1 - mean) / (std + 1e-6), -mean / (std + 1e-6), (1 - mean) / (std + 1e-6), 0, 0, 0, 0, 0]
  chex.assert_trees_all_close(adv, jnp.array(expected), atol=1e-6)
  rloo = rl.rloo_advantages(scores, group_size=4, valid=valid)
  chex.assert_trees_all_close(rloo, jnp.array([1 - 0.5, 0 - 1.0, 1 - 0.5, 0, 0, 0, 0, 0]), atol=1e-6)
  # the scores of rollouts that do not count move nothing
  other = scores.at[jnp.array([3, 5, 6, 7])].set(jnp.array([7.0, -3.0, 4.0, 9.0]))
  chex.assert_trees_all_close(rl.grpo_advantages(other, 4, valid=valid), adv)
  chex.assert_trees_all_close(rl.rloo_advantages(other, 4, valid=valid), rloo)
  with pytest.raises(ValueError, match="group_size must be >= 2"):
    rl.rloo_advantages(scores, group_size=0)


def test_rloo_advantages_by_hand():
  adv = rl.rloo_advantages(jnp.array([1.0, 0.0, 0.0, 1.0, 3.0, 1.0]), group_size=2)
  # Rows (1, 0): 1 - 0, 0 - 1; (0, 1): -1, 1; (3, 1): 2, -2.
  chex.assert_trees_all_close(adv, jnp.array([1.0, -1.0, -1.0, 1.0, 2.0, -2.0]))
  adv4 = rl.rloo_advantages(jnp.array([1.0, 0.0, 0.0, 1.0]), group_size=4)
  chex.assert_trees_all_close(adv4, jnp.array([2 / 3, -2 / 3, -2 / 3, 2 / 3]), atol=1e-6)


def test_reinforce_pp_whitens_kl_penalised_returns_over_the_batch():
  mask = jnp.array([[1, 1, 0], [1, 1, 1]])
  rewards = rl.outcome_token_rewards(jnp.array([1.0, 0.0]), mask)
  kl = jnp.full((2, 3), 0.1).at[0, 2].set(jnp.inf)  # garbage at the environment position is ignored
  adv, returns = rl.reinforce_pp_advantages(rewards, mask, 1.0, kl=kl, kl_coef=0.5)
  # Token rewards: row 0 [-0.05, 0.95], row 1 [-0.05] * 3; returns-to-go below.
  expected_returns = np.array([[0.9, 0.95, 0], [-0.15, -0.1, -0.05]])
  chex.assert_trees_all_close(returns, expected_returns, atol=1e-6)
  live = np.array([0.9, 0.95, -0.15, -0.1, -0.05])
  whitened = (live - live.mean()) / np.sqrt(live.var(ddof=1) + 1e-8)
  chex.assert_trees_all_close(adv, np.array([[whitened[0], whitened[1], 0], whitened[2:]]), atol=1e-5)


def test_whiten_by_hand():
  x = jnp.array([[1.0, 2.0, 100.0], [3.0, 4.0, jnp.nan]])
  mask = jnp.array([[1, 1, 0], [1, 1, 0]])
  std = np.std([1, 2, 3, 4], ddof=1)
  out = rl.whiten(x, mask)
  chex.assert_trees_all_close(out, jnp.array([[-1.5, -0.5, 0], [0.5, 1.5, 0]]) / std, atol=1e-6)
  chex.assert_trees_all_close(rl.whiten(x, mask, shift_mean=False)[0, :2],
                              jnp.array([-1.5 / std + 2.5, -0.5 / std + 2.5]), atol=1e-6)
