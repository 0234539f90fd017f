"""Paired comparison of two evaluations on the same tasks (arXiv 2508.08791's Solve-F1, Sec. 4): the mean
per-episode difference, its bootstrap interval, and how many episodes got better, worse or stayed equal. This is
the command behind the README's before/after-RL intervals:

    python -m agents.toolenv.compare runs/toolenv_eval_step0 runs/toolenv_eval_rl [--metric solve_f1]

Each argument is an evaluation workdir (its `episodes.jsonl`, written by `agents.toolenv.evaluate`) or the file
itself. Episodes are paired by task id; both runs must hold the same task ids.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from core.report import paired_bootstrap

METRICS = ("solve_f1", "solve_p", "solve_r", "answer_matched", "calls")


def load_episodes(path: str) -> dict[int, dict]:
  """Task id -> episode record of an evaluation workdir (or its episodes.jsonl)."""
  file = os.path.join(path, "episodes.jsonl") if os.path.isdir(path) else path
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{file} does not exist. Fix: pass the workdir of a finished `python -m "
                            "agents.toolenv.evaluate` run (it writes episodes.jsonl).")
  with open(file) as f:
    episodes = [json.loads(line) for line in f if line.strip()]
  return {e["task_id"]: e for e in episodes}


def compare(baseline: dict[int, dict], candidate: dict[int, dict], metric: str = "solve_f1", seed: int = 0):
  if set(baseline) != set(candidate):
    only = sorted(set(baseline) ^ set(candidate))[:10]
    raise ValueError(f"the two runs hold different tasks (e.g. task ids {only} are in one only). Fix: evaluate "
                     "both with the same tasks_per_cell, task_offset and env.levels.")
  ids = sorted(baseline)
  value = lambda e: float(e[metric])  # noqa: E731  (answer_matched is a bool)
  return paired_bootstrap([value(baseline[i]) for i in ids], [value(candidate[i]) for i in ids], seed=seed)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("baseline", help="the first evaluation's workdir (or episodes.jsonl)")
  parser.add_argument("candidate", help="the second evaluation's workdir, on the same tasks")
  parser.add_argument("--metric", default="solve_f1", choices=METRICS)
  parser.add_argument("--seed", type=int, default=0, help="of the bootstrap resampling")
  args = parser.parse_args(argv)
  try:
    baseline, candidate = load_episodes(args.baseline), load_episodes(args.candidate)
    result = compare(baseline, candidate, args.metric, args.seed)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"{args.metric} over {len(baseline)} paired episodes, candidate - baseline: {result}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
