"""Policies the VehicleWorld evaluation runs (arXiv 2509.06736, Sec. 5: models compared under FC, SFC and FC+SFC):
a scripted oracle (the ceiling, 100 by construction), a random agent (the floor), the `core.llm` model, and any
OpenAI-compatible chat endpoint given by URL (for users with real models).

A policy sees the conversation (system prompt, then observations as user messages and its own actions as
assistant messages) and returns its next action with the tokens it used: tokenizer counts for models, the
endpoint's reported usage for HTTP, and the approximate `metrics.count_tokens` for scripted policies.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from typing import Any, Mapping, Protocol, Sequence

import ml_collections

from agents.chat_model import ChatEndpoint, ChatModel
from agents.vehicle import metrics, tasks
from agents.vehicle.catalog import load_schema
from agents.vehicle.env import VehicleOracle

_TURN = re.compile(r"Turn (\d+) of (\d+)\. User:")


@dataclasses.dataclass
class Reply:
  text: str
  prompt_tokens: int
  completion_tokens: int


class Policy(Protocol):
  name: str

  def start(self, task_id: int, interface: str) -> None:
    """Called before each episode."""

  def act(self, messages: Sequence[Mapping[str, str]]) -> Reply:
    """The next action given the conversation so far."""


def _approx(messages: Sequence[Mapping[str, str]], text: str) -> Reply:
  return Reply(text, sum(metrics.count_tokens(m["content"]) for m in messages), metrics.count_tokens(text))


class OraclePolicy:
  """Replays the gold plan of each task (see `env.VehicleOracle`)."""

  name = "oracle"

  def __init__(self, tasks_config: ml_collections.ConfigDict):
    self.tasks_config = tasks_config

  def start(self, task_id: int, interface: str) -> None:
    self._oracle = VehicleOracle(tasks.make_task(task_id, self.tasks_config), interface)

  def act(self, messages):
    return _approx(messages, self._oracle.act(messages[-1]["content"]))


class RandomPolicy:
  """A floor: per turn, one random well-formed action on random modules (random API with random valid
  arguments; or random modules and a patch of 1-3 random writable properties), then it ends the turn."""

  name = "random"

  def __init__(self, seed: int):
    self.seed = seed
    self.schema = load_schema()
    self.apis = [a for a in self.schema.apis.values() if not a.query]
    self.modules = [m for m in self.schema.modules if m != "environment"]

  def start(self, task_id: int, interface: str) -> None:
    self.rng = random.Random(f"random-policy-{self.seed}-{task_id}")
    self.interface = interface
    self.turn, self.step = -1, 0
    self.selected: list[str] = []

  def _arguments(self, api) -> dict[str, Any]:
    args = {}
    for p in api.params:
      if p.kind in ("zone", "enum"):
        args[p.name] = self.rng.choice(p.choices)
      elif p.kind == "bool":
        args[p.name] = self.rng.random() < 0.5
      else:
        prop = self.schema.props[p.ref] if p.ref else None
        low, high = (prop.low, prop.high) if prop else (p.low, p.high)
        value = self.rng.uniform(low, high)
        args[p.name] = int(round(value)) if p.kind == "int" else round(value, 1)
    return args

  def act(self, messages):
    turns = _TURN.findall(messages[-1]["content"])
    if turns and int(turns[-1][0]) - 1 != self.turn:
      self.turn, self.step = int(turns[-1][0]) - 1, 0
    self.step += 1
    if self.interface == "fc":
      if self.step == 1:
        api = self.rng.choice(self.apis)
        return _approx(messages, json.dumps({"name": api.name, "arguments": self._arguments(api)}))
      return _approx(messages, "Done.")
    if self.step == 1:
      self.selected = self.rng.sample(self.modules, self.rng.randint(1, 3))
      return _approx(messages, json.dumps({"select": self.selected}))
    if self.step == 2:
      if self.interface == "sfc":
        leaves = [l for l in self.schema.leaves.values() if l.prop.module in self.selected and not l.prop.readonly]
        patch = {}
        for leaf in self.rng.sample(leaves, min(len(leaves), self.rng.randint(1, 3))):
          patch[leaf.path] = tasks.random_value(self.rng, _Unit(), leaf.path)
        return _approx(messages, json.dumps({"patch": patch}))
      api = self.rng.choice([a for m in self.selected for a in self.schema.modules[m].apis if not a.query])
      return _approx(messages, json.dumps({"name": api.name, "arguments": self._arguments(api)}))
    return _approx(messages, "Done.")


class _Unit:
  """A stand-in world for `tasks.random_value` (Celsius ranges; the random agent does not read the state)."""
  schema = load_schema()
  temperature_unit = "celsius"


class LLMPolicy:
  """The `core.llm` model (SmolLM2-135M-Instruct by default) through `core.llm.generate.chat`."""

  name = "llm"

  def __init__(self, config: ml_collections.ConfigDict):
    self.model = ChatModel(config)

  def start(self, task_id: int, interface: str) -> None:
    pass

  def act(self, messages):
    tok = self.model.tokenizer
    text = self.model.reply(messages)
    return Reply(text, len(tok.encode_chat(list(messages))), len(tok.encode(text)))


def _count(usage: Mapping[str, Any], key: str, fallback: int) -> int:
  """The endpoint's token count, or the approximate one where it sent none, null or something not a number."""
  try:
    value = usage.get(key)
    return int(value) if value is not None and not isinstance(value, bool) else fallback
  except (TypeError, ValueError, OverflowError):
    return fallback


class HttpChatPolicy:
  """Any OpenAI-compatible `/chat/completions` endpoint (`agents.chat_model.ChatEndpoint`: retries, the key read
  from the environment variable named in the config); tokens are the endpoint's reported usage."""

  name = "http"

  def __init__(self, config: ml_collections.ConfigDict):
    self.endpoint = ChatEndpoint(config)

  def start(self, task_id: int, interface: str) -> None:
    pass

  def act(self, messages):
    reply = self.endpoint.complete(messages)
    fallback = _approx(messages, reply.text)
    return Reply(reply.text, _count(reply.usage, "prompt_tokens", fallback.prompt_tokens),
                 _count(reply.usage, "completion_tokens", fallback.completion_tokens))

  def close(self) -> None:
    self.endpoint.close()


def make_policy(config: ml_collections.ConfigDict) -> Policy:
  if config.policy == "oracle":
    return OraclePolicy(config.env.tasks)
  if config.policy == "random":
    return RandomPolicy(config.seed)
  if config.policy == "llm":
    return LLMPolicy(config.llm)
  if config.policy == "http":
    return HttpChatPolicy(config.http)
  raise ValueError(f"unknown policy {config.policy!r}; valid: oracle, random, llm, http.")


__all__ = ["HttpChatPolicy", "LLMPolicy", "OraclePolicy", "Policy", "RandomPolicy", "Reply", "make_policy"]
