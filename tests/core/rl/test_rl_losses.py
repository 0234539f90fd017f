"""Losses, KL estimators, entropy and aggregation: hand computations, and zero gradient at environment tokens."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core import rl


def test_ppo_clip_by_hand():
  ratios = jnp.array([[1.5, 0.5, 0.5, 1.5, 4.0, 1.0]])
  adv = jnp.array([[1.0, 1.0, -1.0, -1.0, -1.0, 2.0]])
  old = jnp.full((1, 6), -1.0)
  logp = old + jnp.log(ratios)
  mask = jnp.ones((1, 6))
  loss, metrics = rl.ppo_clip_loss(logp, old, adv, mask, 0.2)
  # -min(rA, clip(r)A): (1.5,+1) -> -1.2; (0.5,+1) -> -0.5; (0.5,-1) -> 0.8; (1.5,-1) -> 1.5; (4,-1) -> 4; (1,2) -> -2.
  chex.assert_trees_all_close(loss, jnp.array([[-1.2, -0.5, 0.8, 1.5, 4.0, -2.0]]), atol=1e-5)
  chex.assert_trees_all_close(metrics["clip_frac"], 2 / 6, atol=1e-6)  # (1.5,+1) and (0.5,-1) are clipped
  dual, _ = rl.ppo_clip_loss(logp, old, adv, mask, 0.2, dual_clip=3.0)
  chex.assert_trees_all_close(dual[0, 4], 3.0, atol=1e-5)  # -A * c bounds the negative-advantage loss
  high, _ = rl.ppo_clip_loss(logp, old, adv, mask, 0.2, clip_eps_high=0.28)
  chex.assert_trees_all_close(high[0, 0], -1.28, atol=1e-5)


def test_extreme_log_ratios_give_finite_gradients():
  """Past log r ~ 88.7, exp overflows float32; the clamp to +-20 keeps the PPO and k3 gradients finite (0 there)
  and leaves ordinary ratios alone."""
  gaps = jnp.array([[89.0, 95.0, -95.0, 0.3]])
  mask = jnp.ones((1, 4))
  for adv in (1.0, -1.0):
    loss_fn = lambda lp: jnp.sum(rl.ppo_clip_loss(lp, jnp.zeros((1, 4)), jnp.full((1, 4), adv), mask, 0.2)[0])
    grads = jax.grad(loss_fn)(gaps)
    chex.assert_tree_all_finite(grads)
    if adv > 0:  # ratio e^0.3 > 1.2 with A > 0 is clipped: no gradient anywhere
      chex.assert_trees_all_close(grads, jnp.zeros((1, 4)))
    else:  # A < 0: the unclipped branch is kept; for 0.3 its gradient is -A r = e^0.3
      chex.assert_trees_all_close(grads[0, 3], jnp.exp(0.3), rtol=1e-5)
  k3_grads = jax.grad(lambda lp: jnp.sum(rl.kl_loss(lp, jnp.zeros((1, 4)), mask, "k3", 10.0)))(-gaps)
  chex.assert_tree_all_finite(k3_grads)
  # k3 = e^d - 1 - d with d = ref - logp: d/dlogp = 1 - e^d, for d = 0.3 where nothing is clipped.
  chex.assert_trees_all_close(k3_grads[0, 3], 1 - jnp.exp(0.3), rtol=1e-5)
  chex.assert_trees_all_close(k3_grads[0, :3], jnp.zeros(3))  # clamped: constant
  with pytest.raises(ValueError, match="dual_clip must be > 1"):
    rl.ppo_clip_loss(gaps, jnp.zeros((1, 4)), jnp.ones((1, 4)), mask, 0.2, dual_clip=0.5)


def test_approx_kl_metric_is_k3_of_the_ratio_and_unbiased_for_kl_old_to_new():
  # The tokens were drawn from pi_old = (0.5, 0.25, 0.25): listing token a twice makes the token mean an
  # expectation under pi_old, which must equal KL(pi_old || pi) exactly for the k3 estimate (r - 1) - log r,
  # r = pi / pi_old.
  p_old = np.array([0.5, 0.25, 0.25])
  p_new = np.array([0.2, 0.3, 0.5])
  tokens = [0, 0, 1, 2]
  old, new = jnp.log(p_old[tokens])[None], jnp.log(p_new[tokens])[None]
  _, metrics = rl.ppo_clip_loss(new, old, jnp.zeros((1, 4)), jnp.ones((1, 4)), 0.2)
  r = p_new / p_old
  by_hand = np.mean([(r[t] - 1) - math.log(r[t]) for t in tokens])
  chex.assert_trees_all_close(metrics["approx_kl"], by_hand, atol=1e-6)
  chex.assert_trees_all_close(metrics["approx_kl"], np.sum(p_old * np.log(p_old / p_new)), atol=1e-6)


def test_aggregation_modes_by_hand():
  loss = jnp.array([[1.0, 2.0, 9.0], [4.0, 9.0, 9.0], [9.0, 9.0, 9.0]])
  mask = jnp.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]])  # the third row has no model token: left out
  chex.assert_trees_all_close(rl.aggregate(loss, mask, "token-mean"), 7 / 3, atol=1e-6)
  chex.assert_trees_all_close(rl.aggregate(loss, mask, "seq-mean-token-sum"), 3.5, atol=1e-6)
  chex.assert_trees_all_close(rl.aggregate(loss, mask, "seq-mean-token-mean"), (1.5 + 4) / 2, atol=1e-6)
  chex.assert_trees_all_close(rl.aggregate(loss, mask, "seq-mean-token-sum-norm"), (3 / 3 + 4 / 3) / 2, atol=1e-6)
  chex.assert_trees_all_close(rl.aggregate(loss, mask, "seq-mean-token-sum-norm", horizon=10), 0.35, atol=1e-6)
  with pytest.raises(ValueError, match="token-mean"):
    rl.aggregate(loss, mask, "mean")


def test_kl_estimators_by_hand_and_unbiasedness():
  logp, ref = jnp.log(0.5), jnp.log(0.25)
  chex.assert_trees_all_close(rl.kl_k1(logp, ref), math.log(2), atol=1e-6)
  chex.assert_trees_all_close(rl.kl_k2(logp, ref), 0.5 * math.log(2)**2, atol=1e-6)
  chex.assert_trees_all_close(rl.kl_k3(logp, ref), (0.5 - 1) + math.log(2), atol=1e-6)
  chex.assert_trees_all_close(rl.kl_estimate(logp, ref, "k3", clip=0.1), 0.1, atol=1e-7)
  # Expectations under pi over the whole support: k1 and k3 equal KL(pi || pi_ref) exactly; k3 >= 0 pointwise.
  p = jnp.array([0.1, 0.2, 0.3, 0.4])
  q = jnp.array([0.4, 0.3, 0.2, 0.1])
  kl = jnp.sum(p * jnp.log(p / q))
  for name in ("k1", "k3"):
    chex.assert_trees_all_close(jnp.sum(p * rl.kl_estimate(jnp.log(p), jnp.log(q), name)), kl, atol=1e-6)
  assert bool(jnp.all(rl.kl_k3(jnp.log(p), jnp.log(q)) >= 0))
  with pytest.raises(ValueError, match="k1, k2, k3"):
    rl.kl_estimate(logp, ref, "k4")


def test_entropy_and_log_probs_by_hand():
  logits = jnp.array([[0.0, 0.0, 0.0, 0.0], [math.log(0.25), math.log(0.75), -jnp.inf, -jnp.inf],
                      [1000.0, 0.0, 0.0, 0.0]])
  expected = jnp.array([math.log(4), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), 0.0])
  chex.assert_trees_all_close(rl.entropy_from_logits(logits), expected, atol=1e-6)
  # A masked (-inf) logit contributes neither to the entropy nor a nan to its gradient.
  grad = jax.grad(lambda lg: rl.entropy_from_logits(lg).sum())(logits[:2])
  assert bool(jnp.all(jnp.isfinite(grad)))
  chex.assert_trees_all_close(grad[1, 2:], jnp.zeros(2))
  chex.assert_trees_all_close(grad[1, :2], jax.grad(lambda lg: rl.entropy_from_logits(lg))(logits[1, :2]), atol=1e-6)
  chex.assert_trees_all_close(rl.token_log_probs(logits, jnp.array([2, 1, 0])),
                              jnp.array([math.log(0.25), math.log(0.75), 0.0]), atol=1e-6)


def test_policy_gradient_and_value_loss_by_hand():
  chex.assert_trees_all_close(
      rl.policy_gradient_loss(jnp.array([[-1.0, -2.0]]), jnp.array([[0.5, 3.0]]), jnp.array([[1, 0]])),
      jnp.array([[0.5, 0.0]]))
  # V = 1.0, V_old = 0.5, R = 0.0, clip 0.2: max((1-0)^2, (0.7-0)^2) / 2 = 0.5; V = 0.6 within clip: 0.18.
  chex.assert_trees_all_close(
      rl.value_loss(jnp.array([[1.0, 0.6]]), jnp.array([[0.5, 0.5]]), jnp.zeros((1, 2)), jnp.ones((1, 2)), 0.2),
      jnp.array([[0.5, 0.18]]), atol=1e-6)


def test_gradient_is_zero_at_environment_tokens_even_with_garbage_there():
  batch, time, vocab = 2, 7, 11
  key = jax.random.key(0)
  logits = jax.random.normal(key, (batch, time, vocab))
  tokens = jax.random.randint(jax.random.key(1), (batch, time), 0, vocab)
  mask = jnp.array([[0, 1, 1, 0, 0, 1, 1], [1, 1, 0, 1, 0, 0, 1]])
  env = ~mask.astype(bool)
  old = jnp.where(env, jnp.inf, rl.token_log_probs(logits, tokens) - 0.1)  # inf at env tokens must not leak
  ref = jnp.where(env, jnp.nan, rl.token_log_probs(logits, tokens) + 0.05)
  rewards = rl.outcome_token_rewards(jnp.array([1.0, 0.0]), mask)
  adv = rl.whiten(rl.discounted_returns(rewards, mask, 1.0), mask)
  adv = jnp.where(env, jnp.nan, adv)

  def objective(logits):
    logp = rl.token_log_probs(logits, tokens)
    pg, _ = rl.ppo_clip_loss(logp, old, adv, mask, 0.2, dual_clip=3.0)
    kl = rl.kl_loss(logp, ref, mask, "k3")
    entropy = rl.entropy_from_logits(logits)
    total = 0.0
    for mode in rl.AGGREGATION_MODES:
      total += rl.aggregate(pg + 0.001 * kl - 0.001 * entropy, mask, mode)
    total += rl.aggregate(rl.policy_gradient_loss(logp, adv, mask), mask, "token-mean")
    return total

  value, grads = jax.value_and_grad(objective)(logits)
  assert bool(jnp.isfinite(value))
  chex.assert_tree_all_finite(grads)
  np.testing.assert_array_equal(np.asarray(grads)[np.asarray(env)], 0.0)
  assert float(jnp.abs(grads[~env]).sum()) > 0  # and the model tokens do get a gradient
