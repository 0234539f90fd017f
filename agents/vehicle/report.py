"""Quick report of VehicleWorld (arXiv 2509.06736) for the main table: the world's size, and the paper's FC / SFC /
FC+SFC change accuracies beside the scripted oracle (ceiling) and random agent (floor) measured here. No model
is run here (a CPU run of the 135M model takes minutes per task; see agents/vehicle/README.md)."""

from __future__ import annotations

import os

from agents.vehicle.catalog import load_schema
from agents.vehicle.evaluation import evaluate
from core import config as config_lib
from core.report import ClaimRow

PAPER = "VehicleWorld (2509.06736)"


def _run(policy: str, per_split: int, workdir: str) -> dict[str, dict]:
  config = config_lib.load_config("configs/agents/vehicle.py:quick", [
      f"policy={policy}", f"tasks_per_split={per_split}", "progress_bar=false"])
  results = evaluate(config, os.path.join(workdir, policy))
  rows = {r["interface"]: r for r in results["rows"] if r["split"] == "all"}
  errors = sum(r["errors"] for r in rows.values())
  if errors:  # a scripted policy meets no environment error unless something is broken
    raise RuntimeError(f"{errors} {policy} episodes ended with an environment error (see "
                       f"{os.path.join(workdir, policy, 'episodes.jsonl')}); their scores would pass for the policy's.")
  return rows


def quick_report(workdir: str) -> list[ClaimRow]:
  counts = load_schema().counts()
  per_split = 25
  oracle, floor = _run("oracle", per_split, workdir), _run("random", per_split, workdir)
  scale = f"{4 * per_split} generated tasks (4 splits) per interface, scripted policies, CPU"

  def acc(interface: str) -> str:
    return (f"oracle {oracle[interface]['change_accuracy']:.1f} / random {floor[interface]['change_accuracy']:.1f} "
            f"(no model run)")

  return [
      ClaimRow(PAPER, "world size: modules / APIs / properties", "30 / 250 / 680",
               f"{counts['modules']} / {counts['apis']} ({counts['action_apis']} actions + {counts['query_apis']} "
               f"status) / {counts['properties']}", "catalog written here"),
      ClaimRow(PAPER, "FC change accuracy (average over models)", "51.1", acc("fc"), scale),
      ClaimRow(PAPER, "SFC change accuracy (average over models)", "61.5", acc("sfc"), scale),
      ClaimRow(PAPER, "FC+SFC change accuracy (Qwen2.5-32B; FC 46.4, SFC 57.5)", "71.4", acc("fc_sfc"), scale),
      ClaimRow(PAPER, "tokens per task, oracle (FC / SFC / FC+SFC)", "SFC: fewer calls, lower latency",
               " / ".join(f"{oracle[i]['env_tokens_per_task']:.0f}" for i in ("fc", "sfc", "fc_sfc"))
               + " (approx. tokens of text exchanged)", scale),
  ]
