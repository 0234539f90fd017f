"""agents.train: a tiny from-scratch policy learns a trivial environment with each algorithm; resume is exact;
the actor loss has no gradient through environment tokens; the critic and config checks."""

import glob
import json
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from agents import algorithms
from agents import envs as envs_lib
from agents import train as train_lib
from configs.agents.rl_common import rl_config
from core import config as config_lib
from core import files
from core.llm import config as llm_config
from core.llm import sft
from core.llm.model import Llama
from core.llm.tokenizer import Tokenizer
from core.llm.value import ValueModel
from core.train.metrics import read_metrics
from flax import nnx


def tiny_config(algo: str, steps: int = 30) -> ml_collections.ConfigDict:
  config = rl_config("gridworld", algo, "quick")
  config.env = "trivial"
  config.env_config = envs_lib.env_config("trivial")
  config.policy.update(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                       max_seq_len=64, vocab_tasks=1, warm_start_steps=0)
  config.rollout.update(max_new_tokens=2, max_context_tokens=64, group_size=8, env_workers=4)
  config.schedule.update(turn_limits=(1,), steps_per_stage=1)
  config.data.update(train_tasks=100, tasks_per_step=4, eval_tasks=8, eval_every=0)
  config.optimizer.learning_rate = 3e-2
  config.critic_optimizer.learning_rate = 3e-2
  config.train.update(num_steps=steps, checkpoint_every=steps)
  return config


@pytest.mark.parametrize("algo", ["grpo", "ppo", "ppo_turn_gae", "rloo", "reinforce_pp"])
def test_tiny_policy_improves_on_a_trivial_environment(tmp_path, algo):
  """A 1-layer random-init policy with a 12-word vocabulary starts near chance and learns to say "left"."""
  config = tiny_config(algo.removesuffix("_turn_gae"), steps=25)
  if algo.endswith("_turn_gae"):
    config.algorithm.gae_level = "turn"
  train_lib.train(config, str(tmp_path))
  success = [m["success_rate"] for m in read_metrics(str(tmp_path), "train")]
  assert len(success) == 25
  first, last = np.mean(success[:3]), np.mean(success[-3:])
  assert first < 0.5, success
  assert last > first + 0.3, success
  # One minibatch and one epoch: the update's only actor step sees the policy that sampled, so its PPO ratio is 1
  # to float error on every token and nothing is clipped (old log-probs recomputed by a full forward pass).
  assert config.algorithm.minibatches == 1 and config.algorithm.update_epochs == 1
  rows = read_metrics(str(tmp_path), "train")
  np.testing.assert_allclose([m["ratio_mean"] for m in rows], 1.0, atol=1e-5)
  assert all(m["clip_frac"] == 0 for m in rows)


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_resume_continues_exactly(tmp_path, mark_metrics, algo):
  """4 steps straight vs 2 steps, stop, then 2 more from the checkpoint: same metrics, same trajectories (and no
  rows left over from an earlier attempt). PPO with 2 minibatches: the critic and the minibatch order resume too."""
  def configured(steps):
    config = tiny_config(algo, steps=steps)
    config.train.checkpoint_every = 2
    if algo == "ppo":
      config.algorithm.minibatches = 2
    return config
  config = configured(4)
  train_lib.train(config, str(tmp_path / "straight"))
  interrupted = configured(2)
  # Leftovers of an attempt that died before its first checkpoint: the fresh start drops them.
  (tmp_path / "resumed").mkdir()
  for name in ("metrics.jsonl", "trajectories.jsonl"):
    (tmp_path / "resumed" / name).write_text(json.dumps({"step": 1, "split": "train", "loss": 9.0}) + "\n")
  train_lib.train(interrupted, str(tmp_path / "resumed"))
  mark_metrics(tmp_path / "resumed", step=1)  # only a real resume keeps the marks of steps 1-2
  train_lib.train(config, str(tmp_path / "resumed"))
  straight = read_metrics(str(tmp_path / "straight"), "train")
  resumed = read_metrics(str(tmp_path / "resumed"), "train")
  assert [m["step"] for m in resumed] == [1, 2, 3, 4]
  assert [m.get("mark") for m in resumed] == [True, False, None, None]  # steps 1-2 kept, 3-4 trained on resume
  timing = {"mark", "steps_per_sec"} | {k for k in straight[0] if k.endswith(("_s", "_seconds", "_per_sec",
                                                                             "_per_min", "_share"))}
  for a, b in zip(straight, resumed):
    assert set(a) - timing == set(b) - timing
    for key in set(a) - timing:
      assert a[key] == b[key], (key, a, b)
  lines = [json.loads(l) for l in open(tmp_path / "resumed" / "trajectories.jsonl")]
  assert [l["step"] for l in lines] == [s for s in (1, 2, 3, 4) for _ in range(32)]
  assert lines == [json.loads(l) for l in open(tmp_path / "straight" / "trajectories.jsonl")]  # what the agent did


def test_actor_loss_has_no_gradient_through_environment_tokens():
  """d loss / d logits[t-1] is zero wherever token t is not the model's (prompt, observation, padding)."""
  config = rl_config("gridworld", "grpo", "quick")
  key = jax.random.key(0)
  b, t, v = 3, 10, 7
  logits = jax.random.normal(key, (b, t, v))
  tokens = jax.random.randint(jax.random.key(1), (b, t), 0, v)
  loss_mask = jnp.array([[0, 0, 1, 1, 0, 0, 1, 0, 0, 0]] * b)
  batch = {"tokens": tokens, "loss_mask": loss_mask, "old_logprobs": jnp.full((b, t), -2.0),
           "ref_logprobs": jnp.full((b, t), -1.5), "advantages": jnp.where(loss_mask > 0, 1.0, 123.0)}
  grad = jax.grad(lambda lg: algorithms.actor_loss(config.algorithm, lg, batch)[0])(logits)
  predicts_model_token = np.concatenate([np.asarray(loss_mask[:, 1:]), np.zeros((b, 1), int)], axis=1) > 0
  assert np.all(np.asarray(grad)[~predicts_model_token] == 0.0)
  assert np.all(np.abs(np.asarray(grad)[predicts_model_token]).sum(-1) > 0)


def test_actor_loss_by_hand_on_policy():
  """At ratio 1 the clipped surrogate is -mean(A); entropy and k3 KL terms enter with their coefficients."""
  algo = rl_config("gridworld", "grpo", "quick").algorithm
  logits = jnp.zeros((1, 3, 4))  # uniform over 4 tokens: log p = -log 4, entropy log 4
  tokens = jnp.array([[0, 1, 2]])
  lp = -jnp.log(4.0)
  batch = {"tokens": tokens, "loss_mask": jnp.array([[0, 1, 1]]), "old_logprobs": jnp.array([[0.0, lp, lp]]),
           "ref_logprobs": jnp.array([[0.0, lp + 0.1, lp - 0.2]]), "advantages": jnp.array([[0.0, 2.0, -1.0]])}
  loss, metrics = algorithms.actor_loss(algo, logits, batch)
  k3 = lambda d: np.expm1(d) - d  # noqa: E731  (ref - logp = d)
  expected_kl = (k3(0.1) + k3(-0.2)) / 2
  chex.assert_trees_all_close(metrics["pg_loss"], -(2.0 - 1.0) / 2, atol=1e-6)
  chex.assert_trees_all_close(metrics["entropy"], np.log(4.0), atol=1e-6)
  chex.assert_trees_all_close(metrics["kl_ref"], expected_kl, atol=1e-6)
  chex.assert_trees_all_close(loss, -0.5 - 0.001 * np.log(4.0) + 0.001 * expected_kl, atol=1e-6)


def test_actor_loss_clips_the_k3_kl_as_verl_does():
  """A token the policy finds far less likely than the reference gives k3 = e^d - 1 - d (d = 94.9 here: inf in
  float32); `kl_clip` bounds it at 10, and 0 turns the clip off."""
  algo = rl_config("gridworld", "grpo", "quick").algorithm
  logits = jnp.array([[[0.0, -95.0], [0.0, 0.0]]])  # logits[0] predicts token 1: log p = -95
  batch = {"tokens": jnp.array([[0, 1]]), "loss_mask": jnp.array([[0, 1]]), "old_logprobs": jnp.zeros((1, 2)),
           "ref_logprobs": jnp.array([[0.0, -0.1]]), "advantages": jnp.zeros((1, 2))}
  loss, metrics = algorithms.actor_loss(algo, logits, batch)
  assert algo.kl_clip == 10.0
  chex.assert_trees_all_close(metrics["kl_ref"], 10.0)
  assert np.isfinite(float(loss))
  # The gradient too: exp(94.9) is inf in float32, and the clip's zero gradient times inf would be NaN.
  grads = jax.grad(lambda l: algorithms.actor_loss(algo, l, batch)[0])(logits)
  chex.assert_tree_all_finite(grads)
  algo.kl_clip = 0.0
  _, metrics = algorithms.actor_loss(algo, logits, batch)
  # Unclipped, log r is still clamped to 20 before exp (verl's low_var_kl): k3 = e^20 - 1 - 20.
  chex.assert_trees_all_close(metrics["kl_ref"], np.float32(np.expm1(20.0) - 20.0), rtol=1e-6)


def test_kl_mode_auto_follows_the_algorithm_name_after_an_override():
  """REINFORCE++ chosen on the command line over a GRPO config still puts its KL in the reward."""
  config = rl_config("gridworld", "grpo", "quick")
  assert config.algorithm.kl_mode == "auto" and algorithms.kl_mode(config.algorithm) == "loss"
  config.algorithm.name = "reinforce_pp"
  algorithms.validate_algorithm_config(config)
  assert algorithms.kl_mode(config.algorithm) == "reward"
  config.algorithm.kl_mode = "loss"  # an explicit choice stands
  assert algorithms.kl_mode(config.algorithm) == "loss"
  config.algorithm.name, config.algorithm.kl_mode = "grpo", "reward"
  with pytest.raises(ValueError, match="kl_mode"):
    algorithms.validate_algorithm_config(config)
  # k1 as a loss has expected gradient 0: refused; in the reward (REINFORCE++) or with no KL it is fine
  config.algorithm.kl_mode, config.algorithm.kl_estimator = "loss", "k1"
  with pytest.raises(ValueError, match="kl_estimator = 'k1'.*expected gradient is 0.*kl_estimator=k3"):
    algorithms.validate_algorithm_config(config)
  config.algorithm.kl_coef = 0.0
  algorithms.validate_algorithm_config(config)
  config.algorithm.name, config.algorithm.kl_mode, config.algorithm.kl_coef = "reinforce_pp", "auto", 0.001
  algorithms.validate_algorithm_config(config)


def test_reinforce_pp_kl_in_reward_by_hand():
  """With unequal sampler and reference log-probs the k1 penalty enters each token's reward with its sign."""
  algo = rl_config("gridworld", "reinforce_pp", "quick").algorithm
  algo.kl_coef = 0.5
  mask = jnp.array([[0, 1, 1], [0, 1, 0]])
  logprobs = jnp.array([[0.0, -1.0, -2.0], [0.0, -0.5, 0.0]])
  ref_logprobs = jnp.array([[0.0, -1.5, -1.0], [0.0, -0.5, 0.0]])
  batch = {"loss_mask": mask, "scores": jnp.array([1.0, 0.0]), "old_logprobs": logprobs, "ref_logprobs": ref_logprobs,
           "logprobs": jnp.full_like(logprobs, 7.0)}  # the sampler's numbers: not the ones the penalty uses
  adv, _ = algorithms.advantages(algo, batch, group_size=2)
  # k1 = logp - ref: row 0 [0.5, -1.0] -> rewards [-0.25, 1 + 0.5]; returns-to-go [1.25, 1.5]; row 1 [0].
  returns = np.array([1.25, 1.5, 0.0])
  expected = (returns - returns.mean()) / (returns.std(ddof=1) + 1e-8)
  chex.assert_trees_all_close(adv, jnp.array([[0, expected[0], expected[1]], [0, expected[2], 0]]), atol=1e-5)


def test_group_baselines_leave_out_rollouts_without_model_tokens():
  """A rollout whose environment failed (empty loss mask, score 0) gives its siblings no signal."""
  algo = lambda name: rl_config("gridworld", name, "quick").algorithm  # noqa: E731
  mask = jnp.array([[1, 1], [1, 0], [1, 1], [0, 0]])
  batch = {"loss_mask": mask, "scores": jnp.array([1.0, 1.0, 1.0, 0.0]),
           "old_logprobs": jnp.zeros((4, 2)), "ref_logprobs": jnp.zeros((4, 2))}
  for name in ("grpo", "rloo"):
    adv, _ = algorithms.advantages(algo(name), batch, group_size=4)
    chex.assert_trees_all_close(adv, jnp.zeros((4, 2)))  # the three valid rollouts all succeeded


def test_seq_mean_token_sum_norm_divides_by_a_constant_horizon():
  """Dr. GRPO's aggregation: the same per-token loss gives the same value whatever the batch's padded width."""
  algo = rl_config("gridworld", "grpo", "quick").algorithm
  algo.loss_aggregation = "seq-mean-token-sum-norm"
  horizon = algorithms.loss_horizon(algo, 2048)
  assert horizon == 2048 and algorithms.loss_horizon(ml_collections.ConfigDict({"loss_horizon": 512}), 2048) == 512
  values = []
  for width in (8, 16):
    logits = jnp.zeros((1, width, 4))
    mask = jnp.zeros((1, width), int).at[0, 1:3].set(1)
    batch = {"tokens": jnp.zeros((1, width), int), "loss_mask": mask, "old_logprobs": jnp.full((1, width), -jnp.log(4.0)),
             "ref_logprobs": jnp.full((1, width), -jnp.log(4.0)), "advantages": jnp.where(mask > 0, 1.0, 0.0)}
    values.append(float(algorithms.actor_loss(algo, logits, batch, horizon)[1]["pg_loss"]))
  chex.assert_trees_all_close(values[0], values[1])
  chex.assert_trees_all_close(values[0], -2.0 / 2048, atol=1e-9)


def test_advantages_per_algorithm_by_hand():
  algo = lambda name: rl_config("gridworld", name, "quick").algorithm  # noqa: E731
  mask = jnp.array([[0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 1], [0, 0, 1, 0]])
  batch = {"loss_mask": mask, "scores": jnp.array([1.0, 0.0, 1.0, 1.0]),
           "old_logprobs": jnp.zeros((4, 4)), "ref_logprobs": jnp.zeros((4, 4))}
  grpo, _ = algorithms.advantages(algo("grpo"), batch, group_size=2)
  std = np.std([1.0, 0.0], ddof=1)
  chex.assert_trees_all_close(grpo[0], jnp.array([0, 0.5 / (std + 1e-6), 0.5 / (std + 1e-6), 0]), atol=1e-5)
  chex.assert_trees_all_close(grpo[2:], jnp.zeros((2, 4)), atol=1e-6)  # equal scores: no signal
  rloo, _ = algorithms.advantages(algo("rloo"), batch, group_size=2)
  chex.assert_trees_all_close(rloo[:2], jnp.array([[0, 1.0, 1.0, 0], [0, -1.0, 0, 0]]))
  rpp, _ = algorithms.advantages(algo("reinforce_pp"), batch, group_size=2)
  returns = np.array([[0, 1, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1], [0, 0, 1, 0]], np.float32)
  m = np.asarray(mask) > 0
  expected = np.where(m, (returns - returns[m].mean()) / (returns[m].std(ddof=1) + 1e-8), 0)
  chex.assert_trees_all_close(rpp, jnp.asarray(expected), atol=1e-5)
  values = jnp.where(mask > 0, 0.25, 0.0)
  ppo_algo = algo("ppo")
  ppo_algo.whiten_gae = False
  adv, returns_ppo = algorithms.advantages(ppo_algo, batch, group_size=2, values=values)
  # gamma = lambda = 1: advantage = outcome - value at every model token; returns = outcome.
  chex.assert_trees_all_close(adv, jnp.where(mask > 0, batch["scores"][:, None] - 0.25, 0.0), atol=1e-6)
  chex.assert_trees_all_close(returns_ppo, jnp.where(mask > 0, batch["scores"][:, None], 0.0), atol=1e-6)


def test_ppo_token_gae_steps_over_model_tokens_only():
  """gamma 0.9, lambda 0.8, a different value at every token: GAE's steps are the model tokens, and the environment
  tokens between two turns are no step (checked against a loop over each row's model tokens)."""
  algo = rl_config("gridworld", "ppo", "quick").algorithm
  algo.gamma, algo.lam, algo.whiten_gae = 0.9, 0.8, False
  mask = np.array([[0, 1, 1, 0, 0, 1, 1, 0], [0, 0, 1, 0, 1, 1, 0, 0]])
  values = np.array([[9, .1, .3, 9, 9, .5, .2, 9], [9, 9, .4, 9, .7, .6, 9, 9]], np.float32)  # 9: not a step
  scores = np.array([1.0, 0.5], np.float32)
  zeros = jnp.zeros(mask.shape)
  batch = {"loss_mask": jnp.asarray(mask), "scores": jnp.asarray(scores), "old_logprobs": zeros, "ref_logprobs": zeros}
  adv, returns = algorithms.advantages(algo, batch, group_size=1, values=jnp.asarray(values))
  expected_adv, expected_returns = np.zeros(mask.shape), np.zeros(mask.shape)
  for row in range(2):
    steps = np.flatnonzero(mask[row])
    following = 0.0
    for j in reversed(range(len(steps))):
      value = values[row, steps[j]]
      next_value = values[row, steps[j + 1]] if j + 1 < len(steps) else 0.0
      reward = scores[row] if j == len(steps) - 1 else 0.0
      following = reward + 0.9 * next_value - value + 0.9 * 0.8 * following
      expected_adv[row, steps[j]], expected_returns[row, steps[j]] = following, following + value
  chex.assert_trees_all_close(adv, jnp.asarray(expected_adv, jnp.float32), atol=1e-6)
  chex.assert_trees_all_close(returns * mask, jnp.asarray(expected_returns, jnp.float32), atol=1e-6)


def test_ppo_turn_level_gae_by_hand():
  """gae_level = turn: each turn is one step whose value is the critic's at its first token."""
  algo = rl_config("gridworld", "ppo", "quick").algorithm
  algo.gae_level, algo.whiten_gae = "turn", False
  mask = jnp.array([[1, 1, 0, 1, 1]])
  values = jnp.array([[0.1, 9.0, 9.0, 0.4, 9.0]])  # 9 = a token that is not the first of its turn
  batch = {"loss_mask": mask, "scores": jnp.array([1.0]), "old_logprobs": jnp.zeros((1, 5)),
           "ref_logprobs": jnp.zeros((1, 5))}
  adv, returns = algorithms.advantages(algo, batch, group_size=1, values=values, max_turns=2)
  # gamma = lambda = 1: turn 1 A = 1 - 0.4; turn 0 A = 0.4 - 0.1 + 0.6 = 1 - 0.1; both returns 1.
  chex.assert_trees_all_close(adv, jnp.array([[0.9, 0.9, 0.0, 0.6, 0.6]]), atol=1e-6)
  chex.assert_trees_all_close(returns, jnp.array([[1.0, 1.0, 0.0, 1.0, 1.0]]), atol=1e-6)
  with pytest.raises(ValueError, match="max_turns"):
    algorithms.advantages(algo, batch, group_size=1, values=values)


def test_value_model_reads_the_context_before_each_token():
  model = Llama(llm_config.tiny(num_layers=1), nnx.Rngs(0))
  critic = ValueModel(model, nnx.Rngs(1))
  tokens = jnp.array([[5, 6, 7, 8]])
  values = critic(tokens, jnp.ones_like(tokens))
  chex.assert_trees_all_close(values, jnp.zeros((1, 4)))  # zero-initialised head
  critic.value_head.bias[...] = jnp.array([0.0])
  critic.value_head.kernel[...] = jnp.ones_like(critic.value_head.kernel[...])
  changed = critic(tokens.at[0, 3].set(9), jnp.ones_like(tokens))
  base = critic(tokens, jnp.ones_like(tokens))
  assert base[0, 0] == 0.0
  chex.assert_trees_all_close(changed, base)  # the last token never enters any value (values look one back)
  assert not np.allclose(critic(tokens.at[0, 1].set(9), jnp.ones_like(tokens))[0, 2:], base[0, 2:])


def test_word_level_tokenizer_round_trip_and_chat():
  tok = Tokenizer.word_level(["go to the red ball .", "turn left"])
  ids = tok.encode_chat([{"role": "user", "content": "turn left"}])
  assert tok.decode(ids, skip_special_tokens=False) == "<|im_start|> user turn left <|im_end|> <|im_start|> assistant"
  assert tok.decode(tok.encode("go to red ball<|im_end|>")) == "go to red ball"
  assert tok.decode(tok.encode("go to blue ball")) == "go to ball"  # unknown words become [UNK] (skipped)
  assert set(tok.stop_ids) == {tok.hf.token_to_id("<|im_end|>"), tok.hf.token_to_id("<|endoftext|>")}


@pytest.mark.parametrize("override, message", [
    ("algorithm.name=a2c", "valid choices"),
    ("rollout.group_size=1", "group baseline"),
    ("algorithm.minibatches=3", "must divide"),
    ("data.eval_task_offset=5", "not training tasks"),
    ("data.train_task_offset=495000", r"evaluation tasks \[eval_task_offset, \+ 64\) out of the training tasks "
                                      r"\[495000, 505000\).*Fix: pass --config.data.eval_task_offset=505000"),
    # the quick warm start plays oracle episodes of tasks [1,000,000, 1,002,048)
    ("data.eval_task_offset=1000010", r"warm start's oracle episodes \(task ids \[1000000, 1002048\)\) overlap "
                                      r"the evaluation tasks \(\[1000010, 1000074\)\).*Fix: move"),
    ("algorithm.clip_eps=1.5", r"algorithm.clip_eps = 1.5 is invalid: must be < 1"),
    ("schedule.turn_limits=(8, 4, 2)", "must not decrease"),
    ("schedule.steps_per_stage=0", "steps_per_stage"),
    ("rollout.temperature=0.7", "rollout.temperature = 0.7 .*own distribution. Fix: .*temperature=1.0"),
    ("rollout.top_k=40", "rollout.top_k = 40 .*own distribution. Fix: .*top_k=0"),
    ("rollout.top_p=0.9", "rollout.top_p = 0.9 .*own distribution. Fix: .*top_p=1.0"),
    ("data.buckets_per_doubling=0", "data.buckets_per_doubling"),
    # The audit's findings: each of these used to pass validation and then fail (or mislead) later.
    ("train.num_steps=5", r"schedule.steps_per_stage = 10 starts the last stage \(turn limit 8\) at step 20, but "
                          r"config.train.num_steps = 5.*Fix: pass --config.train.num_steps=21"),
    ("train.num_steps=20", r"at step 20, but config.train.num_steps = 20"),  # the last stage would get no step
    ("env=textcraft", r"env_config is not a textcraft section: it lacks max_depth, min_depth; .*max_rooms.* are "
                      r"no textcraft keys.*Fix: use that environment's own config"),
    ("env=gridwold", r"config.env = 'gridwold' is invalid: valid choices are 'gridworld', 'textcraft'"),
    ("policy.source=configs", r"policy.source = 'configs' is invalid: is ignored by a from-scratch policy.*"
                              r"Fix: set --config.policy.kind=pretrained .*or leave policy.source empty"),
    ("policy.hidden_size=130", r"policy.hidden_size = 130 is invalid: must be a multiple of 2 x policy.num_heads = 8"
                               r".*Fix: pass --config.policy.hidden_size=<a multiple of 8, e.g. 128>"),
])
def test_bad_configs_fail_before_anything_runs(override, message):
  config = rl_config("gridworld", "grpo", "quick")
  config_lib.apply_overrides(config, [override])
  with pytest.raises(config_lib.ConfigError, match=message):
    train_lib.validate_config(config)


def test_a_schedule_is_accepted_when_the_run_reaches_its_last_stage():
  from agents.schedule import schedule_config
  config = rl_config("gridworld", "grpo", "quick")  # stages start at steps 0, 10, 20
  config_lib.apply_overrides(config, ["train.num_steps=21"])
  train_lib.validate_config(config)
  config.schedule = schedule_config(turn_limits=(2, 4, 8), steps_per_stage=(3, 30))  # the last stage at step 33
  with pytest.raises(config_lib.ConfigError, match=r"\(3, 30\) starts the last stage .*at step 33, but "
                                                   r"config.train.num_steps = 21.*stages start at steps 0, 3, 33"):
    train_lib.validate_config(config)
  config.schedule = schedule_config(turn_limits=(2, 4, 8), steps_per_stage=(3, 17))
  train_lib.validate_config(config)
  config.schedule = schedule_config(turn_limits=(8,), steps_per_stage=100)
  train_lib.validate_config(config)  # one stage (a fixed horizon) is always reached


def test_the_rollout_context_must_fit_the_policy_window():
  """Audit finding: max_context_tokens=8192 with a 64-token policy window failed mid-rollout, in generation."""
  config = rl_config("gridworld", "grpo", "quick")
  config_lib.apply_overrides(config, ["rollout.max_context_tokens=8192", "policy.max_seq_len=64"])
  with pytest.raises(config_lib.ConfigError, match=r"rollout.max_context_tokens = 8192 is invalid: must be <= "
                                                   r"policy.max_seq_len = 64.*Fix: lower "
                                                   r"--config.rollout.max_context_tokens to 64, or raise "
                                                   r"--config.policy.max_seq_len to 8192"):
    train_lib.validate_config(config)
  config_lib.apply_overrides(config, ["rollout.max_context_tokens=64"])
  train_lib.validate_config(config)  # the whole window may be used


def test_a_pretrained_policy_window_is_checked_when_its_weights_load(tmp_path):
  """The window of a pretrained policy comes with its weights (config.json), so build_policy checks it there."""
  from agents import policy as policy_lib
  from core.llm import weights

  weights.save_pretrained(Llama(llm_config.tiny(max_seq_len=64), nnx.Rngs(0)), tmp_path)
  config = rl_config("gridworld", "grpo", "quick")
  config_lib.apply_overrides(config, ["policy.kind=pretrained", f"policy.source={tmp_path}", "policy.warm_start_steps=0",
                                      "rollout.max_context_tokens=65"])
  with pytest.raises(config_lib.ConfigError, match=r"rollout.max_context_tokens = 65 is longer than the pretrained "
                                                   r"policy's context window, 64 tokens .*Fix: "
                                                   r"--config.rollout.max_context_tokens=64 or less"):
    policy_lib.build_policy(config)
  config_lib.apply_overrides(config, ["rollout.max_context_tokens=64"])
  assert policy_lib.build_policy(config).model.config.max_seq_len == 64


@pytest.mark.parametrize("name", sorted(os.path.basename(p) for p in glob.glob(os.path.join(
    files.REPO_ROOT, "configs/agents/*_*.py")) if os.path.basename(p) not in ("__init__.py", "rl_common.py")))
def test_shipped_rl_configs_validate(name):
  """Every variant of every shipped RL config passes the checks of agents.train, agents.export and (for the
  schedules it compares) agents.horizon."""
  from agents import export, horizon
  variants = ("real", "quick") + (("real_step", "quick_step", "cpu_step") if name.startswith("toolenv") else ())
  for variant in variants:
    config = config_lib.load_config(f"configs/agents/{name}:{variant}")
    train_lib.validate_config(config)
    export.validate_config(config)
    if config.schedule.turn_limits[0] != config.schedule.turn_limits[-1]:  # cpu_step: one fixed horizon
      horizon.validate_config(config)


def test_a_warmup_longer_than_the_optimizer_steps_fails_before_the_warm_start():
  config = rl_config("gridworld", "ppo", "quick")  # 30 RL steps x 1 epoch x 2 minibatches = 60 optimizer steps
  config_lib.apply_overrides(config, ["algorithm.minibatches=2", "optimizer.schedule=warmup_cosine",
                                      "optimizer.warmup_steps=60"])
  with pytest.raises(config_lib.ConfigError, match=r"optimizer.warmup_steps .*below the run's 60 steps"):
    train_lib.validate_config(config)
  config_lib.apply_overrides(config, ["optimizer.warmup_steps=59"])
  train_lib.validate_config(config)


@pytest.mark.parametrize("env", ["vehicle", "toolenv", "sciworld"])
def test_rl_configs_of_other_environments_train_end_to_end(tmp_path, env):
  """One GRPO step of a tiny from-scratch policy on each environment's quick config: the wiring (vocabulary
  from oracle episodes, whole-reply actions for JSON/tool-call environments, rewards, update) works."""
  config = config_lib.load_config(f"configs/agents/{env}_grpo.py:quick", [
      "policy.warm_start_steps=0", "policy.vocab_tasks=8", "policy.hidden_size=32", "policy.intermediate_size=64",
      "policy.num_layers=1", "rollout.max_new_tokens=4", "rollout.group_size=2", "data.tasks_per_step=2",
      "data.eval_every=0", "train.num_steps=1", "train.checkpoint_every=1"])
  config.schedule.turn_limits = config.schedule.turn_limits[:1]  # one step reaches one stage only
  summary = train_lib.train(config, str(tmp_path))
  assert summary["steps"] == 1
  (row,) = read_metrics(str(tmp_path), "train")
  assert np.isfinite(row["loss"]) and row["turns_mean"] >= 1
  assert (env in ("vehicle", "toolenv")) == (config.rollout.action_format == "whole")


def test_the_in_process_pool_holds_every_rollout_of_a_step_and_of_the_evaluation():
  config = rl_config("gridworld", "grpo", "quick")
  assert train_lib.make_client(config).pool.config.max_envs == 4096
  config.data.tasks_per_step, config.rollout.group_size = 1024, 8  # 8192 environments live at once
  assert train_lib.make_client(config).pool.config.max_envs == 8192
  config.data.eval_tasks = 10_000
  assert train_lib.make_client(config).pool.config.max_envs == 10_000


def test_horizon_variants_differ_only_in_their_turn_limits():
  from agents import horizon
  from agents.schedule import schedule_config
  config = rl_config("gridworld", "grpo", "quick")
  variants = horizon.horizon_variants(config)
  assert {k: tuple(v.schedule.turn_limits) for k, v in variants.items()} == {
      "fixed_short": (2,), "fixed_long": (8,), "scaling_inter": (2, 4, 8)}
  for variant in variants.values():
    assert variant.data.eval_turn_limit == 8
    flat, base = variant.to_dict(), config.to_dict()
    flat["schedule"].pop("turn_limits"), base["schedule"].pop("turn_limits")
    flat["data"].pop("eval_turn_limit"), base["data"].pop("eval_turn_limit")
    assert flat == base
  # A user's own evaluation horizon is kept, the same for all three runs (not replaced by the long limit).
  config.data.eval_turn_limit = 6
  assert {v.data.eval_turn_limit for v in horizon.horizon_variants(config).values()} == {6}
  assert horizon.eval_turn_limit(config) == 6
  run = {"turn_limits": [2, 4, 8], "eval_success": [0.25, 0.5, 0.375]}
  assert horizon.best_and_final(run) == (0.5, 0.375)
  # Per-stage lengths are the schedule's; the one-stage fixed variants drop them (else the schedule rejects them).
  listed = rl_config("gridworld", "grpo", "quick")
  listed.schedule = schedule_config(turn_limits=(2, 4, 8), steps_per_stage=(10, 15))  # the last stage at 25 < 30
  for variant in horizon.horizon_variants(listed).values():
    train_lib.validate_config(variant)
  listed.data.eval_every = 0
  with pytest.raises(config_lib.ConfigError, match="data.eval_every"):
    horizon.validate_config(listed)
  # Audit finding: one stage made all three runs the same run; a run that never reaches the last stage made
  # ScalingInter the fixed short run.
  listed = rl_config("gridworld", "grpo", "quick")
  config_lib.apply_overrides(listed, ["schedule.turn_limits=(8,)"])
  with pytest.raises(config_lib.ConfigError, match=r"schedule.turn_limits = \(8,\) is invalid: must hold at least 2 "
                                                   r"stages.*Fix: pass e.g."):
    horizon.validate_config(listed)
  config_lib.apply_overrides(listed, ["schedule.turn_limits=(2, 4, 8)", "train.num_steps=5"])
  with pytest.raises(config_lib.ConfigError, match=r"steps_per_stage = 10 starts the last stage.*train.num_steps = 5"):
    horizon.validate_config(listed)


def test_export_writes_the_checkpointed_policy_of_any_run(tmp_path):
  """`agents.export` on a from-scratch gridworld-config run: the exported folder loads through `core.llm.weights`
  and computes the logits of the policy restored from the chosen checkpoint (latest, and step 0 = the start)."""
  from agents import export
  from core.llm import weights
  from core.train import checkpoint as checkpoint_lib
  config = tiny_config("grpo", steps=2)
  config.train.checkpoint_every = 1
  train_lib.train(config, str(tmp_path))
  tokens = jnp.arange(1, 9, dtype=jnp.int32)[None]
  run = lambda model: model(tokens, jnp.arange(8)[None], jnp.ones((1, 8), bool))[0]
  logits = {}
  for step in (-1, 0):
    config.export.step = step
    folder = export.export_policy(config, str(tmp_path))
    assert folder.endswith("export" if step else "export_step0")
    learner, _ = train_lib.build_learner(config, str(tmp_path / "unused"))
    if step:
      checkpointer = checkpoint_lib.Checkpointer(str(tmp_path / "checkpoints"), every=1, keep=1)
      tree, _ = checkpointer.restore(2, learner.checkpoint_tree())
      checkpointer.close()
      learner.load_checkpoint_tree(tree)
    expected = run(nnx.merge(learner.graphdef, learner.state.params, learner.state.model_state))
    logits[step] = run(weights.load_model(folder)[0])
    np.testing.assert_allclose(logits[step], expected, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(logits[-1] - logits[0]).max()) > 0  # two RL steps moved the policy
  config.export.step = 99  # audit finding: a raw orbax FileNotFoundError, naming no step that exists
  with pytest.raises(config_lib.ConfigError, match=r"export.step = 99 is invalid: .*holds checkpoints of steps 1, 2 "
                                                   r"only. Fix: .*-1 \(the latest, 2\)"):
    export.export_policy(config, str(tmp_path))


def test_export_of_a_workdir_without_checkpoints_fails_before_the_warm_start(tmp_path, monkeypatch):
  """Audit finding: an empty workdir ran the whole warm start (rebuilding the learner) before its check."""
  from agents import export

  def build_learner(*args):
    raise AssertionError("the learner was built before the checkpoints were checked")

  monkeypatch.setattr(train_lib, "build_learner", build_learner)
  config = rl_config("gridworld", "grpo", "quick")
  with pytest.raises(config_lib.ConfigError, match=r"holds no checkpoint.*Fix: train first"):
    export.export_policy(config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()  # nothing created in a workdir that holds no run


def test_a_reply_budget_that_cuts_a_warm_start_action_is_refused():
  from agents.policy import check_actions_fit_the_reply_budget

  action = "craft 1 wooden pickaxe using 3 oak planks , 2 stick"  # 11 words and marks, 12 with the end of turn
  tokenizer = Tokenizer.word_level([action])
  records = [[{"role": "user", "content": "Goal: a wooden pickaxe."}, {"role": "assistant", "content": action}]]
  check_actions_fit_the_reply_budget(records, tokenizer, 12)
  with pytest.raises(config_lib.ConfigError, match=r"1 of the 1 oracle actions.*--config.rollout.max_new_tokens=12"):
    check_actions_fit_the_reply_budget(records, tokenizer, 11)


def test_vehicle_rl_trains_past_the_tasks_of_its_evaluation_table():
  # `agents.vehicle.evaluate` scores task ids 0-999 (configs/agents/vehicle.py); a policy trained by RL there must
  # not have seen them
  for variant in ("real", "quick"):
    config = rl_config("vehicle", "grpo", variant)
    train_lib.validate_config(config)
    drawn = set().union(*(train_lib.training_tasks(config, step) for step in range(200)))
    assert 1000 <= min(drawn) and max(drawn) < 1000 + config.data.train_tasks
  assert min(train_lib.training_tasks(rl_config("gridworld", "grpo", "quick"), 0)) < 10_000  # others from 0


@pytest.mark.parametrize("system_prompt", ["", "You are a careful agent."])
def test_warm_start_episodes_open_as_the_rollout_prompts_do(system_prompt):
  # the warm start teaches the format the rollout then uses: its first tokens are the rollout's first prompt
  from agents import policy as policy_lib
  from agents import rollout as rollout_lib

  config = rl_config("gridworld", "grpo", "quick")
  config.policy.warm_start_tasks, config.rollout.system_prompt = 2, system_prompt
  tokenizer = policy_lib.build_policy(config).tokenizer
  for messages in policy_lib.warm_start_episodes(config):
    ids, mask = sft.tokenize_chat(tokenizer, messages)
    first = next(m["content"] for m in messages if m["role"] == "user")
    prompt = rollout_lib._Chat(tokenizer, system_prompt).prompt(first)  # up to the assistant header
    assert list(ids[:len(prompt)]) == prompt
    assert not mask[:len(prompt)].any() and mask[len(prompt)]  # trained from the first action token on


@pytest.mark.parametrize("env", ["gridworld", "textcraft", "search", "sciworld", "vehicle", "toolenv"])
def test_quick_reply_budgets_fit_the_oracle_actions(env):
  """The quick configs' `rollout.max_new_tokens` holds every oracle action (with its end-of-turn token) of the
  first 200 warm-start episodes."""
  from agents import policy as policy_lib

  config = config_lib.load_config(f"configs/agents/{env}_grpo.py:quick", [])
  policy = policy_lib.build_policy(config)
  world = envs_lib.make_env(config.env, config.env_config)
  records = [policy_lib.oracle_episode(world, config.policy.warm_start_task_offset + i) for i in range(200)]
  policy_lib.check_actions_fit_the_reply_budget(records, policy.tokenizer, config.rollout.max_new_tokens)


def test_clip_higher_and_dual_clip_reach_the_actor_loss_by_hand():
  """`algorithm.clip_eps_high` (DAPO) and `algorithm.dual_clip` (verl's clip_ratio_c) change the surrogate as
  written: ratio e^0.25 = 1.284 with A = +1 is cut at 1.2 by default and at 1.28 with clip-higher 0.28; ratio
  e^2 = 7.39 with A = -1 costs 7.39 unclipped and 3 under dual clip 3."""
  algo = rl_config("gridworld", "ppo", "quick").algorithm
  logits = jax.random.normal(jax.random.key(0), (1, 4, 6))
  tokens = jnp.array([[0, 2, 5, 1]])
  from core.llm.scoring import logprobs_from_logits
  logprobs = logprobs_from_logits(logits, tokens)
  mask = jnp.array([[0, 1, 1, 0]])

  def pg_loss(log_ratio, advantage, **settings):
    config = algo.copy_and_resolve_references()
    config.update(settings)
    batch = {"tokens": tokens, "loss_mask": mask, "old_logprobs": logprobs - log_ratio, "ref_logprobs": logprobs,
             "advantages": jnp.where(mask > 0, advantage, 0.0)}
    return float(algorithms.actor_loss(config, logits, batch)[1]["pg_loss"])
  assert pg_loss(0.25, 1.0) == pytest.approx(-1.2, rel=1e-5)
  assert pg_loss(0.25, 1.0, clip_eps_high=0.28) == pytest.approx(-1.28, rel=1e-5)
  assert pg_loss(2.0, -1.0) == pytest.approx(float(np.exp(2.0)), rel=1e-5)
  assert pg_loss(2.0, -1.0, dual_clip=3.0) == pytest.approx(3.0, rel=1e-5)
  config = rl_config("gridworld", "ppo", "quick")
  config.algorithm.dual_clip = 0.5
  with pytest.raises(ValueError, match="dual_clip = 0.5 is invalid"):
    algorithms.validate_algorithm_config(config)
