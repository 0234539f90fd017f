"""Multi-turn agent RL (AgentGym-RL, arXiv 2509.08755, sec. 3) with the ScalingInter-RL horizon schedule (sec. 4):

    python -m agents.train --config configs/agents/gridworld_grpo.py --workdir runs/agents/gridworld_grpo

Each training step:
  1. the turn limit of this step comes from the schedule (`schedule.turn_limits`, `schedule.steps_per_stage`);
  2. `data.tasks_per_step` training tasks are drawn (seeded by the step) and `rollout.group_size` trajectories
     of each are rolled out with the current policy (`agents.rollout`: one batched generation per turn);
  3. the reference policy (the frozen initial policy) scores the trajectories; PPO's critic gives values;
  4. advantages by the algorithm (`agents.algorithms`), then `algorithm.update_epochs` passes over
     `algorithm.minibatches` minibatches of clipped-surrogate updates (and critic updates for PPO), on the
     config's `mesh` (`core.sharding`): the policy, reference and critic states laid out as `core.train` lays
     them out, the rows of every minibatch (and of step 3's scoring passes) split over all devices;
  5. metrics (success, score, turns, losses, where the time went) to metrics.jsonl / TensorBoard; trajectories
     to trajectories.jsonl; a checkpoint every `train.checkpoint_every` steps (policy, critic and optimizer
     states through `core.train.checkpoint`; the task draw and the sampling key derive from the step, so a
     resumed run continues exactly); greedy evaluation on held-out tasks every `data.eval_every` steps.

With `data.step_level = True` step 2 is the environment's own sampler instead (`step_level_sampler`): an
environment class that offers `step_level_sampler(config)` turns the intermediate states of the policy's
trajectories into prompts and returns groups of single responses scored from those states (arXiv 2508.08791's
step-level RL; `agents/toolenv/step_rl.py`). Steps 3-5 are the same.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from agents import algorithms
from agents import policy as policy_lib
from agents import rollout as rollout_lib
from agents.envs import (ENVIRONMENTS, HttpEnvClient, LocalEnvClient, check_server_matches, http_client_config,
                         make_pool, pool_config, validate_env_config)
from agents.schedule import ScalingInterSchedule
from core import config as config_lib
from core import entrypoint
from core import sharding as sharding_lib
from core.config import section
from core.llm import sft, weights
from core.llm.model import positions_from_mask
from core.llm.scoring import jit_token_logprobs
from core.llm.value import ValueModel
from core.train import checkpoint as checkpoint_lib
from core.train import loop, metrics as metrics_lib, optim
from core.train.state import TrainState, create_train_state, make_train_step


def data_config(**overrides: Any) -> ml_collections.ConfigDict:
  """Which tasks train and which evaluate: training ids [train_task_offset, train_task_offset + train_tasks),
  evaluation ids [eval_task_offset, eval_task_offset + eval_tasks) (disjoint, so evaluation is on unseen tasks;
  VehicleWorld's RL config starts training past the 1,000 tasks of its evaluation table); whether
  the training samples are whole trajectories or the environment's step-level samples (`step_level`); and how
  finely the warm start's and the updates' batches are padded (`buckets_per_doubling`, see
  `core.llm.sft.padded_lengths`: 4 cut the RL time of a quick gridworld run by a third against powers of two;
  results before 2026-11-28 were measured with 1)."""
  return section("data", dict(train_tasks=10_000, train_task_offset=0, tasks_per_step=8, eval_tasks=64,
                              eval_task_offset=500_000, eval_every=10, eval_turn_limit=0, trajectories_every=1,
                              step_level=False, buckets_per_doubling=4), overrides)


def _overlap(start_a: int, count_a: int, start_b: int, count_b: int) -> bool:
  """Whether task ids [start_a, start_a + count_a) and [start_b, start_b + count_b) share one."""
  return start_a < start_b + count_b and start_b < start_a + count_a


def optimizer_updates(config: ml_collections.ConfigDict) -> int:
  """Optimizer steps of the whole run: every RL step makes update_epochs x minibatches of them."""
  return config.train.num_steps * config.algorithm.update_epochs * config.algorithm.minibatches


def validate_config(config: ml_collections.ConfigDict) -> None:
  validate_env_config(config, "use that environment's own config (--config configs/agents/{env}_<algorithm>.py"
                              "[:quick]) rather than overriding config.env alone; in Python, also set "
                              "config.env_config = agents.envs.env_config('{env}')")
  policy_lib.validate_policy_config(config)
  algorithms.validate_algorithm_config(config)
  updates = optimizer_updates(config)  # the warm-up check, here rather than after the warm start has run
  optim.validate_optimizer_config(config, num_steps=updates)
  optim.validate_optimizer_config(config, "critic_optimizer", num_steps=updates)
  loop.validate_train_config(config)
  for key in ("train_tasks", "tasks_per_step", "eval_tasks", "trajectories_every", "buckets_per_doubling"):
    config_lib.check_positive(config, f"data.{key}")
  for key in ("eval_every", "eval_turn_limit"):
    config_lib.check_positive(config, f"data.{key}", allow_zero=True)
  config_lib.check(config, "data.tasks_per_step", lambda n: n <= config.data.train_tasks,
                   "must be <= data.train_tasks")
  p, d = config.policy, config.data
  config_lib.check_positive(config, "data.train_task_offset", allow_zero=True)
  config_lib.check(config, "data.eval_task_offset",
                   lambda o: not _overlap(o, d.eval_tasks, d.train_task_offset, d.train_tasks),
                   f"must keep the evaluation tasks [eval_task_offset, + {d.eval_tasks}) out of the training tasks "
                   f"[{d.train_task_offset}, {d.train_task_offset + d.train_tasks}) so that evaluation tasks are not "
                   "training tasks", f"pass --config.data.eval_task_offset={d.train_task_offset + d.train_tasks} "
                   "(or more)")
  if p.warm_start_steps and _overlap(p.warm_start_task_offset, p.warm_start_tasks, d.eval_task_offset, d.eval_tasks):
    raise config_lib.ConfigError(
        f"the warm start's oracle episodes (task ids [{p.warm_start_task_offset}, "
        f"{p.warm_start_task_offset + p.warm_start_tasks})) overlap the evaluation tasks ([{d.eval_task_offset}, "
        f"{d.eval_task_offset + d.eval_tasks})), so the held-out success would count tasks the policy was shown "
        "solved. Fix: move --config.policy.warm_start_task_offset or --config.data.eval_task_offset so the two "
        "ranges are disjoint.")
  config_lib.check(config, "algorithm.minibatches",
                   lambda m: (config.data.tasks_per_step * config.rollout.group_size) % m == 0,
                   f"must divide the rollouts per step (data.tasks_per_step x rollout.group_size = "
                   f"{config.data.tasks_per_step * config.rollout.group_size})")
  _validate_mesh(config)
  for key in ("max_new_tokens", "max_context_tokens", "group_size", "env_workers"):
    config_lib.check_positive(config, f"rollout.{key}")
  # The update treats rollouts as samples of the policy itself: the PPO ratio's old log-probs are recomputed at
  # temperature 1 over the whole vocabulary, and kl_mode=reward's k1 penalty uses those as pi's. A tempered
  # or truncated sampler draws from another distribution, which those terms do not account for.
  untempered = "the update's PPO ratio and KL terms take the samples as drawn from the policy's own distribution"
  config_lib.check(config, "rollout.temperature", lambda t: t == 1.0, f"must be 1.0 for training: {untempered}",
                   "pass --config.rollout.temperature=1.0 (evaluation is greedy regardless)")
  config_lib.check(config, "rollout.top_k", lambda k: k == 0, f"must be 0 (no truncation) for training: {untempered}",
                   "pass --config.rollout.top_k=0")
  config_lib.check(config, "rollout.top_p", lambda p: p == 1.0,
                   f"must be 1.0 (no truncation) for training: {untempered}", "pass --config.rollout.top_p=1.0")
  # A trajectory grows to at most max_context_tokens tokens (agents.rollout: prompt and reply within
  # max_context_tokens - 1, plus a closing <|im_end|>); generation refuses a prompt + budget past the model's window,
  # so a budget beyond it fails mid-rollout. (A pretrained policy's window comes with its weights: build_policy checks
  # it when they load.)
  if config.policy.kind == "scratch":
    config_lib.check(config, "rollout.max_context_tokens", lambda n: n <= config.policy.max_seq_len,
                     f"must be <= policy.max_seq_len = {config.policy.max_seq_len}, the policy's context window: a "
                     "rollout fills up to max_context_tokens tokens, and generation past the window fails mid-rollout",
                     f"lower --config.rollout.max_context_tokens to {config.policy.max_seq_len}, or raise "
                     f"--config.policy.max_seq_len to {config.rollout.max_context_tokens}")
  try:
    schedule = ScalingInterSchedule.from_config(config.schedule)
  except ValueError as e:
    raise config_lib.ConfigError(f"config.schedule: {e}") from e
  if schedule.boundaries and schedule.boundaries[-1] >= config.train.num_steps:
    raise config_lib.ConfigError(
        f"config.schedule.steps_per_stage = {config.schedule.steps_per_stage!r} starts the last stage (turn limit "
        f"{schedule.turn_limits[-1]}) at step {schedule.boundaries[-1]}, but config.train.num_steps = "
        f"{config.train.num_steps}: the run would never reach it (stages start at steps "
        f"{', '.join(map(str, (0,) + schedule.boundaries))}). Fix: pass --config.train.num_steps="
        f"{schedule.boundaries[-1] + 1} or more, or shorten --config.schedule.steps_per_stage.")
  if config.data.step_level and config.env in ENVIRONMENTS and not hasattr(ENVIRONMENTS[config.env][0],
                                                                         "step_level_sampler"):
    raise config_lib.ConfigError(
        f"config.data.step_level = True, but environment {config.env!r} has no step-level sampler (an environment "
        "class offers one as `step_level_sampler(config)`, e.g. toolenv). Fix: --config.data.step_level=false")


def _validate_mesh(config: ml_collections.ConfigDict) -> None:
  """The update's rows are split over every device: each minibatch must divide evenly."""
  sharding_lib.validate_mesh_config(config)
  if jax.process_count() > 1:
    raise config_lib.ConfigError(
        f"agents.train runs in one process (its rollouts and environments live there), but {jax.process_count()} "
        "processes were started. Fix: run one process; its mesh (config.mesh) spans all of that host's devices.")
  rows = config.data.tasks_per_step * config.rollout.group_size // config.algorithm.minibatches
  devices = jax.device_count()
  config_lib.check(config, "algorithm.minibatches", lambda m: rows % devices == 0,
                   f"leaves {rows} rollouts per minibatch, which the mesh's {devices} devices cannot split evenly "
                   "(each update splits its minibatch's rows over every device)",
                   f"make data.tasks_per_step x rollout.group_size / algorithm.minibatches a multiple of {devices}")
  if config.policy.warm_start_steps:
    warm_rows = policy_lib.warm_start_batch_size(config)
    config_lib.check(config, "policy.warm_start_batch_size", lambda b: warm_rows % devices == 0,
                     f"gives warm-start batches of {warm_rows} episodes, which the mesh's {devices} devices cannot "
                     "split evenly", f"make it (and policy.warm_start_tasks) a multiple of {devices}")


# ---- the jitted pieces ------------------------------------------------------------------------------------

def _critic_values(graphdef, params, model_state, tokens, attention_mask):
  return nnx.merge(graphdef, params, model_state)(tokens, attention_mask)


critic_values = jax.jit(_critic_values, static_argnums=0)


def make_actor_step(graphdef, algo: ml_collections.ConfigDict, tx, trainable, horizon: int,
                    mesh: jax.sharding.Mesh, state_sharding):
  def loss_fn(model, batch, rng):
    del rng
    mask = batch["attention_mask"].astype(bool)
    logits, _ = model(batch["tokens"], positions_from_mask(mask), mask)
    return algorithms.actor_loss(algo, logits, batch, horizon)

  return loop.jit_on_mesh(make_train_step(graphdef, loss_fn, tx, trainable), mesh, state_sharding)


def make_critic_step(graphdef, algo: ml_collections.ConfigDict, tx, horizon: int, mesh: jax.sharding.Mesh,
                     state_sharding):
  def loss_fn(model, batch, rng):
    del rng
    return algorithms.critic_loss(algo, model(batch["tokens"], batch["attention_mask"]), batch, horizon)

  return loop.jit_on_mesh(make_train_step(graphdef, loss_fn, tx), mesh, state_sharding)


# ---- the run ----------------------------------------------------------------------------------------------

def training_tasks(config: ml_collections.ConfigDict, step: int) -> list[int]:
  """The tasks of training step `step`: a function of (seed, step) only, so a resumed run draws the same."""
  rng = np.random.default_rng([config.seed, step])
  drawn = rng.choice(config.data.train_tasks, config.data.tasks_per_step, replace=False)
  return sorted(config.data.train_task_offset + int(t) for t in drawn)


def evaluation_tasks(config: ml_collections.ConfigDict) -> list[int]:
  return list(range(config.data.eval_task_offset, config.data.eval_task_offset + config.data.eval_tasks))


def step_level_sampler(config: ml_collections.ConfigDict):
  """The environment's step-level sampler when `data.step_level` is set, else None (whole trajectories):
  `sampler(current, client, task_ids, step=, turn_limit=, rng=) -> (samples, RolloutStats, metrics)`, samples
  being `rollout.Trajectory` rows laid out like a grouped rollout (`rollout.group_size` consecutive per prompt)."""
  if not config.data.step_level:
    return None
  return ENVIRONMENTS[config.env][0].step_level_sampler(config)


def make_client(config: ml_collections.ConfigDict):
  """In-process pool, or the HTTP server at `config.env_url` (same interface)."""
  if config.env_url:
    client = HttpEnvClient(config.env_url, http_client_config())
    check_server_matches(client.health(), config.env_url, config.env, config.env_config)
    return client
  # Room for every environment a rollout opens at once (a training step's groups, or the evaluation tasks).
  at_once = max(config.data.tasks_per_step * config.rollout.group_size, config.data.eval_tasks)
  max_envs = max(pool_config().max_envs, at_once)  # never below the pool's own default
  return LocalEnvClient(make_pool(config.env, config.env_config, pool_config(max_envs=max_envs)))


@dataclasses.dataclass
class Learner:
  """Everything the RL update owns: the policy and critic train states, the frozen reference, the steps."""
  config: ml_collections.ConfigDict
  policy: policy_lib.Policy
  graphdef: Any
  state: TrainState
  full_graphdef: Any
  ref_state: Any
  actor_step: Any
  mesh: jax.sharding.Mesh
  critic_graphdef: Any = None
  critic_state: TrainState | None = None
  critic_step: Any = None

  def current(self) -> weights.Pretrained:
    """The current policy as a `Pretrained` (graphdef + full state), what generation takes."""
    model = nnx.merge(self.graphdef, self.state.params, self.state.model_state)
    graphdef, state = nnx.split(model)
    return weights.Pretrained(self.policy.config, graphdef, state, self.policy.tokenizer, source="rl")

  def checkpoint_tree(self) -> dict[str, Any]:
    tree = {"policy": self.state}
    if self.critic_state is not None:
      tree["critic"] = self.critic_state
    return tree

  def load_checkpoint_tree(self, tree: Mapping[str, Any]) -> None:
    self.state = tree["policy"]
    if self.critic_state is not None:
      self.critic_state = tree["critic"]


def build_learner(config: ml_collections.ConfigDict, workdir: str) -> tuple[Learner, dict[str, float]]:
  """The policy (with its stage-0 warm start, cached in `workdir/warm_start`), the reference and the critic."""
  policy = policy_lib.build_policy(config)
  info: dict[str, float] = {}
  if config.policy.warm_start_steps > 0:
    cache = checkpoint_lib.Checkpointer(os.path.join(workdir, "warm_start"), every=1, keep=1)
    if cache.latest_step() is None:
      info = policy_lib.warm_start(policy, config)
      cache.save(0, nnx.state(policy.model, nnx.Param), data_state=info, force=True)
    else:
      restored, info = cache.restore(0, nnx.state(policy.model, nnx.Param))
      nnx.update(policy.model, restored)
    cache.close()
  total_steps = optimizer_updates(config)
  tx = optim.make_optimizer(config.optimizer, total_steps)
  full_graphdef, ref_state = nnx.split(policy.model)
  ref_state = jax.tree.map(jnp.copy, ref_state)  # training donates the policy's buffers; the reference stays
  critic_model = None
  if config.algorithm.name == "ppo":
    # verl initialises the critic's trunk from the policy (a separate copy: it trains its own weights).
    trunk = nnx.merge(full_graphdef, jax.tree.map(jnp.copy, ref_state))
    critic_model = ValueModel(trunk, nnx.Rngs(config.seed + 1))
  graphdef, state = create_train_state(policy.model, tx, policy.trainable)
  horizon = algorithms.loss_horizon(config.algorithm, config.rollout.max_context_tokens)
  # Every state on the mesh as `core.train` lays one out (replicated under pure data parallelism, large
  # weights split over `fsdp`); checkpoints restore into these layouts.
  mesh = sharding_lib.mesh_from_config(config.mesh)
  place = lambda tree: sharding_lib.state_sharding(mesh, tree, config.mesh.fsdp_min_size)  # noqa: E731
  state_sharding = place(state)
  learner = Learner(config, policy, graphdef, jax.device_put(state, state_sharding), full_graphdef,
                    jax.device_put(ref_state, place(ref_state)),
                    make_actor_step(graphdef, config.algorithm, tx, policy.trainable, horizon, mesh, state_sharding),
                    mesh)
  if critic_model is not None:
    critic_tx = optim.make_optimizer(config.critic_optimizer, total_steps)
    learner.critic_graphdef, critic_state = create_train_state(critic_model, critic_tx)
    critic_sharding = place(critic_state)
    learner.critic_state = jax.device_put(critic_state, critic_sharding)
    learner.critic_step = make_critic_step(learner.critic_graphdef, config.algorithm, critic_tx, horizon, mesh,
                                           critic_sharding)
  return learner, info


def rollout_batch(learner: Learner, current: weights.Pretrained, trajectories,
                  config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """Host batch for the update: `to_batch` + reference log-probs (+ recomputed old log-probs and values).
  `current` is `learner.current()`, the policy that sampled `trajectories`."""
  longest = max(len(t.tokens) for t in trajectories)
  batch = rollout_lib.to_batch(trajectories, learner.policy.tokenizer.pad_id,
                               sft.padded_length(longest, learner.config.data.buckets_per_doubling))
  # The scoring passes split the rows over the mesh, as the update does.
  rows = sharding_lib.shard_batch({k: batch[k] for k in ("tokens", "attention_mask")}, learner.mesh)
  tokens, attention = rows["tokens"], rows["attention_mask"]
  mask = batch["loss_mask"].astype(bool)
  batch["ref_logprobs"] = np.where(mask, np.asarray(jit_token_logprobs(learner.full_graphdef, learner.ref_state,
                                                                       tokens, attention)), 0.0)
  # The update's ratio is against the policy's log-probs recomputed by a full forward pass of the same model
  # function the update differentiates (verl's "recompute old log-prob"; a separate jitted scoring program, so
  # equal to the update's to float error): sampling-time numbers differ more (KV cache vs full pass).
  batch["old_logprobs"] = np.where(mask, np.asarray(jit_token_logprobs(current.graphdef, current.state, tokens,
                                                                       attention)), 0.0)
  if learner.critic_state is not None:
    batch["old_values"] = np.asarray(critic_values(learner.critic_graphdef, learner.critic_state.params,
                                                   learner.critic_state.model_state, tokens, attention))
  return batch


def update(learner: Learner, batch: dict[str, np.ndarray], step: int) -> dict[str, float]:
  """Advantages, then update_epochs x minibatches actor (and critic) steps. Returns mean metrics."""
  algo = learner.config.algorithm
  values = jnp.asarray(batch["old_values"]) if "old_values" in batch else None
  on_device = {k: jnp.asarray(v) for k, v in batch.items()}  # the advantages' inputs (and the logged KL penalty's)
  adv, returns = algorithms.advantages(algo, on_device, learner.config.rollout.group_size, values,
                                       max(learner.config.schedule.turn_limits))
  batch["advantages"] = np.asarray(adv)
  if returns is not None:
    batch["returns"] = np.asarray(returns)
  keys = ["tokens", "attention_mask", "loss_mask", "old_logprobs", "ref_logprobs", "advantages"]
  critic_keys = ["tokens", "attention_mask", "loss_mask", "old_values", "returns"]
  rows = batch["tokens"].shape[0]
  size = rows // algo.minibatches
  rng = np.random.default_rng([learner.config.seed, step, 1])
  sums: dict[str, float] = {}
  count = 0

  def minibatch(names, idx):  # rows split over the mesh, as the step's in_shardings expect
    return sharding_lib.shard_batch({k: batch[k][idx] for k in names}, learner.mesh)

  for epoch in range(algo.update_epochs):
    order = rng.permutation(rows) if algo.minibatches > 1 else np.arange(rows)
    for m in range(algo.minibatches):
      idx = order[m * size:(m + 1) * size]
      key = jax.random.key(0)  # the losses draw no randomness
      learner.state, metrics = learner.actor_step(learner.state, minibatch(keys, idx), key)
      if learner.critic_state is not None:
        learner.critic_state, critic_metrics = learner.critic_step(learner.critic_state, minibatch(critic_keys, idx),
                                                                   key)
        # The critic's loss and gradient norm get their own names: the actor's keep theirs.
        metrics = {**metrics, **{k: v for k, v in critic_metrics.items() if k not in ("loss", "grad_norm")},
                   "critic_loss": critic_metrics["loss"], "critic_grad_norm": critic_metrics["grad_norm"]}
      for k, v in jax.device_get(metrics).items():
        sums[k] = sums.get(k, 0.0) + float(v)
      count += 1
  out = {k: v / count for k, v in sums.items()}
  mask = batch["loss_mask"].astype(bool)
  out["advantage_abs_mean"] = float(np.abs(batch["advantages"][mask]).mean()) if mask.any() else 0.0
  if algorithms.kl_mode(algo) == "reward" and mask.any():
    # the KL that REINFORCE++ penalises (k1 per model token, before its coefficient); `kl_ref` is the configured
    # estimator's value under the updated policy, logged for every algorithm
    penalty = np.asarray(algorithms.kl_reward_penalty(on_device))
    out["kl_reward_mean"] = float(penalty[mask].mean())
  return out


def trajectory_metrics(trajectories) -> dict[str, float]:
  n = len(trajectories)
  return {"success_rate": sum(t.success for t in trajectories) / n,
          "score_mean": float(np.mean([t.score for t in trajectories])),
          "progress_mean": float(np.mean([t.progress for t in trajectories])),
          "turns_mean": float(np.mean([len(t.turns) for t in trajectories])),
          "model_tokens_mean": float(np.mean([sum(t.loss_mask) for t in trajectories])),
          "error_rate": sum(t.finish_reason == "error" for t in trajectories) / n,
          "turn_limit_rate": sum(t.finish_reason == "turn_limit" for t in trajectories) / n}


def evaluate(learner: Learner, client, config: ml_collections.ConfigDict, turn_limit: int,
             workdir: str | None = None, step: int = 0) -> dict[str, float]:
  """Greedy rollouts (one per held-out task) at `turn_limit` turns: success rate, progress, turns."""
  eval_rollout = ml_collections.ConfigDict(config.rollout.to_dict())
  eval_rollout.temperature, eval_rollout.group_size = 0.0, 1
  current = learner.current()
  trajectories, _ = rollout_lib.rollout(rollout_lib.llm_policy(current, eval_rollout), current.tokenizer, client,
                                        evaluation_tasks(config), eval_rollout, max_turns=turn_limit,
                                        rng=jax.random.key(config.seed))
  if workdir:
    rollout_lib.write_trajectories(os.path.join(workdir, "eval_trajectories.jsonl"), trajectories, step=step,
                                   turn_limit=turn_limit)
  return trajectory_metrics(trajectories)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) RL training; returns the final evaluation and run summary (also in summary.json)."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  schedule = ScalingInterSchedule.from_config(config.schedule)
  eval_turn_limit = config.data.eval_turn_limit or max(schedule.turn_limits)
  learner, warm_info = build_learner(config, workdir)
  sampler = step_level_sampler(config)
  client = make_client(config)
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                             every=config.train.checkpoint_every, keep=config.train.keep_checkpoints)
  start = 0
  latest = checkpointer.latest_step()
  if latest is not None:
    tree, _ = checkpointer.restore(latest, learner.checkpoint_tree())
    learner.load_checkpoint_tree(tree)
    start = int(latest)
  # A resumed run rewrites the steps after its checkpoint; a fresh start (-1) drops all the logs of an earlier
  # attempt that died before its first checkpoint. Either way no step appears twice.
  keep = start if latest is not None else -1
  writer = metrics_lib.MetricsWriter(workdir, tensorboard=config.train.tensorboard,
                                     console=config.train.progress_bar, purge_after=keep)  # JSONL and TensorBoard
  for name in ("trajectories.jsonl", "eval_trajectories.jsonl"):
    metrics_lib.truncate_jsonl(os.path.join(workdir, name), keep)
  if latest is None and config.data.eval_every:
    writer.write(0, {**evaluate(learner, client, config, eval_turn_limit, workdir, 0),
                     "turn_limit": eval_turn_limit, **warm_info}, split="eval")
  base_key = jax.random.key(config.seed)
  try:
    for step in range(start, config.train.num_steps):
      turn_limit = schedule.turn_limit(step)
      t0 = time.perf_counter()
      current = learner.current()
      sample_metrics = {}
      if sampler is None:
        trajectories, stats = rollout_lib.rollout(
            rollout_lib.llm_policy(current, config.rollout), current.tokenizer, client,
            training_tasks(config, step), config.rollout, max_turns=turn_limit,
            rng=jax.random.fold_in(base_key, step))
      else:
        trajectories, stats, sample_metrics = sampler(current, client, training_tasks(config, step), step=step,
                                                      turn_limit=turn_limit, rng=jax.random.fold_in(base_key, step))
      t1 = time.perf_counter()
      batch = rollout_batch(learner, current, trajectories, config)
      update_metrics = update(learner, batch, step)
      jax.block_until_ready(learner.state.params)
      t2 = time.perf_counter()
      bad = [k for k in ("loss", "grad_norm", "critic_loss", "critic_grad_norm")
             if k in update_metrics and not np.isfinite(update_metrics[k])]
      if bad:  # checked before any checkpoint of this step, so none ever holds non-finite weights
        last = checkpointer.latest_step()
        where = (f"the last good checkpoint is step {last} in {checkpointer.directory}; rerunning the command "
                 "resumes from it" if last is not None else
                 "no checkpoint was written yet, so rerunning the command starts from scratch")
        raise loop.NonFiniteLossError(
            f"RL update non-finite at step {step} ({', '.join(f'{k}={update_metrics[k]}' for k in bad)}); {where}. "
            "Fix: lower optimizer.learning_rate (critic_optimizer.learning_rate for the critic) or set "
            "optimizer.grad_clip_norm.")
      if (step + 1) % config.data.trajectories_every == 0:
        rollout_lib.write_trajectories(os.path.join(workdir, "trajectories.jsonl"), trajectories, step=step + 1,
                                       turn_limit=turn_limit)
      writer.write(step + 1, {
          **trajectory_metrics(trajectories), **sample_metrics, **update_metrics, "turn_limit": turn_limit,
          "sequence_length": batch["tokens"].shape[1], "generated_tokens": stats.generated_tokens,
          "generation_s": stats.generation_s, "env_s": stats.env_s,
          "rollout_other_s": (t1 - t0) - stats.generation_s - stats.env_s, "update_s": t2 - t1})
      if config.data.eval_every and ((step + 1) % config.data.eval_every == 0 or step + 1 == config.train.num_steps):
        writer.write(step + 1, {**evaluate(learner, client, config, eval_turn_limit, workdir, step + 1),
                                "turn_limit": eval_turn_limit}, split="eval")
      checkpointer.save(step + 1, learner.checkpoint_tree(), {"step": step + 1},
                        force=step + 1 == config.train.num_steps)
  finally:
    checkpointer.close()
    writer.close()
    client.shutdown()
  evals = metrics_lib.read_metrics(workdir, "eval") if config.data.eval_every else []
  summary = {"steps": config.train.num_steps, "final_eval": evals[-1] if evals else None,
             "first_eval": evals[0] if evals else None, "eval_turn_limit": eval_turn_limit}
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary


def main(config: ml_collections.ConfigDict, workdir: str) -> None:
  summary = train(config, workdir)
  final = summary["final_eval"]
  if final:
    print(f"final greedy success on {config.data.eval_tasks} held-out tasks at {summary['eval_turn_limit']} "
          f"turns: {100 * final['success_rate']:.1f}% (before RL: {100 * summary['first_eval']['success_rate']:.1f}%)")


if __name__ == "__main__":
  entrypoint.run(main, validate=validate_config)
