"""The text-environment interface every AgentGym-style environment implements (AgentGym-RL, arXiv 2509.08755,
its environment module: each environment is a service with create / reset / observation / step /
close, where an action is the agent's text and a step returns observation, reward, done and info).

One `TextEnv` instance is one episode slot: `reset(task_id)` builds the task deterministically from its id, and
`step(action)` advances it. The base class owns what every environment must do identically:
* bad actions never crash: an action the environment cannot parse or carry out raises `InvalidAction` inside
  `_step`, and the agent sees "Invalid action: <why>" with reward 0 and the episode going on;
* an action longer than `max_action_chars` (when set; the pool sets it from its config) is a bad action too,
  refused before any parsing;
* an action that settles the task wrongly (ScienceWorld's wrong `focus`) raises `EpisodeFailed` inside `_step`:
  the episode ends there with reward 0 and the exception's message as the observation;
* a step after the episode ended, or past `max_steps`, returns a terminal observation instead of an error;
* `info` always holds `progress` (share of the task's sub-goals reached so far, never decreasing), `success`,
  `steps` and `invalid`, so a trainer can log partial progress without knowing the environment.
Each environment also provides `oracle(task_id)`: a scripted policy that reads only observation text (so it runs
over HTTP as well as in-process) and solves every task; tests check its success rate is 100%.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import re
from typing import Any, ClassVar, Protocol


class InvalidAction(ValueError):
  """The agent's action cannot be parsed or carried out; the message is shown to the agent."""


class EpisodeFailed(Exception):
  """The agent's action settled the task wrongly; the episode ends with reward 0. The message is shown to it."""


class EnvProtocolError(RuntimeError):
  """A caller broke the protocol (e.g. step before reset): a bug in the caller, not the agent's mistake."""


@dataclasses.dataclass(frozen=True)
class StepResult:
  observation: str
  reward: float
  done: bool
  info: dict[str, Any]

  def to_json(self) -> dict[str, Any]:
    return {"observation": self.observation, "reward": self.reward, "done": self.done, "info": self.info}

  @classmethod
  def from_json(cls, data: dict[str, Any]) -> "StepResult":
    """Raises ValueError for a reward that is not a finite number (JSON parsers accept NaN and Infinity, and one
    such reward would make a whole group's advantages NaN) or a `done` that is not a boolean (`bool("false")` is
    True)."""
    reward, done = data["reward"], data["done"]
    if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
      raise ValueError(f"reward {reward!r} is not a finite number")
    if not isinstance(done, bool):
      raise ValueError(f"done {done!r} is not a boolean")
    return cls(str(data["observation"]), float(reward), done, dict(data.get("info") or {}))


class Oracle(Protocol):
  """A scripted policy: the next action given the latest observation text."""

  def act(self, observation: str) -> str:
    ...


def check_settings(env: str, checks: list[tuple[bool, str]]) -> None:
  """Raises one ValueError naming every failed setting of environment `env` (`checks`: (holds, requirement))."""
  failed = [requirement for holds, requirement in checks if not holds]
  if failed:
    raise ValueError(f"bad {env} env_config: {'; '.join(failed)}. Fix: pass valid --config.env_config.<key> "
                     "values (or the serve config's env_config).")


def int_at_least(value: Any, low: int) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= low


def integers_at_least(config: Any, minimums: dict[str, int]) -> list[tuple[bool, str]]:
  """`check_settings` entries for integer settings with a lower bound each."""
  return [(int_at_least(config[key], low), f"{key} must be an integer >= {low}, got {config[key]!r}")
          for key, low in minimums.items()]


class PlanOracle:
  """The oracle of a deterministic world: replays a plan made from the task alone, then repeats its last action."""

  def __init__(self, plan: list[str]):
    if not plan:
      raise ValueError("PlanOracle needs a plan of at least one action.")
    self._plan = list(plan)
    self._next = 0

  def act(self, observation: str) -> str:
    del observation  # the world is deterministic, so the plan needs no feedback
    action = self._plan[min(self._next, len(self._plan) - 1)]
    self._next += 1
    return action


_SPACES = re.compile(r"\s+")


def normalize_action(action: str) -> str:
  """Lower case, single spaces, no surrounding quotes or trailing full stop: models write "Move forward."."""
  text = _SPACES.sub(" ", action).strip().strip("`'\"").strip()
  if text.endswith(".") and not text.endswith(".."):
    text = text[:-1].rstrip()
  return text.lower()


class TextEnv(abc.ABC):
  """Base class: subclasses implement `_reset`, `_step`, `_progress`, `oracle` and `instructions`."""

  name: ClassVar[str]
  max_action_chars: int | None = None

  def __init__(self, max_steps: int):
    if max_steps < 1:
      raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
    self.max_steps = max_steps
    self.task_id: int | None = None
    self._observation = ""
    self._steps = 0
    self._done = False
    self._success = False
    self._best_progress = 0.0

  # -- what subclasses implement -------------------------------------------------------------------------------
  @abc.abstractmethod
  def _reset(self, task_id: int) -> tuple[str, dict[str, Any]]:
    """Builds task `task_id`; returns the first observation (the task and the current view) and task info."""

  @abc.abstractmethod
  def _step(self, action: str) -> tuple[str, bool]:
    """Carries out a normalised action; returns (observation, success). Raises InvalidAction for bad ones."""

  @abc.abstractmethod
  def _progress(self) -> float:
    """Share in [0, 1] of the task's sub-goals reached in the current state."""

  @abc.abstractmethod
  def oracle(self, task_id: int) -> Oracle:
    """A scripted policy that solves task `task_id` from observation text alone."""

  @abc.abstractmethod
  def instructions(self) -> str:
    """How to act in this environment: the action formats, for the agent's prompt."""

  # -- the protocol --------------------------------------------------------------------------------------------
  def reset(self, task_id: int) -> StepResult:
    if not isinstance(task_id, int) or isinstance(task_id, bool) or task_id < 0:
      raise EnvProtocolError(f"task id must be an integer >= 0, got {task_id!r}.")
    self.task_id = task_id
    self._steps = 0
    self._done = False
    self._success = False
    self._best_progress = 0.0
    observation, task_info = self._reset(task_id)
    self._observation = observation
    return StepResult(observation, 0.0, False, {**self._info(invalid=False), "task": task_info})

  def observation(self) -> str:
    if self.task_id is None:
      raise EnvProtocolError("observation() before reset(): call reset(task_id) first.")
    return self._observation

  def step(self, action: str) -> StepResult:
    if self.task_id is None:
      raise EnvProtocolError("step() before reset(): call reset(task_id) first.")
    if self._done:
      return StepResult("The episode is over; reset to start a new task.", 0.0, True, self._info(invalid=True))
    self._steps += 1
    invalid = failed = False
    try:
      if self.max_action_chars is not None and len(action) > self.max_action_chars:
        raise InvalidAction(f"the action is {len(action)} characters long; the limit is {self.max_action_chars}.")
      if not action.isascii():
        try:  # JSON can carry a lone UTF-16 surrogate, which no reply could then echo back as UTF-8
          action.encode("utf-8")
        except UnicodeEncodeError:
          raise InvalidAction("the action holds characters that are not valid Unicode text (an unpaired "
                              "surrogate).") from None
      observation, success = self._step(normalize_action(action))
    except InvalidAction as e:
      observation, success, invalid = f"Invalid action: {e}", False, True
    except EpisodeFailed as e:
      observation, success, failed = str(e), False, True
    reward = 0.0
    if success:
      self._success = self._done = True
      reward = 1.0
    elif failed:
      self._done = True
    elif self._steps >= self.max_steps:
      self._done = True
      observation += f"\nYou have used all {self.max_steps} steps; the episode is over."
    self._observation = observation
    return StepResult(observation, reward, self._done, self._info(invalid=invalid))

  def _info(self, invalid: bool) -> dict[str, Any]:
    if self._success:
      self._best_progress = 1.0
    else:
      self._best_progress = max(self._best_progress, float(self._progress()))
    return {"progress": self._best_progress, "success": self._success, "steps": self._steps,
            "invalid": invalid}
