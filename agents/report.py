"""Quick report of the agents package for the main job (`python -m reproduce`).

Rows: AgentGym-RL's horizon comparison (2509.08755; fixed short vs fixed long vs ScalingInter-RL, at CPU scale:
`agents/horizon.py` on the gridworld quick config, shortened further here), VehicleWorld (2509.06736) and the
tool-use environment construction (2508.08791).
"""

from __future__ import annotations

import os

from core import config as config_lib
from core import report as report_lib
from core.report import ClaimRow

# The main job's cut of configs/agents/gridworld_grpo.py:quick (the README's horizon table runs the full quick
# config): fewer RL steps and evaluation tasks, same policy, warm start, tasks and schedule shape.
QUICK_OVERRIDES = ("train.num_steps=9", "schedule.steps_per_stage=3",
                   "data.eval_every=9", "data.eval_tasks=16")


def horizon_rows(workdir: str) -> list[ClaimRow]:
  from agents import horizon
  config = config_lib.load_config("configs/agents/gridworld_grpo.py:quick", QUICK_OVERRIDES)
  summary = horizon.run(config, workdir)
  runs = summary["runs"]
  measured = "; ".join(f"{name} {100 * run['eval_success'][0]:.0f} -> {100 * run['eval_success'][-1]:.0f}"
                       for name, run in runs.items())
  scale = (f"gridworld (BabyAI-like, 1-2 rooms), {summary['policy']} warm-started by "
           f"{config.policy.warm_start_steps} supervised steps on whole oracle episodes, "
           f"{summary['algorithm']}, {summary['steps']} RL steps x {config.data.tasks_per_step} tasks x group "
           f"{config.rollout.group_size}, turn limits {summary['schedule']['turn_limits']}, greedy on "
           f"{summary['eval_tasks']} held-out tasks; paper: Qwen2.5-7B, hundreds of steps")
  return [ClaimRow("AgentGym-RL (2509.08755)",
                   "success (%) before -> after RL: fixed short / fixed long / ScalingInter horizon",
                   "ScalingInter best: BabyAI 96.7 (7B)", measured, scale)]


def quick_report(workdir: str) -> list[ClaimRow]:
  from agents.toolenv import report as toolenv_report
  from agents.vehicle import report as vehicle_report
  rows = horizon_rows(os.path.join(workdir, "horizon"))
  rows += vehicle_report.quick_report(os.path.join(workdir, "vehicle"))
  rows += toolenv_report.quick_report(os.path.join(workdir, "toolenv"))
  return rows


def main(argv=None) -> None:
  report_lib.quick_report_cli(quick_report, "AgentGym-RL, VehicleWorld and tool-environment quick reproduction table",
                              "runs/agents_report", argv)


if __name__ == "__main__":
  main()
