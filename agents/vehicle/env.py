"""VehicleWorld as a text environment on the agents' protocol (AgentGym-style `TextEnv`; arXiv 2509.06736,
Sec. 4-5: one episode is one task, its turns in order, under one interface: FC, SFC or FC+SFC).

Each turn shows the passenger's request; the agent acts until it ends the turn (a plain-text reply, `finish`,
an SFC patch that applies without rejections, or the per-turn step budget). At the end of a turn the paper's
metrics compare the gold before/after states with the agent's (`metrics.turn_metrics`); the car carries the
agent's state into the next turn. The episode succeeds when every turn does; `info["progress"]` is the summed
change accuracy of finished turns over the number of turns (a partial-credit signal for RL), and
`info["turn_metrics"]` lists each finished turn's metrics and token count. When the episode's step budget ends
it before the last turn, the turn in progress is scored as it stands (`"status": "cut"`) and every turn not
reached gets a record in which nothing changed and nothing succeeded (`"status": "unreached"`), so means over
turns count every turn of the task (the paper scores each turn of a task).
"""

from __future__ import annotations

import json
import re
from typing import Any

import ml_collections

from agents.envs.base import InvalidAction, TextEnv
from agents.vehicle import interfaces, metrics, tasks
from agents.vehicle.catalog import load_schema
from agents.vehicle.interfaces import Action
from agents.vehicle.world import VehicleWorld, WorldError, api_doc
from core.config import section

_TURN = re.compile(r"Turn (\d+) of (\d+)\. User:")


def vehicle_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The environment section: interface, step budgets, selection limit, and the task generator."""
  return section("vehicle", dict(interface="sfc", max_steps=40, max_steps_per_turn=8, max_modules=6,
                                 max_actions_per_step=10, tasks=tasks.tasks_config()), overrides)


class VehicleEnv(TextEnv):
  name = "vehicle"

  def __init__(self, config: ml_collections.ConfigDict | None = None):
    config = config or vehicle_config()
    if config.interface not in interfaces.INTERFACES:
      raise ValueError(f"vehicle.interface = {config.interface!r}; valid: {', '.join(interfaces.INTERFACES)}.")
    super().__init__(config.max_steps)
    self.config = config
    self.schema = load_schema()
    self.interface = config.interface
    self.module_lines = "\n".join(f"- {m.name}: {m.description}" for m in self.schema.modules.values()
                                  if m.name != "environment")
    self._system = interfaces.system_prompt(self.interface, self.module_lines, config.max_modules)

  # -- TextEnv -----------------------------------------------------------------------------------------------
  def instructions(self) -> str:
    return self._system

  def oracle(self, task_id: int) -> "VehicleOracle":
    return VehicleOracle(tasks.make_task(task_id, self.config.tasks), self.interface)

  def _reset(self, task_id: int) -> tuple[str, dict[str, Any]]:
    self.task = tasks.make_task(task_id, self.config.tasks)
    self.world = VehicleWorld(self.task.initial, self.schema)
    self.turn = 0
    self.turn_results: list[dict[str, Any]] = []
    self._start_turn()
    observation = self._turn_header()
    self._tokens += metrics.count_tokens(self._system)  # the instructions are read once, in the first turn
    self._tokens += metrics.count_tokens(observation)
    info = {"split": self.task.split, "turns": len(self.task.turns), "interface": self.interface}
    return observation, info

  def _progress(self) -> float:
    return sum(r["change_accuracy"] for r in self.turn_results) / len(self.task.turns)

  def _step(self, action: str) -> tuple[str, bool]:
    # The base class lower-cases actions; JSON keys and values are case-sensitive, so read the raw text.
    raw = self._raw_action if self._raw_action is not None else action
    self._raw_action = None
    self._tokens += metrics.count_tokens(raw)
    self._turn_steps += 1
    try:
      actions = interfaces.parse_action(raw, self.interface, self.config.max_actions_per_step)
    except InvalidAction as e:
      return self._invalid_step(e)
    lines: list[str] = []
    ended = False
    for i, a in enumerate(actions):
      try:
        text, ended = self._act(a)
      except InvalidAction as e:
        if i == 0:  # nothing of this step took effect: an invalid step, as a parse error is
          return self._invalid_step(e)
        text, ended = f"Invalid action: {e}", False  # the actions before it took effect: report them all
      lines.append(text)
      if ended:
        break
    observation = "\n".join(lines)
    self._tokens += metrics.count_tokens(observation)
    if ended:
      return self._end_turn(observation)
    if self._turn_steps >= self.config.max_steps_per_turn:
      return self._end_turn(observation + "\nThe step budget of this turn is used up.")
    return observation, False

  def _invalid_step(self, error: InvalidAction):
    """A step none of whose actions took effect: it still spends the turn's step budget."""
    self._tokens += metrics.count_tokens(str(error))
    if self._turn_steps >= self.config.max_steps_per_turn:
      return self._end_turn(f"Invalid action: {error}\nThe step budget of this turn is used up.")
    raise error

  def step(self, action: str):
    self._raw_action = action
    return super().step(action)

  # -- turns -------------------------------------------------------------------------------------------------
  def _start_turn(self) -> None:
    self._turn_before = dict(self.world.state)
    self._turn_steps = 0
    self._tokens = 0
    self._raw_action = None
    self.selected: tuple[str, ...] | None = None

  def _turn_header(self) -> str:
    return f"Turn {self.turn + 1} of {len(self.task.turns)}. User: {self.task.turns[self.turn].instruction}"

  def _end_turn(self, observation: str) -> tuple[str, bool]:
    gold_before = self.task.state_before(self.turn)
    gold_after = self.task.state_after(self.turn)
    m = self._score_turn(gold_before, gold_after)
    self.turn_results.append({**m.to_json(), "tokens": self._tokens, "steps": self._turn_steps, "status": "done"})
    self.turn += 1
    if self.turn < len(self.task.turns):
      self._start_turn()
      header = self._turn_header()
      self._tokens += metrics.count_tokens(header)
      return f"{observation}\n{header}", False
    success = all(r["success"] for r in self.turn_results)
    if not success:
      self._done = True  # the last turn is over: the episode ends without success
    return observation + "\nAll turns are done.", success

  def _score_turn(self, gold_before, gold_after) -> metrics.TurnMetrics:
    turn = self.task.turns[self.turn]
    targets = tasks.targets_from(self.world.schema, turn, self._turn_before)
    return metrics.turn_metrics(gold_before, gold_after, self._turn_before, self.world.state, turn.relative,
                                targets=targets)

  def _close_turns(self) -> None:
    """The episode ended before its last turn did (the episode's step budget): score the turn in progress as
    it stands and give each turn not reached a record in which nothing changed."""
    if self.turn < len(self.task.turns) and len(self.turn_results) == self.turn:
      if self._turn_steps:
        m = self._score_turn(self.task.state_before(self.turn), self.task.state_after(self.turn))
        status = "cut"
      else:  # the turn had just begun: the agent never acted in it
        m = metrics.unreached_turn(self.task.state_before(self.turn), self.task.state_after(self.turn))
        status = "unreached"
      self.turn_results.append({**m.to_json(), "tokens": self._tokens, "steps": self._turn_steps,
                                "status": status})
    for t in range(len(self.turn_results), len(self.task.turns)):
      m = metrics.unreached_turn(self.task.state_before(t), self.task.state_after(t))
      self.turn_results.append({**m.to_json(), "tokens": 0, "steps": 0, "status": "unreached"})

  def _info(self, invalid: bool) -> dict[str, Any]:
    if getattr(self, "task", None) is not None and self._done and len(self.turn_results) < len(self.task.turns):
      self._close_turns()
    info = super()._info(invalid)
    if getattr(self, "task", None) is not None:
      info["turn_metrics"] = list(self.turn_results)
      info["turn"] = self.turn
    return info

  # -- actions -----------------------------------------------------------------------------------------------
  def _act(self, a: Action) -> tuple[str, bool]:
    if a.kind == "finish":
      return ("Turn ended." if not a.text else f"Turn ended. Your reply: {a.text[:200]}"), True
    if a.kind == "list_modules":
      return "Modules:\n" + "\n".join(f"- {m.name}: {m.description}" for m in self.schema.modules.values()), False
    if a.kind == "list_apis":
      module = self.schema.modules.get(a.name)
      if module is None:
        raise InvalidAction(self.schema.unknown_path_message(a.name))
      if self.interface == "fc_sfc" and not self._selectable(a.name):
        raise InvalidAction(f"module {a.name} is not selected; select it first.")
      return self._api_list(a.name), False
    if a.kind == "select":
      return self._select(a.modules), False
    if a.kind == "patch":
      if self.selected is None:
        raise InvalidAction('select modules first: {"select": ["seat", ...]}.')
      result = self.world.apply_patch(a.patch, modules=self.selected)
      return result.message(), not result.errors
    # an API call
    try:
      api = self.world.api(a.name)
      if self.interface == "fc_sfc":
        if self.selected is None:
          raise InvalidAction('select modules first: {"select": ["seat", ...]}.')
        if not self._selectable(api.module):
          return f"{a.name}: module {api.module} is not selected; select it to use its APIs.", False
      return f"{a.name}: {self.world.call(a.name, a.arguments).message()}", False
    except WorldError as e:
      return f"{a.name}: refused: {e}", False

  def _selectable(self, module: str) -> bool:
    return module == "environment" or (self.selected is not None and module in self.selected)

  def _select(self, modules: tuple[str, ...]) -> str:
    names = []
    for m in modules:
      if m not in self.schema.modules:
        raise InvalidAction(self.schema.unknown_path_message(m))
      if m != "environment" and m not in names:
        names.append(m)
    if len(names) > self.config.max_modules:
      raise InvalidAction(f"{len(names)} modules selected; select at most {self.config.max_modules}.")
    self.selected = tuple(names)
    parts = [f"Selected: {', '.join(names) or '(none)'}. State:", self.world.describe(["environment", *names])]
    if self.interface == "fc_sfc":
      parts += ["APIs:"] + [self._api_list(m) for m in ["environment", *names]]
    return "\n".join(parts)

  def _api_list(self, module: str) -> str:
    unit = self.world.temperature_unit
    return "\n".join(f"- {api_doc(api, unit, self.schema)}" for api in self.schema.modules[module].apis)


class VehicleOracle:
  """The scripted policy that scores 100: it knows the task's gold plan (it is built from the task id, as
  every task is) and reads the turn number from the observations, so it runs over HTTP too."""

  def __init__(self, task: tasks.Task, interface: str):
    self.task = task
    self.interface = interface
    self.turn = -1
    self.plan: list[str] = []

  def _plan(self, turn: tasks.Turn) -> list[str]:
    calls = json.dumps([c.to_json() for c in turn.calls])
    if self.interface == "fc":
      return [calls, "Done."]
    if self.interface == "sfc":
      return [json.dumps({"select": turn.patch_modules}), json.dumps({"patch": turn.patch})]
    return [json.dumps({"select": turn.api_modules}), calls, "Done."]

  def act(self, observation: str) -> str:
    turns = _TURN.findall(observation)
    if turns:
      t = int(turns[-1][0]) - 1
      if t != self.turn:
        self.turn = t
        self.plan = self._plan(self.task.turns[t])
    if not self.plan:
      return "Done."
    return self.plan.pop(0)
