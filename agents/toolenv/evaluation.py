"""Evaluation of a policy on generated tool environments (arXiv 2508.08791, Sec. 4.1: Solve-P/R/F1), by scenario
type and complexity level, over the agents' protocol (in-process pool). `evaluate(config, workdir)` writes
`results.json`, `results.md` and `episodes.jsonl`; the paper's figures are kept beside ours in `PAPER`. The results
also hold the static complexity (`pipeline.complexity`) of the evaluated tasks' scenarios, each built at every
level of `env.levels`: the same scenarios at each level, so each operator's share shows.
"""

from __future__ import annotations

import collections
import json
import os
import time
from typing import Any

import ml_collections
import tqdm

from agents.envs import EnvSession, LocalEnvClient, make_pool, pool_config
from agents.toolenv import pipeline, policies
from agents.toolenv.env import ToolEnv, task_spec
from core import config as config_lib

# Solve-F1 on the paper's test set (Sec. 4.2), as the issue quotes them.
PAPER = {"qwen3_8b_base": 31.01, "qwen3_8b_grpo": 45.43, "gpt_4o": 42.79}


def validate_config(config: ml_collections.ConfigDict) -> None:
  config_lib.check_choice(config, "policy", policies.POLICIES)
  if config.policy == "http" and not config.http.url:
    raise config_lib.ConfigError("config.http.url is empty: the http policy needs an OpenAI-compatible endpoint. "
                                 "Fix: --config.http.url=http://host:port/v1 (and --config.http.model=NAME).")
  if config.policy == "llm" and config.llm.source and not os.path.exists(config.llm.source):
    raise config_lib.ConfigError(
        f"config.llm.source = {config.llm.source!r} does not exist. Fix: export an RL run first (python -m "
        "agents.export --config configs/agents/toolenv_grpo.py:cpu_step --workdir RUN, then "
        "--config.llm.source=RUN/export), pass a .gguf file or Hugging Face folder, or leave it empty for the "
        "bundled SmolLM2-135M-Instruct.")
  # Before task_offset's rule, which divides by the number of levels: the task ids are laid out over the levels.
  config_lib.check(config, "env.levels", lambda levels: len(levels) > 0, "must name at least one complexity level",
                   f"pass --config.env.levels=\"(0,)\" (levels are {pipeline.LEVELS})")
  config_lib.check(config, "task_offset", lambda o: o >= 0 and o % (4 * len(config.env.levels)) == 0,
                   f"must be a multiple of 4 x len(env.levels) = {4 * len(config.env.levels)} (>= 0), so that "
                   "each (type, level) cell gets tasks_per_cell tasks")
  for level in config.env.levels:
    if level not in pipeline.LEVELS:
      raise config_lib.ConfigError(f"config.env.levels holds {level}; levels are {pipeline.LEVELS}.")
  if config.tasks_per_cell < 1:
    raise config_lib.ConfigError(f"config.tasks_per_cell = {config.tasks_per_cell} is invalid: must be >= 1.")


def task_ids(config: ml_collections.ConfigDict) -> list[int]:
  """`tasks_per_cell` ids for each (scenario type, level) cell: id = task_offset + 4 (level_index + L j) +
  type_index (`task_offset` moves evaluation off the ids an RL run trains on)."""
  n_types, n_levels = len(pipeline.SCENARIO_TYPES), len(config.env.levels)
  return sorted(config.task_offset + n_types * (li + n_levels * j) + ti for ti in range(n_types)
                for li in range(n_levels) for j in range(config.tasks_per_cell))


def run_episode(client, task_id: int, policy, system: str) -> dict[str, Any]:
  start = time.perf_counter()
  policy.start(task_id)
  rewards, steps = [], 0
  with EnvSession(client, task_id=task_id) as session:
    result = session.start()
    info0 = result.info.get("task", {})
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": result.observation}]
    while not result.done:
      action = policy.act(messages)
      result = session.step(action)
      rewards.append(result.reward)
      steps += 1
      messages += [{"role": "assistant", "content": action}, {"role": "user", "content": result.observation}]
  info = result.info
  # An episode an environment error ended has only `error` in its last info: its type and level come from reset.
  return {"task_id": task_id, "type": info.get("type", info0.get("type")),
          "level": info.get("level", info0.get("level")),
          "subquestions": info.get("subquestions", info0.get("subquestions")), "solved": info.get("solved", 0),
          "calls": info.get("calls", 0),
          "solve_p": info.get("solve_p", 0.0), "solve_r": info.get("solve_r", 0.0),
          "solve_f1": info.get("solve_f1", 0.0), "answer_matched": bool(info.get("answer_matched")),
          "rewards": rewards, "steps": steps, "error": info.get("error"), "wall_s": time.perf_counter() - start,
          "last_action": messages[-2]["content"][:500] if steps else ""}


def evaluate(config: ml_collections.ConfigDict, workdir: str | None) -> dict[str, Any]:
  policy = policies.make_policy(config)
  env_config = ml_collections.ConfigDict(config.env.to_dict())
  system = ToolEnv(env_config).instructions()
  client = LocalEnvClient(make_pool("toolenv", env_config, pool_config(step_timeout_s=0.0)))
  episodes = []
  log_path = os.path.join(workdir, "episodes.jsonl") if workdir else None
  if log_path:
    os.makedirs(workdir, exist_ok=True)
    open(log_path, "w").close()
  try:
    with client:
      for task_id in tqdm.tqdm(task_ids(config), desc=f"toolenv {config.policy}", unit="task",
                               disable=not config.progress_bar):
        episodes.append(run_episode(client, task_id, policy, system))
        if log_path:  # written as the run goes: a stopped model run keeps what it measured
          with open(log_path, "a") as f:
            f.write(json.dumps(episodes[-1]) + "\n")
  finally:
    if hasattr(policy, "close"):
      policy.close()
  results = summarize(episodes, config)
  results["complexity"] = complexity_by_level(config)
  if workdir:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
    with open(os.path.join(workdir, "results.md"), "w") as f:
      f.write(markdown(results) + "\n")
  return results


def complexity_by_level(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """Means of `pipeline.complexity` over the scenarios of the evaluated tasks, each built at every level."""
  ids = task_ids(config)
  rows = []
  for level in config.env.levels:
    values = [pipeline.complexity(task_spec(i, config.env, level)) for i in ids]
    rows.append({"level": level, "operators": "base (integrated)" if level == 0 else
                 "+ " + pipeline.OPERATORS[level - 1].replace("_", " "), "scenarios": len(ids),
                 **{k: sum(v[k] for v in values) / len(values) for k in values[0]}})
  return rows


def _row(name: str, eps: list[dict[str, Any]]) -> dict[str, Any]:
  n = len(eps)
  return {"group": name, "episodes": n,
          **{k: sum(e[k] for e in eps) / n for k in ("solve_p", "solve_r", "solve_f1")},
          "answer_accuracy": 100.0 * sum(e["answer_matched"] for e in eps) / n,
          "reward_per_response": sum(sum(e["rewards"]) for e in eps) / max(1, sum(len(e["rewards"]) for e in eps)),
          "calls_per_episode": sum(e["calls"] for e in eps) / n,
          # episodes an environment error ended: in the means as failures, and named here so they show
          "errors": sum(1 for e in eps if e.get("error")),
          "wall_s_per_episode": sum(e["wall_s"] for e in eps) / n}


def summarize(episodes: list[dict[str, Any]], config: ml_collections.ConfigDict) -> dict[str, Any]:
  by_type: dict[str, list] = collections.defaultdict(list)
  by_level: dict[int, list] = collections.defaultdict(list)
  for e in episodes:
    if e["level"] is None:  # the environment failed at reset: the episode counts in "all" (as an error) only
      continue
    by_type[e["type"]].append(e)
    by_level[e["level"]].append(e)
  rows = [_row(f"type: {t}", by_type[t]) for t in pipeline.SCENARIO_TYPES if t in by_type]
  rows += [_row(f"level {lv}: " + ("base" if lv == 0 else "+ " + pipeline.OPERATORS[lv - 1].replace("_", " ")),
                by_level[lv]) for lv in sorted(by_level)]
  rows.append(_row("all", episodes))
  return {"policy": config.policy, "levels": list(config.env.levels), "tasks_per_cell": config.tasks_per_cell,
          "task_offset": config.task_offset, "source": config.llm.source if config.policy == "llm" else "",
          "rows": rows, "paper_solve_f1": PAPER}


def markdown(results: dict[str, Any]) -> str:
  cols = ("group", "episodes", "solve_p", "solve_r", "solve_f1", "answer_accuracy", "reward_per_response",
          "calls_per_episode", "errors")
  source = f" ({results['source']})" if results.get("source") else ""
  lines = [f"Policy: {results['policy']}{source}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for row in results["rows"]:
    lines.append("| " + " | ".join(f"{row[c]:.2f}" if c == "reward_per_response" else
                                   f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in cols) + " |")
  if results.get("complexity"):
    keys = ("level", "operators", "tools", "required_args", "args", "enum_choices", "depth", "score")
    lines += ["", f"Static complexity of the {results['complexity'][0]['scenarios']} evaluated scenarios, each built "
              "at every level (pipeline.complexity, means):", "",
              "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in results["complexity"]:
      lines.append("| " + " | ".join(f"{row[k]:.1f}" if isinstance(row[k], float) else str(row[k]) for k in keys)
                   + " |")
  paper = results["paper_solve_f1"]
  lines += ["", f"Paper (Solve-F1, its own test set): Qwen3-8B {paper['qwen3_8b_base']} -> {paper['qwen3_8b_grpo']} "
            f"with GRPO; GPT-4o {paper['gpt_4o']}."]
  return "\n".join(lines)
