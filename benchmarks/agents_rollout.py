"""Rollout throughput of agent RL (issue 6): batched multi-turn rollout (one generation call per turn for every
live trajectory, AgentGym-RL's design) against batch-1 rollout (one trajectory at a time), same policy, same
tasks, same turn limit, both keeping each trajectory's KV cache between turns (`rollout.kv_cache_reuse`, the
default); the same pair again without cache reuse (every turn re-prefills the whole dialogue); and where one RL
step's time goes (generation, environment, the reference/old log-prob passes, the update).

    python -m benchmarks.agents_rollout                      # gridworld, 32 tasks, 6 turns, quick policy
    python -m benchmarks.agents_rollout --env textcraft --episodes 32 --turns 10
    python -m benchmarks.agents_rollout --policy real --skip-rl-step   # SmolLM2-135M-Instruct as the policy
    python -m benchmarks.agents_rollout --workdir DIR                 # default: a fresh temporary directory

The policy is the quick config's from-scratch 2-layer model (random init: it always uses its whole per-turn
token budget, so both settings generate the same number of tokens per turn). Both settings are warmed up first
(compilation excluded; XLA compilations inside the timed runs are counted, `compiles_during_timing`). Every
generation call draws from `fold_in(key(--seed), index of its first task)` on both sides, so the sampled replies
of the two sides differ (a batched call splits one key over its rows): each line carries the work each side did,
`tokens_ours`/`tokens_peer` and `turns_ours`/`turns_peer`, and where each side's time went: `generation_s_*`,
`env_s_*`, `generate_calls_*` and `ms_per_generate_call_*`. Prints JSON lines (benchmarks/harness.py):
episodes/min and generated tokens/s, batch 32 (ours) vs batch 1 (peer), and one full RL step at batch 32: its
seconds (lower is better) and the shares of generation, environment, log-prob passes (`rollout_batch`: reference
and old-policy log-probs, host batching) and update. The RL step runs once untimed (it compiles), then again from
the learner state the untimed step started from (restored from a copy), with the same key and step number: the
same trajectories, so the same padded shapes and no compile. Should one happen anyway, the timed step is repeated
(at most `RL_STEP_TRIES` times); the line carries `compiles_during_timing` of the step it reports and
`timed_attempts`. Goal: >= 10x episodes/min.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import jax

from agents import rollout as rollout_lib
from agents import train as train_lib
from benchmarks.harness import count_compiles, emit
from core import config as config_lib

BENCH = "agents_rollout"
RL_STEP_TRIES = 3


def call_key(seed: int, first_task: int) -> jax.Array:
  """The key of the rollout call whose first task is `first_task`: the same rule for both batch sizes."""
  return jax.random.fold_in(jax.random.key(seed), first_task)


def run_rollouts(learner, client, config, task_ids, batch: int, turns: int, reuse: bool = True,
                 seed: int = 0) -> dict:
  """Rolls out `task_ids` `batch` trajectories at a time.

  Returns {"seconds", "tokens" (generated), "turns" (agent turns over all trajectories), "trajectories",
  "compiles" (XLA compilations during the run), and where the time went: "generation_s", "env_s",
  "generate_calls" (batched generation calls: one per turn of a batch)}.
  """
  current = learner.current()
  rollout_config = config.rollout.copy_and_resolve_references()
  rollout_config.kv_cache_reuse = reuse
  policy = rollout_lib.llm_policy(current, rollout_config)
  tokens, agent_turns, trajectories = 0, 0, []
  generation_s, env_s, generate_calls = 0.0, 0.0, 0
  with count_compiles() as compiles:
    start = time.perf_counter()
    for i in range(0, len(task_ids), batch):
      out, stats = rollout_lib.rollout(policy, current.tokenizer, client, task_ids[i:i + batch], config.rollout,
                                       max_turns=turns, rng=call_key(seed, int(task_ids[i])))
      tokens += stats.generated_tokens
      agent_turns += stats.turns
      generation_s, env_s, generate_calls = (generation_s + stats.generation_s, env_s + stats.env_s,
                                             generate_calls + stats.generate_calls)
      trajectories += out
    seconds = time.perf_counter() - start
  return {"seconds": seconds, "tokens": tokens, "turns": agent_turns, "trajectories": trajectories,
          "compiles": compiles.count, "generation_s": generation_s, "env_s": env_s, "generate_calls": generate_calls}


def at_median(runs: list[dict]) -> dict:
  """The run whose time is the median of `runs` (with an odd number of runs, the median itself)."""
  median = statistics.median(r["seconds"] for r in runs)
  return min(runs, key=lambda r: abs(r["seconds"] - median))


def rl_step(learner, client, config, tasks, turns: int, key: jax.Array, step: int) -> dict:
  """One whole RL step at batch len(tasks), timed part by part: rollout (generation + environment),
  `rollout_batch` (reference and old-policy log-prob passes + host batching), `update`."""
  current = learner.current()
  with count_compiles() as compiles:
    start = time.perf_counter()
    trajectories, stats = rollout_lib.rollout(rollout_lib.llm_policy(current, config.rollout), current.tokenizer,
                                              client, tasks, config.rollout, max_turns=turns, rng=key)
    rollout_s = time.perf_counter() - start
    start = time.perf_counter()
    batch = train_lib.rollout_batch(learner, current, trajectories, config)
    logprob_s = time.perf_counter() - start
    start = time.perf_counter()
    train_lib.update(learner, batch, step)
    jax.block_until_ready(learner.state.params)
    update_s = time.perf_counter() - start
  return {"rollout_s": rollout_s, "generation_s": stats.generation_s, "env_s": stats.env_s,
          "logprob_s": logprob_s, "update_s": update_s, "total_s": rollout_s + logprob_s + update_s,
          "compiles": compiles.count, "tokens": stats.generated_tokens, "turns": stats.turns,
          "sequence_length": int(batch["tokens"].shape[1])}


def copied(tree):
  """`tree` with its arrays copied: the update donates the train states' buffers, so a kept reference would not
  keep the values."""
  return jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, tree)


def timed_rl_step(learner, client, config, tasks, turns: int, key: jax.Array) -> dict:
  """`rl_step` once untimed, then timed from the same learner state, key and step: what `rl_step` returns, plus
  `attempts` (timed runs made until one compiled nothing, at most RL_STEP_TRIES)."""
  start = copied(learner.checkpoint_tree())
  rl_step(learner, client, config, tasks, turns, key, 0)
  for attempt in range(1, RL_STEP_TRIES + 1):
    # the untimed step's update moved the policy: from its start state the timed step samples the same
    # trajectories, pads them to the same length and reuses the programs compiled for them
    learner.load_checkpoint_tree(copied(start))
    step = rl_step(learner, client, config, tasks, turns, key, 0)
    if step["compiles"] == 0:
      break
  return {**step, "attempts": attempt}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--env", default="gridworld", choices=["gridworld", "textcraft", "search", "sciworld"])
  parser.add_argument("--episodes", type=int, default=32)
  parser.add_argument("--turns", type=int, default=6)
  parser.add_argument("--max-new-tokens", type=int, default=8)
  parser.add_argument("--policy", default="quick", choices=["quick", "real"],
                      help="quick: the from-scratch 2-layer policy; real: SmolLM2-135M-Instruct")
  parser.add_argument("--peer-episodes", type=int, default=0,
                      help="episodes of the batch-1 peer (0 = --episodes); fewer keeps a slow policy's run short, "
                           "episodes/min stays comparable")
  parser.add_argument("--rounds", type=int, default=3,
                      help="timed rounds, batch-1 and batched alternating; the figures are the medians over rounds")
  parser.add_argument("--skip-rl-step", action="store_true", help="do not time one whole RL step")
  parser.add_argument("--no-cache-rows", action="store_true", help="skip the pair without KV-cache reuse")
  parser.add_argument("--seed", type=int, default=0, help="sampling keys: fold_in(key(seed), first task of a call)")
  parser.add_argument("--workdir", default=None,
                      help="the learner's workdir (its warm-start cache); default: a fresh temporary directory")
  parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                      help="a config override (repeatable), e.g. --override data.buckets_per_doubling=4")
  args = parser.parse_args(argv)
  workdir = args.workdir or tempfile.mkdtemp(prefix="agents_rollout_bench_")
  config = config_lib.load_config(f"configs/agents/{args.env}_grpo.py:{args.policy}", [
      "policy.warm_start_steps=0", "rollout.group_size=1", f"rollout.max_new_tokens={args.max_new_tokens}",
      f"data.tasks_per_step={args.episodes}", "algorithm.name=reinforce_pp", "algorithm.kl_mode=reward",
      *args.override])
  learner, _ = train_lib.build_learner(config, workdir)
  client = train_lib.make_client(config)
  tasks = list(range(args.episodes))
  common = dict(env=args.env, episodes=args.episodes, turns=args.turns, max_new_tokens=args.max_new_tokens,
                policy=args.policy, seed=args.seed)
  for reuse in ((True,) if args.no_cache_rows else (True, False)):
    # Warm-up: compile the generation programs of both batch sizes and every bucket they reach.
    run_rollouts(learner, client, config, tasks, args.episodes, args.turns, reuse, args.seed)
    peer_tasks = tasks[:args.peer_episodes or args.episodes]
    # the same tasks: every bucket compiled
    run_rollouts(learner, client, config, peer_tasks, 1, args.turns, reuse, args.seed)
    # Alternating rounds (peer, ours, peer, ours, ...): a load change on the shared machine hits both sides, and
    # the median over rounds is reported with every round's time.
    peers, ours_runs = [], []
    for _ in range(args.rounds):
      peers.append(run_rollouts(learner, client, config, peer_tasks, 1, args.turns, reuse, args.seed))
      ours_runs.append(run_rollouts(learner, client, config, tasks, args.episodes, args.turns, reuse, args.seed))
    peer, ours = at_median(peers), at_median(ours_runs)
    how = "kv cache kept across turns" if reuse else "no cache reuse: every turn re-prefills the dialogue"
    work = dict(kv_cache_reuse=reuse, peer_episodes=len(peer_tasks), tokens_ours=ours["tokens"],
                tokens_peer=peer["tokens"], turns_ours=ours["turns"], turns_peer=peer["turns"],
                seconds_ours=ours["seconds"], seconds_peer=peer["seconds"], rounds=args.rounds,
                seconds_ours_rounds=[r["seconds"] for r in ours_runs],
                seconds_peer_rounds=[r["seconds"] for r in peers],
                compiles_during_timing=sum(r["compiles"] for r in ours_runs),
                peer_compiles_during_timing=sum(r["compiles"] for r in peers),
                # where each side's median round went: the generation calls (how many, and the mean per call)
                # and the environment; the rest is the rollout's own bookkeeping
                **{f"{key}_{side}": run[key] for side, run in (("ours", ours), ("peer", peer))
                   for key in ("generation_s", "env_s", "generate_calls")},
                ms_per_generate_call_ours=1e3 * ours["generation_s"] / max(ours["generate_calls"], 1),
                ms_per_generate_call_peer=1e3 * peer["generation_s"] / max(peer["generate_calls"], 1), **common)
    emit(BENCH, f"episodes_per_min_batch{args.episodes}_vs_batch1", 60 * args.episodes / ours["seconds"],
         unit="episodes/min", peer=f"batch-1 rollout (same policy, tasks, {how})",
         peer_value=60 * len(peer_tasks) / peer["seconds"], **work)
    emit(BENCH, f"generated_tokens_per_s_batch{args.episodes}_vs_batch1", ours["tokens"] / ours["seconds"],
         unit="tokens/s", peer=f"batch-1 rollout ({how})", peer_value=peer["tokens"] / peer["seconds"], **work)

  if args.skip_rl_step:
    return
  # One whole RL step at this batch, timed after an untimed one that compiles its programs for these shapes.
  step = timed_rl_step(learner, client, config, tasks, args.turns, call_key(args.seed, 10**6))
  total = step["total_s"]
  emit(BENCH, "rl_step_seconds", total, unit="s", higher_is_better=False,
       generation_share=step["generation_s"] / total, env_share=step["env_s"] / total,
       other_rollout_share=(step["rollout_s"] - step["generation_s"] - step["env_s"]) / total,
       logprob_share=step["logprob_s"] / total, update_share=step["update_s"] / total,
       seconds={k: step[k] for k in ("rollout_s", "generation_s", "env_s", "logprob_s", "update_s")},
       compiles_during_timing=step["compiles"], timed_attempts=step["attempts"], tokens=step["tokens"],
       agent_turns=step["turns"], sequence_length=step["sequence_length"], overrides=args.override,
       note="timed after an untimed RL step from the same learner state, key and step; logprob = rollout_batch "
            "(reference + old-policy log-prob passes, host batching), update = advantages + the actor steps",
       **common)


if __name__ == "__main__":
  main()
