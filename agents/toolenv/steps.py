"""Step-level RL prompts (arXiv 2508.08791, Sec. 3.3): the intermediate states of the model's own trajectories
become training prompts, each scored by the per-response reward from that state.

`step_prompts(task_id, responses)` replays a trajectory (the model's responses in order) in a fresh environment
and returns, for every step, the conversation so far and the environment state (which sub-questions are
solved, how many calls were made, which calls were made: a repeat solves nothing). `score_step(prompt, response)` puts a fresh environment into that state and
returns the reward a new response would get there: what a GRPO-style trainer samples several responses for.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import ml_collections

from agents.envs.base import StepResult
from agents.toolenv.env import ToolEnv, toolenv_config


@dataclasses.dataclass(frozen=True)
class StepPrompt:
  task_id: int
  step: int
  messages: tuple[dict[str, str], ...]  # [system,] first observation, then (assistant, user) pairs so far
  solved: tuple[int, ...]
  calls: int
  seen_calls: tuple[str, ...] = ()  # `env.call_signature` of each call made so far


def _reset(task_id: int, config: ml_collections.ConfigDict | None) -> tuple[ToolEnv, list[dict[str, str]]]:
  """A fresh environment on `task_id` and the messages a policy sees first ([system,] first observation)."""
  env = ToolEnv(config or toolenv_config())
  result = env.reset(task_id)
  system = [{"role": "system", "content": env.instructions()}] if env.instructions() else []
  return env, system + [{"role": "user", "content": result.observation}]


def _state(task_id: int, step: int, env: ToolEnv, messages: Sequence[dict[str, str]]) -> StepPrompt:
  return StepPrompt(task_id, step, tuple(dict(m) for m in messages), tuple(sorted(env.solved)), env.calls,
                    tuple(sorted(env.seen_calls)))


def first_prompt(task_id: int, config: ml_collections.ConfigDict | None = None) -> StepPrompt:
  """The task's initial state, before any response: the first prompt of every trajectory."""
  env, messages = _reset(task_id, config)
  return _state(task_id, 0, env, messages)


def step_prompts(task_id: int, responses: Sequence[str],
                 config: ml_collections.ConfigDict | None = None) -> list[StepPrompt]:
  """One prompt per step of the trajectory `responses` (stops where the episode ended)."""
  env, messages = _reset(task_id, config)
  out = []
  for step, response in enumerate(responses):
    out.append(_state(task_id, step, env, messages))
    result = env.step(response)
    if result.done:
      break
    messages += [{"role": "assistant", "content": response}, {"role": "user", "content": result.observation}]
  return out


def step_result(prompt: StepPrompt, response: str, config: ml_collections.ConfigDict | None = None) -> StepResult:
  """What the environment answers to `response` given in the state of `prompt` (reward, done, Solve counts)."""
  env = ToolEnv(config or toolenv_config())
  env.reset_to(prompt.task_id, prompt.solved, prompt.calls, prompt.seen_calls)
  return env.step(response)


def score_step(prompt: StepPrompt, response: str, config: ml_collections.ConfigDict | None = None) -> float:
  """The reward of `response` given in the state of `prompt`."""
  return step_result(prompt, response, config).reward
