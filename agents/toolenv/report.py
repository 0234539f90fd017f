"""Quick report of the tool-use environment construction (arXiv 2508.08791) for the main table: Solve-F1 of the
paper's models beside the scripted oracle (ceiling), a random schema-following caller (floor) and the naive
caller by complexity level, measured on environments generated here. No model is trained or run here: the
step-level RL run (configs/agents/toolenv_grpo.py:cpu_step) takes about an hour on a CPU; its before/after table is
in agents/toolenv/README.md."""

from __future__ import annotations

import os

from agents.toolenv.evaluation import evaluate
from core import config as config_lib
from core.report import ClaimRow

PAPER = "Tool-use env construction (2508.08791)"


def _run(policy: str, per_cell: int, workdir: str) -> dict[str, dict]:
  config = config_lib.load_config("configs/agents/toolenv.py:oracle", [
      f"policy={policy}", f"tasks_per_cell={per_cell}", "progress_bar=false"])
  results = evaluate(config, os.path.join(workdir, policy))
  rows = {r["group"]: r for r in results["rows"]}
  if rows["all"]["errors"]:  # a scripted policy meets no environment error unless something is broken
    raise RuntimeError(f"{rows['all']['errors']} {policy} episodes ended with an environment error (see "
                       f"{os.path.join(workdir, policy, 'episodes.jsonl')}); their scores would pass for the policy's.")
  return rows


def quick_report(workdir: str) -> list[ClaimRow]:
  per_cell = 10
  oracle, floor, naive = (_run(p, per_cell, workdir) for p in ("oracle", "random", "naive"))
  scale = f"{20 * per_cell} generated environments (4 scenario types x 5 complexity levels), scripted policies, CPU"
  levels = sorted(g for g in floor if g.startswith("level"))
  by_level = " -> ".join(f"{floor[g]['solve_f1']:.0f}" for g in levels)
  return [
      ClaimRow(PAPER, "Solve-F1, Qwen3-8B base -> after GRPO", "31.01 -> 45.43",
               f"not run in the quick report (step-level GRPO of SmolLM2-135M at CPU scale: "
               f"agents/toolenv/README.md); oracle {oracle['all']['solve_f1']:.1f}, random floor "
               f"{floor['all']['solve_f1']:.1f}", scale),
      ClaimRow(PAPER, "Solve-F1, GPT-4o", "42.79",
               f"not run; naive caller {naive['all']['solve_f1']:.1f}", scale),
      ClaimRow(PAPER, "complexity scaling makes harder variants (Solve-F1 by level 0-4)", "harder with scaling",
               f"random caller {by_level}; naive caller {naive[levels[0]]['solve_f1']:.0f} -> "
               f"{naive[levels[-1]]['solve_f1']:.0f}", scale),
  ]
