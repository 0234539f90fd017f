"""AgentGym-RL's key comparison (arXiv 2509.08755, sec. 5, fig. 5-6) at CPU scale: the same policy trained with
a fixed short horizon, a fixed long horizon and the ScalingInter-RL schedule, evaluated greedily on held-out tasks
at the long horizon (or `data.eval_turn_limit` when set) over training.

    python -m agents.horizon --config configs/agents/gridworld_grpo.py:quick --workdir runs/agents/horizon

All three runs start from the same policy (one stage-0 warm start, copied into each run's workdir) and see the same
tasks at every step; they differ only in the turn limit of their rollouts: `turn_limits[0]` (short),
`turn_limits[-1]` (long), or the configured schedule. Writes `horizon.json`, `horizon.md` (table) and
`horizon.png` (success over training), beside the paper's numbers for their 7B model.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import ml_collections

from agents import train as train_lib
from core import config as config_lib
from core import entrypoint
from core.train.metrics import read_metrics

# AgentGym-RL-7B with ScalingInter-RL (the paper's table 1-4), success / score in %.
PAPER_SCALING_INTER = {"BabyAI": 96.7, "TextCraft": 91.0, "SciWorld": 57.0, "Deep Search": 38.2}
PAPER_NAME = {"gridworld": "BabyAI", "textcraft": "TextCraft", "search": "Deep Search", "sciworld": "SciWorld"}


def eval_turn_limit(config: ml_collections.ConfigDict) -> int:
  """The one turn limit all three runs are evaluated at: `data.eval_turn_limit` when set, else the long horizon."""
  return int(config.data.eval_turn_limit or config.schedule.turn_limits[-1])


def horizon_variants(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """The three runs: fixed short, fixed long, ScalingInter (the config's own schedule)."""
  limits = tuple(config.schedule.turn_limits)
  # Fixed now, before the variants' schedules differ: each run's default would be its own longest limit.
  evaluated_at = eval_turn_limit(config)
  variants = {}
  for name, turn_limits in (("fixed_short", (limits[0],)), ("fixed_long", (limits[-1],)),
                            ("scaling_inter", limits)):
    variant = ml_collections.ConfigDict(config.to_dict())
    variant.schedule.turn_limits = turn_limits
    if len(turn_limits) == 1 and not isinstance(variant.schedule.steps_per_stage, int):
      variant.schedule.steps_per_stage = ()  # one stage: no per-stage lengths (a list of them would not fit)
    variant.data.eval_turn_limit = evaluated_at
    variants[name] = variant
  return variants


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the three variants (resuming any that stopped) and writes the table and the plot."""
  validate_config(config)
  results: dict[str, Any] = {}
  warm_start_dir = None
  for name, variant in horizon_variants(config).items():
    run_dir = os.path.join(workdir, name)
    if warm_start_dir and not os.path.exists(os.path.join(run_dir, "warm_start")):
      shutil.copytree(warm_start_dir, os.path.join(run_dir, "warm_start"))
    train_lib.train(variant, run_dir)
    warm_start_dir = os.path.join(run_dir, "warm_start") if config.policy.warm_start_steps else None
    evals = read_metrics(run_dir, "eval")
    train_rows = read_metrics(run_dir, "train")
    results[name] = {"turn_limits": list(variant.schedule.turn_limits),
                     "eval_steps": [int(e["step"]) for e in evals],
                     "eval_success": [float(e["success_rate"]) for e in evals],
                     "eval_progress": [float(e["progress_mean"]) for e in evals],
                     "train_success": [float(r["success_rate"]) for r in train_rows],
                     "seconds": sum(float(r["generation_s"]) + float(r["env_s"]) + float(r["update_s"])
                                    for r in train_rows)}
  summary = {"env": config.env, "algorithm": config.algorithm.name, "steps": config.train.num_steps,
             "eval_tasks": config.data.eval_tasks, "eval_turn_limit": eval_turn_limit(config),
             "schedule": {"turn_limits": list(config.schedule.turn_limits),
                          "steps_per_stage": config.schedule.steps_per_stage},
             "policy": f"{config.policy.kind} ({config.policy.num_layers} layers, d={config.policy.hidden_size})"
                       if config.policy.kind == "scratch" else config.policy.source or "SmolLM2-135M-Instruct",
             "runs": results, "paper_scaling_inter_7b": PAPER_SCALING_INTER}
  with open(os.path.join(workdir, "horizon.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(workdir, "horizon.md"), "w") as f:
    f.write(table(summary) + "\n")
  plot(summary, os.path.join(workdir, "horizon.png"))
  return summary


def best_and_final(run: dict[str, Any]) -> tuple[float, float]:
  return max(run["eval_success"]), run["eval_success"][-1]


def table(summary: dict[str, Any]) -> str:
  paper = PAPER_SCALING_INTER.get(PAPER_NAME.get(summary["env"], ""), None)
  lines = [f"Greedy success (%) on {summary['eval_tasks']} held-out {summary['env']} tasks at "
           f"{summary['eval_turn_limit']} turns; {summary['algorithm']}, {summary['steps']} RL steps, policy "
           f"{summary['policy']}.", "",
           "| horizon | turn limits | before RL | best | final | paper (7B, ScalingInter) |", "|---|---|---|---|---|---|"]
  for name, run in summary["runs"].items():
    best, final = best_and_final(run)
    lines.append(f"| {name} | {'->'.join(map(str, run['turn_limits']))} | {100 * run['eval_success'][0]:.1f} | "
                 f"{100 * best:.1f} | {100 * final:.1f} | {paper if name == 'scaling_inter' and paper else ''} |")
  return "\n".join(lines)


def plot(summary: dict[str, Any], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 3.6))
  for name, run in summary["runs"].items():
    ax.plot(run["eval_steps"], [100 * s for s in run["eval_success"]], marker="o", label=name)
  ax.set_xlabel("RL step")
  ax.set_ylabel(f"greedy success at {summary['eval_turn_limit']} turns (%)")
  ax.set_title(f"{summary['env']}, {summary['algorithm']}: fixed vs ScalingInter horizons")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def validate_config(config: ml_collections.ConfigDict) -> None:
  train_lib.validate_config(config)
  # The three runs take the first limit, the last limit and the whole schedule: with one stage (or equal first and
  # last limits) they would be the same run, and the comparison would show nothing.
  config_lib.check(config, "schedule.turn_limits", lambda t: len(t) >= 2 and t[0] != t[-1],
                   "must hold at least 2 stages whose first and last turn limits differ: the comparison trains "
                   "fixed short (the first), fixed long (the last) and the whole schedule",
                   "pass e.g. --config.schedule.turn_limits=\"(2, 4, 8)\" (with schedule.steps_per_stage short "
                   "enough for train.num_steps to reach the last stage)")
  config_lib.check(config, "data.eval_every", lambda n: n > 0,
                   "must be > 0: the comparison is the evaluation success over training",
                   "pass --config.data.eval_every=N (e.g. 5)")


def main(config: ml_collections.ConfigDict, workdir: str) -> None:
  print(table(run(config, workdir)))


if __name__ == "__main__":
  entrypoint.run(main, validate=validate_config)
