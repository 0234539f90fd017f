"""A generated tool-use environment on the agents' protocol (arXiv 2508.08791, Sec. 3: the environment an RL
rollout talks to; AgentGym-style `TextEnv`).

Task `task_id` is built from the id alone: scenario type `SCENARIO_TYPES[task_id % 4]`, complexity level
`levels[(task_id // 4) % len(levels)]`, facts from `random.Random(f"toolenv-{seed}-{task_id}")`, then the
pipeline's five stages. Neighbouring ids draw different facts: level k of task i is not level 0 of the same
question (`pipeline.build` gives the same scenario at every level only for one seed). The first observation lists
the tools (OpenAI function format) and the question; each step is one model response: tool calls (answered with
`<tool_response>` blocks) or a final answer (ends the episode). `StepResult.reward` is the paper's per-response
reward (`reward.response_reward`), and `info` carries the Solve counts and the Solve-P/R/F1 of the episode so far.

A response may write any number of calls; the first `max_calls_per_step` run and the rest are answered with a note,
but every written call counts in n (reward 2s/(n+1)) and in Solve-P, so padding a response with calls never pays.
An exact repeat of an earlier call of the episode (same name and arguments) solves nothing.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import ml_collections

from agents.envs.base import InvalidAction, StepResult, TextEnv
from agents.toolenv import pipeline, reward
from agents.toolenv.knowledge import load_knowledge
from agents.toolenv.runtime import deploy
from core.config import section
from core.data.quiz import QUIZ_DIR


def toolenv_config(**overrides: Any) -> ml_collections.ConfigDict:
  """Every number of the tool environments: seed, complexity levels cycled over task ids, budgets, and whether
  a model policy also gets the instructions as a system message (`instructions_as_system`; they always open the
  first observation). False leaves the chat template's own system message, which is what `agents.rollout`
  (empty `rollout.system_prompt`) and the policy's warm start see: step-level RL and evaluations of RL-trained
  policies set it False so that every stage shows the model the same prompt. `quiz_dir` is the folder of the
  bsdgames quiz files the facts come from (an `index` and the files it names)."""
  return section("toolenv", dict(seed=0, levels=pipeline.LEVELS, extra_tools=4, max_steps=8, max_calls_per_step=8,
                                 time_limit_s=2.0, instructions_as_system=True, quiz_dir=QUIZ_DIR), overrides)


def task_spec(task_id: int, config: ml_collections.ConfigDict, level: int | None = None) -> pipeline.EnvSpec:
  """The environment of task `task_id` (stages 1-4); `level` builds its scenario at another complexity level."""
  scenario_type = pipeline.SCENARIO_TYPES[task_id % len(pipeline.SCENARIO_TYPES)]
  if level is None:
    level = config.levels[(task_id // len(pipeline.SCENARIO_TYPES)) % len(config.levels)]
  return pipeline.build(f"toolenv-{config.seed}-{task_id}", scenario_type, level, load_knowledge(config.quiz_dir),
                        config.extra_tools)


INSTRUCTIONS = (
    "Answer the question with the tools listed. To call tools, write one or more blocks "
    '<tool_call>{"name": "<tool>", "arguments": {...}}</tool_call>; the results come back in <tool_response> '
    "blocks. Arguments must follow each tool's JSON Schema. Questions may need several steps: use one answer as "
    "the input of the next call. When you know everything, reply with the final answer as plain text (no tool "
    "call); that ends the episode.")


class ToolEnv(TextEnv):
  name = "toolenv"

  def __init__(self, config: ml_collections.ConfigDict | None = None):
    config = config or toolenv_config()
    super().__init__(config.max_steps)
    self.config = config
    self.kb = load_knowledge(config.quiz_dir)
    self._raw_action: str | None = None

  def instructions(self) -> str:
    """The system message a model policy gets ("" = none of ours, see `toolenv_config`)."""
    return INSTRUCTIONS if self.config.instructions_as_system else ""

  @staticmethod
  def step_level_sampler(config: ml_collections.ConfigDict):
    """The hook `agents.train` calls when `data.step_level` is set: step-level RL samples (`step_rl.py`)."""
    from agents.toolenv.step_rl import StepLevelSampler  # JAX and the rollout load only when training
    return StepLevelSampler(config)

  def oracle(self, task_id: int) -> "ToolOracle":
    return ToolOracle(task_spec(task_id, self.config))

  # -- episode -----------------------------------------------------------------------------------------------
  def _reset(self, task_id: int) -> tuple[str, dict[str, Any]]:
    self.spec = task_spec(task_id, self.config)
    self.runtime = deploy(self.spec, self.kb, self.config.time_limit_s)
    self.solved: set[int] = set()
    self.calls = 0
    self.seen_calls: set[str] = set()  # call_signature of every call run so far
    self.answer_matched = False
    self._step_reward = 0.0
    scenario = self.spec.scenario
    tools = "\n".join(json.dumps(t.public()) for t in self.spec.tools)
    observation = f"{INSTRUCTIONS}\nTools:\n{tools}\nQuestion: {scenario.question}"
    info = {"type": scenario.type, "level": self.spec.level, "subquestions": len(scenario.subquestions),
            "complexity": pipeline.complexity(self.spec)["score"]}
    return observation, info

  def reset_to(self, task_id: int, solved: tuple[int, ...] = (), calls: int = 0,
               seen_calls: tuple[str, ...] = ()) -> StepResult:
    """Task `task_id` with some sub-questions already solved and calls already made (their `call_signature`s):
    the state of a step-level training prompt."""
    result = self.reset(task_id)
    self.solved, self.calls, self.seen_calls = set(solved), calls, set(seen_calls)
    return result

  def _progress(self) -> float:
    return len(self.solved) / len(self.spec.scenario.subquestions)

  def step(self, action: str) -> StepResult:
    # the base class lower-cases actions; tool arguments are case-sensitive, so keep the raw text
    self._raw_action, self._step_reward = action, None
    over = self._done  # a step after the episode ended is answered, not scored as malformed
    result = super().step(action)
    if over:
      return result
    r = self._step_reward if self._step_reward is not None else (
        reward.MALFORMED_REWARD if result.info.get("invalid") else 0.0)
    return dataclasses.replace(result, reward=r)

  def _step(self, action: str) -> tuple[str, bool]:
    raw = self._raw_action if self._raw_action is not None else action
    parsed = reward.parse_response(raw)
    scenario = self.spec.scenario
    answers = [sq.answer_pattern for sq in scenario.subquestions]
    if parsed.kind == "empty":
      self._step_reward = reward.EMPTY_REWARD
      return "Empty response: call a tool or give the final answer.", False
    if parsed.kind == "malformed":
      raise InvalidAction(f"malformed tool call: {parsed.error}")  # step() turns this into -0.3
    if parsed.kind == "tool_calls":
      limit = self.config.max_calls_per_step
      run = parsed.calls[:limit]
      self.calls += len(parsed.calls)  # calls past the limit are not run but count (n and Solve-P)
      solved_now = 0
      blocks = []
      for call in run:
        result = self.runtime.call(call["name"], call["arguments"])
        signature = call_signature(call)
        if signature not in self.seen_calls:  # a repeat solves nothing
          self.seen_calls.add(signature)
          unsolved = [i for i in range(len(answers)) if i not in self.solved]
          hit = reward.assign_solved(result.ok, result.output, answers, unsolved, self._meant_for(call),
                                     reward.argument_text(call["arguments"]))
          if hit is not None:
            self.solved.add(hit)
            solved_now += 1
        blocks.append(f"<tool_response>{result.output}</tool_response>")
      skipped = len(parsed.calls) - len(run)
      note = "" if not skipped else (
          f"\nOnly the first {limit} calls of a response run; the other {skipped} were not run (they still count "
          "as calls).")
      self._step_reward = reward.response_reward(parsed, solved_now, len(answers) - len(self.solved), False)
      return "\n".join(blocks) + note, False
    patterns = [scenario.subquestions[i].answer_pattern for i in scenario.final]
    self.answer_matched = reward.answer_contains_gold(parsed.answer, patterns)
    unsolved = len(answers) - len(self.solved)
    self._step_reward = reward.response_reward(parsed, 0, unsolved, self.answer_matched)
    if not self.answer_matched:
      self._done = True  # one final answer per episode
    return f"Final answer received: {'correct' if self.answer_matched else 'not correct'}.", self.answer_matched

  def _meant_for(self, call: dict[str, Any]) -> list[int]:
    """Sub-questions the called tool (with this field) is built to answer. A reverse look-up ("find_by_<attribute>",
    from functional generalisation) answers the inverse relation: a state found by its abbreviation answers
    "which state has abbreviation X?"."""
    tool = next((t for t in self.spec.tools if t.name == call["name"]), None)
    if tool is None:
      return []
    args = call["arguments"] if isinstance(call["arguments"], dict) else {}
    routes = dict(tool.binding.routes)
    field = args.get(tool.binding.field_param, "") if tool.binding.field_param else ""
    relations = set()
    for route in routes.get(field, ()) if isinstance(field, str) else ():
      if route.startswith("reverse:"):
        relations |= pipeline.inverse_relations(route.split(":")[-1])
      else:
        relations.add(route)
    return [sq.index for sq in self.spec.scenario.subquestions if sq.relation in relations]

  def _info(self, invalid: bool) -> dict[str, Any]:
    info = super()._info(invalid)
    if getattr(self, "spec", None) is not None:
      n = len(self.spec.scenario.subquestions)
      info.update({"solved": len(self.solved), "calls": self.calls, "subquestions": n,
                   "answer_matched": self.answer_matched, "type": self.spec.scenario.type, "level": self.spec.level,
                   **reward.solve_metrics(len(self.solved), self.calls, n)})
    return info


def call_signature(call: dict[str, Any]) -> str:
  """What makes two calls the same call: the name and the arguments (key order ignored)."""
  return json.dumps([call["name"], call["arguments"]], sort_keys=True, ensure_ascii=False)


class ToolOracle:
  """The scripted policy that solves every task: each step it calls the tools for every sub-question whose
  input is known (independent ones together), then answers with the final sub-questions' answers."""

  def __init__(self, spec: pipeline.EnvSpec):
    self.spec = spec
    self.done: set[int] = set()

  def act(self, observation: str) -> str:
    subs = self.spec.scenario.subquestions
    ready = [sq for sq in subs if sq.index not in self.done and (sq.depends_on is None or sq.depends_on in self.done)]
    if not ready:
      finals = [subs[i].answer for i in self.spec.scenario.final]
      return "The answer is: " + "; ".join(finals)  # no full stop: "..-." would be another Morse code
    self.done.update(sq.index for sq in ready)
    return "".join(f"<tool_call>{json.dumps(pipeline.gold_call(self.spec, sq))}</tool_call>" for sq in ready)
