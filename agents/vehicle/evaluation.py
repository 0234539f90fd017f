"""The VehicleWorld evaluation (arXiv 2509.06736, Sec. 5, Tables 2-3): a policy runs the tasks under each
interface; the table reports change accuracy, F1-positive, F1-negative and turn success (means over turns, %),
task success, tokens and wall time per task, by interface and split.

The environment is reached through the agents' protocol: in-process (`LocalEnvClient` over an `EnvPool`) by
default, or a running `python -m agents.serve --config configs/agents/serve.py:vehicle` server by URL
(`env_url`; one interface per server). `evaluate(config, workdir)` is what the entrypoint, tests and the
quick report call; it writes `results.json`, `results.md` and `episodes.jsonl` to the workdir.
"""

from __future__ import annotations

import collections
import json
import os
import time
from typing import Any

import ml_collections
import tqdm

from agents.envs import EnvSession, HttpEnvClient, LocalEnvClient, check_server_matches, make_pool, pool_config
from agents.vehicle import interfaces, metrics, policies, tasks
from agents.vehicle.catalog import load_schema
from agents.vehicle.env import VehicleEnv
from agents.vehicle.schema import SPLITS
from core import config as config_lib

PAPER = {  # Sec. 5 (averages over models / Qwen2.5-32B), as the issue quotes them
    "fc_avg": 51.1, "sfc_avg": 61.5, "qwen32b_fc": 46.4, "qwen32b_sfc": 57.5, "qwen32b_fc_sfc": 71.4}


def validate_config(config: ml_collections.ConfigDict) -> None:
  config_lib.check_choice(config, "policy", ("oracle", "random", "llm", "http"))
  for i, name in enumerate(config.interfaces):
    if name not in interfaces.INTERFACES:
      raise config_lib.ConfigError(f"config.interfaces[{i}] = {name!r} is invalid: valid interfaces are "
                                   f"{', '.join(interfaces.INTERFACES)}. Fix: --config.interfaces=\"('fc', 'sfc')\".")
  for i, name in enumerate(config.splits):
    if name not in SPLITS:
      raise config_lib.ConfigError(f"config.splits[{i}] = {name!r} is invalid: valid splits are {', '.join(SPLITS)}.")
  if config.tasks_per_split < 1:
    raise config_lib.ConfigError(f"config.tasks_per_split = {config.tasks_per_split} is invalid: must be >= 1.")
  for key in ("interfaces", "splits"):  # a repeat would run (and count) the same episodes twice
    if len(set(config[key])) != len(config[key]):
      raise config_lib.ConfigError(f"config.{key} = {tuple(config[key])!r} names an entry twice. Fix: list each once.")
  # Tasks are drawn so that each turn needs at most env.tasks.max_modules modules; an agent allowed fewer could
  # not solve some of them, and even the oracle's table would drop below 100 with no error shown.
  config_lib.check(config, "env.max_modules", lambda m: m >= config.env.tasks.max_modules,
                   f"must be >= env.tasks.max_modules = {config.env.tasks.max_modules} (the most modules a task's "
                   "turn needs)", f"pass --config.env.max_modules={config.env.tasks.max_modules} (or lower "
                   "env.tasks.max_modules too, which draws other tasks)")
  # Task ids count from 0: a negative first task would make every episode fail at reset, an all-zero table.
  config_lib.check(config, "first_task", lambda t: isinstance(t, int) and t >= 0, "must be a task id >= 0",
                   "pass --config.first_task=0 (or another id >= 0)")
  if config.env_url and len(config.interfaces) != 1:
    raise config_lib.ConfigError("config.env_url serves one interface: set --config.interfaces=\"('sfc',)\" to the "
                                 "interface the server was started with.")
  if config.policy == "http" and not config.http.url:
    raise config_lib.ConfigError("config.http.url is empty. Fix: --config.http.url=http://host:port/v1.")


def task_ids(config: ml_collections.ConfigDict) -> list[int]:
  """`tasks_per_split` ids of each chosen split (ids i with i % 4 the split's index), from `first_task` on."""
  out = []
  for split in config.splits:
    s = SPLITS.index(split)
    start = config.first_task + ((s - config.first_task) % len(SPLITS))
    out.extend(range(start, start + len(SPLITS) * config.tasks_per_split, len(SPLITS)))
  return sorted(out)


def run_episode(session_client, task_id: int, policy: policies.Policy, interface: str, system: str,
                max_steps: int) -> dict[str, Any]:
  """One task with one policy; returns the episode record (metrics per turn, tokens, time, transcript)."""
  start = time.perf_counter()
  policy.start(task_id, interface)
  prompt_tokens = completion_tokens = steps = invalid = 0
  transcript = []
  turns: list[dict[str, Any]] = []
  with EnvSession(session_client, task_id=task_id) as session:
    result = session.start()
    messages = [{"role": "system", "content": system}, {"role": "user", "content": result.observation}]
    while not result.done and steps < max_steps:
      reply = policy.act(messages)
      prompt_tokens += reply.prompt_tokens
      completion_tokens += reply.completion_tokens
      result = session.step(reply.text)
      steps += 1
      invalid += bool(result.info.get("invalid"))
      turns = result.info.get("turn_metrics", turns)  # a failed environment answers with `error` only
      transcript.append({"action": reply.text, "observation": result.observation[:2000]})
      messages += [{"role": "assistant", "content": reply.text}, {"role": "user", "content": result.observation}]
  info = result.info
  return {"task_id": task_id, "interface": interface, "turns": list(turns),
          "success": bool(info.get("success")), "error": info.get("error"), "steps": steps,
          "invalid_actions": invalid, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
          "wall_s": time.perf_counter() - start, "transcript": transcript}


def complete_turns(record: dict[str, Any], task: tasks.Task) -> dict[str, Any]:
  """Every turn of the task in `record["turns"]`: a turn without a record (the environment failed, or the policy
  loop stopped, before the environment scored it) counts as a turn in which nothing changed, so a broken or
  cut-short episode lowers the means instead of dropping out of them."""
  turns = list(record["turns"])[:len(task.turns)]
  for t in range(len(turns), len(task.turns)):
    m = metrics.unreached_turn(task.state_before(t), task.state_after(t))
    turns.append({**m.to_json(), "tokens": 0, "steps": 0, "status": "unscored"})
  if len(turns) > len(record["turns"]):
    record["success"] = False
  record["turns"] = turns
  return record


def evaluate(config: ml_collections.ConfigDict, workdir: str | None) -> dict[str, Any]:
  if config.env_url:
    check_server(config)  # before the policy loads (a model takes a while) and before any episode
  policy = policies.make_policy(config)
  try:
    return _evaluate(config, workdir, policy)
  finally:
    if hasattr(policy, "close"):
      policy.close()  # the HTTP policy's connection pool


def interface_env_config(config: ml_collections.ConfigDict, interface: str) -> ml_collections.ConfigDict:
  """The environment section an interface's episodes run under: `config.env` with that interface."""
  env_config = ml_collections.ConfigDict(config.env.to_dict())
  env_config.interface = interface
  return env_config


def check_server(config: ml_collections.ConfigDict) -> None:
  """Fails unless the server at `config.env_url` runs the vehicle environment with the section the evaluation
  scores against (`interface_env_config` of the one evaluated interface): the tasks and the scoring are local,
  so another environment, interface or task generator there would give a table of zeros and no error."""
  (interface,) = config.interfaces  # validate_config: one interface per server
  with HttpEnvClient(config.env_url) as client:
    health = client.health()
  served = (health.get("env_config") or {}).get("interface")
  other_interface = (f", or evaluate the interface it serves (--config.interfaces=\"('{served}',)\")"
                     if served and served != interface else "")
  check_server_matches(health, config.env_url, "vehicle", interface_env_config(config, interface), other_interface)


def _evaluate(config: ml_collections.ConfigDict, workdir: str | None, policy: policies.Policy) -> dict[str, Any]:
  ids = task_ids(config)
  episodes: list[dict[str, Any]] = []
  log = _EpisodeLog(workdir)
  for interface in config.interfaces:
    env_config = interface_env_config(config, interface)
    system = VehicleEnv(env_config).instructions()
    if config.env_url:
      client = HttpEnvClient(config.env_url)
    else:
      client = LocalEnvClient(make_pool("vehicle", env_config, pool_config(step_timeout_s=0.0)))
    with client:
      bar = tqdm.tqdm(ids, desc=f"{config.policy} {interface}", unit="task", disable=not config.progress_bar)
      for task_id in bar:
        record = run_episode(client, task_id, policy, interface, system, env_config.max_steps)
        complete_turns(record, tasks.make_task(task_id, env_config.tasks))
        record["split"] = SPLITS[task_id % len(SPLITS)]
        episodes.append(record)
        log.write(record)
  results = summarize(episodes, config)
  if workdir:
    write_results(results, workdir)
  return results


class _EpisodeLog:
  """`episodes.jsonl`, one line per finished episode, written as the run goes (a stopped model run keeps them)."""

  def __init__(self, workdir: str | None):
    self.path = os.path.join(workdir, "episodes.jsonl") if workdir else None
    if self.path:
      os.makedirs(workdir, exist_ok=True)
      open(self.path, "w").close()

  def write(self, record: dict[str, Any]) -> None:
    if self.path:
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")


def summarize(episodes: list[dict[str, Any]], config: ml_collections.ConfigDict) -> dict[str, Any]:
  groups: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
  for e in episodes:
    groups[(e["interface"], e["split"])].append(e)
    groups[(e["interface"], "all")].append(e)
  rows = []
  for (interface, split), eps in sorted(groups.items(), key=lambda kv: (interfaces.INTERFACES.index(kv[0][0]),
                                                                       (list(SPLITS) + ["all"]).index(kv[0][1]))):
    turns = [t for e in eps for t in e["turns"]]
    row = {"interface": interface, "split": split, "tasks": len(eps), "turns": len(turns),
           **metrics.mean_metrics(turns),
           "task_success": 100.0 * sum(e["success"] for e in eps) / len(eps),
           "env_tokens_per_task": sum(t["tokens"] for t in turns) / len(eps),
           "policy_tokens_per_task": sum(e["prompt_tokens"] + e["completion_tokens"] for e in eps) / len(eps),
           "steps_per_task": sum(e["steps"] for e in eps) / len(eps),
           "invalid_actions_per_task": sum(e["invalid_actions"] for e in eps) / len(eps),
           # episodes an environment error ended: counted in the means as failures, and named here so they show
           "errors": sum(1 for e in eps if e.get("error")),
           "wall_s_per_task": sum(e["wall_s"] for e in eps) / len(eps)}
    rows.append(row)
  counts = load_schema().counts()
  return {"policy": config.policy, "interfaces": list(config.interfaces), "splits": list(config.splits),
          "tasks_per_split": config.tasks_per_split, "world": counts, "rows": rows, "paper": PAPER}


COLUMNS = (("interface", "interface"), ("split", "split"), ("tasks", "tasks"), ("change_accuracy", "change acc"),
           ("f1_positive", "F1+"), ("f1_negative", "F1-"), ("success", "turn success"),
           ("task_success", "task success"), ("env_tokens_per_task", "env tokens/task"),
           ("policy_tokens_per_task", "policy tokens/task"), ("wall_s_per_task", "wall s/task"),
           ("errors", "env errors"))


def markdown(results: dict[str, Any]) -> str:
  lines = [f"Policy: {results['policy']}; world: {results['world']['modules']} modules, "
           f"{results['world']['apis']} APIs, {results['world']['properties']} properties.", "",
           "| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  for row in results["rows"]:
    cells = []
    for key, _ in COLUMNS:
      v = row[key]
      cells.append(f"{v:.2f}" if key == "wall_s_per_task" else f"{v:.1f}" if isinstance(v, float) else str(v))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write_results(results: dict[str, Any], workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(markdown(results) + "\n")
