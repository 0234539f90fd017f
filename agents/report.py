"""Quick report of the agents package for the main job (`python -m reproduce`).

Collects the rows of the environment papers implemented so far: VehicleWorld (2509.06736) and the tool-use
environment construction (2508.08791). AgentGym-RL's own comparison (fixed vs ScalingInter horizons) needs the RL
trainer, which is not written yet (agents/README.md), so it contributes no row.
"""

from __future__ import annotations

import os

from core.report import ClaimRow


def quick_report(workdir: str) -> list[ClaimRow]:
  from agents.toolenv import report as toolenv_report
  from agents.vehicle import report as vehicle_report
  rows = vehicle_report.quick_report(os.path.join(workdir, "vehicle"))
  rows += toolenv_report.quick_report(os.path.join(workdir, "toolenv"))
  return rows
