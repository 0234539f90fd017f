"""Rollout throughput of agent RL (issue 6): batched multi-turn rollout (one generation call per turn for every
live trajectory, AgentGym-RL's design) against batch-1 rollout (one trajectory at a time), same policy, same
tasks, same turn limit, both keeping each trajectory's KV cache between turns (`rollout.kv_cache_reuse`, the
default); the same pair again without cache reuse (every turn re-prefills the whole dialogue); and where one RL
step's time goes (generation, environment, update).

    python -m benchmarks.agents_rollout                      # gridworld, 32 tasks, 6 turns, quick policy
    python -m benchmarks.agents_rollout --env textcraft --episodes 32 --turns 10
    python -m benchmarks.agents_rollout --policy real --skip-rl-step   # SmolLM2-135M-Instruct as the policy

The policy is the quick config's from-scratch 2-layer model (random init: it always uses its whole per-turn
token budget, so both settings generate the same number of tokens per turn). Both settings are warmed up first
(compilation excluded). Prints JSON lines (benchmarks/harness.py): episodes/min and generated tokens/s, batch 32
(ours) vs batch 1 (peer), and the time shares of one full RL step at batch 32. Goal: >= 10x episodes/min.
"""

from __future__ import annotations

import argparse
import time

import jax

from agents import rollout as rollout_lib
from agents import train as train_lib
from benchmarks.harness import emit
from core import config as config_lib

BENCH = "agents_rollout"


def run_rollouts(learner, client, config, task_ids, batch: int, turns: int,
                 reuse: bool = True) -> tuple[float, int, list]:
  """Rolls out `task_ids` `batch` trajectories at a time; returns (seconds, generated tokens, trajectories)."""
  current = learner.current()
  rollout_config = config.rollout.copy_and_resolve_references()
  rollout_config.kv_cache_reuse = reuse
  policy = rollout_lib.llm_policy(current, rollout_config)
  start, tokens, trajectories = time.perf_counter(), 0, []
  for i in range(0, len(task_ids), batch):
    out, stats = rollout_lib.rollout(policy, current.tokenizer, client, task_ids[i:i + batch], config.rollout,
                                     max_turns=turns, rng=jax.random.key(i))
    tokens += stats.generated_tokens
    trajectories += out
  return time.perf_counter() - start, tokens, trajectories


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--env", default="gridworld", choices=["gridworld", "textcraft", "search"])
  parser.add_argument("--episodes", type=int, default=32)
  parser.add_argument("--turns", type=int, default=6)
  parser.add_argument("--max-new-tokens", type=int, default=8)
  parser.add_argument("--policy", default="quick", choices=["quick", "real"],
                      help="quick: the from-scratch 2-layer policy; real: SmolLM2-135M-Instruct")
  parser.add_argument("--peer-episodes", type=int, default=0,
                      help="episodes of the batch-1 peer (0 = --episodes); fewer keeps a slow policy's run short, "
                           "episodes/min stays comparable")
  parser.add_argument("--skip-rl-step", action="store_true", help="do not time one whole RL step")
  parser.add_argument("--no-cache-rows", action="store_true", help="skip the pair without KV-cache reuse")
  args = parser.parse_args(argv)
  config = config_lib.load_config(f"configs/agents/{args.env}_grpo.py:{args.policy}", [
      "policy.warm_start_steps=0", "rollout.group_size=1", f"rollout.max_new_tokens={args.max_new_tokens}",
      f"data.tasks_per_step={args.episodes}", "algorithm.name=reinforce_pp", "algorithm.kl_mode=reward"])
  learner, _ = train_lib.build_learner(config, "/tmp/agents_rollout_bench")
  client = train_lib.make_client(config)
  tasks = list(range(args.episodes))
  common = dict(env=args.env, episodes=args.episodes, turns=args.turns, max_new_tokens=args.max_new_tokens,
                policy=args.policy)
  for reuse in ((True,) if args.no_cache_rows else (True, False)):
    # Warm-up: compile the generation programs of both batch sizes and every bucket they reach.
    run_rollouts(learner, client, config, tasks, args.episodes, args.turns, reuse)
    peer_tasks = tasks[:args.peer_episodes or args.episodes]
    run_rollouts(learner, client, config, peer_tasks, 1, args.turns, reuse)  # the same tasks: every bucket compiled
    seconds_1, tokens_1, _ = run_rollouts(learner, client, config, peer_tasks, 1, args.turns, reuse)
    seconds_b, tokens_b, trajectories = run_rollouts(learner, client, config, tasks, args.episodes, args.turns,
                                                     reuse)
    how = "kv cache kept across turns" if reuse else "no cache reuse: every turn re-prefills the dialogue"
    emit(BENCH, f"episodes_per_min_batch{args.episodes}_vs_batch1", 60 * args.episodes / seconds_b,
         unit="episodes/min", peer=f"batch-1 rollout (same policy, tasks, {how})",
         peer_value=60 * len(peer_tasks) / seconds_1, kv_cache_reuse=reuse, peer_episodes=len(peer_tasks),
         **common)
    emit(BENCH, f"generated_tokens_per_s_batch{args.episodes}_vs_batch1", tokens_b / seconds_b, unit="tokens/s",
         peer=f"batch-1 rollout ({how})", peer_value=tokens_1 / seconds_1, kv_cache_reuse=reuse, **common)

  if args.skip_rl_step:
    return
  # One whole RL step at this batch: rollout (generation + environment) + reference/old log-probs + update.
  batch = train_lib.rollout_batch(learner, learner.current(), trajectories, config)
  train_lib.update(learner, batch, 0)  # compile
  current = learner.current()
  start = time.perf_counter()
  trajectories, stats = rollout_lib.rollout(rollout_lib.llm_policy(current, config.rollout), current.tokenizer,
                                            client, tasks, config.rollout, max_turns=args.turns,
                                            rng=jax.random.key(1))
  rollout_s = time.perf_counter() - start
  start = time.perf_counter()
  batch = train_lib.rollout_batch(learner, current, trajectories, config)
  train_lib.update(learner, batch, 1)
  jax.block_until_ready(learner.state.params)
  update_s = time.perf_counter() - start
  total = rollout_s + update_s
  emit(BENCH, "rl_step_time_shares", total, unit="s", generation_share=stats.generation_s / total,
       env_share=stats.env_s / total, update_share=update_s / total,
       other_share=(rollout_s - stats.generation_s - stats.env_s) / total, **common)


if __name__ == "__main__":
  main()
