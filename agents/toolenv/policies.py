"""Policies the tool-environment evaluation runs (arXiv 2508.08791, Sec. 4: base models, RL-trained models, and
an oracle): the scripted oracle (100 by construction), a random schema-following caller (a floor), a naive
caller that knows which entity each sub-question is about but reads tool documents only by name (it shows what
each complexity operator costs an agent that does not read schemas), the `core.llm` model (the base policy, or an
RL-trained one exported by `agents.export`), and any OpenAI-compatible chat endpoint given by URL (for
users with real models, e.g. the paper's Qwen3-8B behind vLLM).
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Sequence

import ml_collections

from agents.chat_model import ChatEndpoint, ChatModel
from agents.toolenv.env import ToolOracle, task_spec
from agents.toolenv.knowledge import BY_NAME


class OraclePolicy:
  name = "oracle"

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  def start(self, task_id: int) -> None:
    self._oracle = ToolOracle(task_spec(task_id, self.config))

  def act(self, messages: Sequence[Mapping[str, str]]) -> str:
    return self._oracle.act(messages[-1]["content"])


_WORDS = re.compile(r"[a-z]+")


class NaivePolicy:
  """Per sub-question: the tool whose name shares most words with the relation's attribute and entity, called
  with {first parameter: entity} only (no field, no extra required arguments, a string where an object is
  wanted); hop inputs come from the gold chain. Answers with the outputs it saw."""

  name = "naive"

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  def start(self, task_id: int) -> None:
    self.spec = task_spec(task_id, self.config)
    self.pending = list(self.spec.scenario.subquestions)
    self.outputs: list[str] = []

  def act(self, messages: Sequence[Mapping[str, str]]) -> str:
    self.outputs.append(messages[-1]["content"])
    if not self.pending:
      return "The answer is: " + " ".join(re.findall(r"<tool_response>(.*?)</tool_response>",
                                                     "\n".join(self.outputs[1:])))
    sub = self.pending.pop(0)
    rel = BY_NAME[sub.relation]
    wanted = set(_WORDS.findall(f"{rel.attribute} {rel.family} {rel.tool}"))
    tool = max(self.spec.tools, key=lambda t: (len(wanted & set(_WORDS.findall(t.name))), -len(t.name)))
    first = next(iter(tool.parameters["properties"]))
    return f'<tool_call>{json.dumps({"name": tool.name, "arguments": {first: sub.key}})}</tool_call>'


class RandomPolicy:
  """A floor that follows schemas: per sub-question, a random tool with valid random arguments (random enum
  values; as the key, the entity the question names, or for a later hop the output its own call for the hop
  before returned, never the hidden gold intermediate answer); then it answers with the outputs it saw. Its
  Solve-F1 falls as tools (toolset extension) and field choices (functional generalisation) multiply."""

  name = "random"

  def __init__(self, config: ml_collections.ConfigDict, seed: int = 0):
    self.config, self.seed = config, seed

  def start(self, task_id: int) -> None:
    import random
    self.rng = random.Random(f"toolenv-random-{self.seed}-{task_id}")
    NaivePolicy.start(self, task_id)  # same bookkeeping

  def _value(self, schema: dict[str, Any], key: str) -> Any:
    if "enum" in schema:
      return self.rng.choice(schema["enum"])
    if schema.get("type") == "object":
      return {name: (key if name == "value" else self._value(s, key)) for name, s in schema["properties"].items()
              if name in schema.get("required", [])}
    if schema.get("type") == "boolean":
      return self.rng.random() < 0.5
    if schema.get("type") == "integer":
      return self.rng.randint(schema.get("minimum", 0), schema.get("maximum", 100))
    return key

  def act(self, messages: Sequence[Mapping[str, str]]) -> str:
    self.outputs.append(messages[-1]["content"])
    if not self.pending:
      return NaivePolicy.act(self, messages[:-1] + [messages[-1]])
    sub = self.pending.pop(0)
    key = sub.key if sub.depends_on is None else self._seen_output(sub.depends_on)
    tool = self.rng.choice(self.spec.tools)
    params = tool.parameters
    args = {name: self._value(schema, key) for name, schema in params["properties"].items()
            if name in params.get("required", [])}
    return f'<tool_call>{json.dumps({"name": tool.name, "arguments": args})}</tool_call>'

  def _seen_output(self, index: int) -> str:
    """What the call made for sub-question `index` returned (outputs[0] is the task; one call per response,
    in sub-question order, so its reply is outputs[index + 1]): a later hop's input, right or wrong."""
    reply = self.outputs[index + 1]
    match = re.search(r"<tool_response>(.*?)</tool_response>", reply, re.S)
    return (match.group(1) if match else reply).strip()


class LLMPolicy:
  """The `core.llm` model (SmolLM2-135M-Instruct by default) as the base policy."""

  name = "llm"

  def __init__(self, config: ml_collections.ConfigDict):
    self.model = ChatModel(config)

  def start(self, task_id: int) -> None:
    pass

  def act(self, messages: Sequence[Mapping[str, str]]) -> str:
    return self.model.reply(messages)


class HttpPolicy:
  """Any OpenAI-compatible `/chat/completions` endpoint (`agents.chat_model.ChatEndpoint`, config block `http`)."""

  name = "http"

  def __init__(self, config: ml_collections.ConfigDict):
    self.endpoint = ChatEndpoint(config)

  def start(self, task_id: int) -> None:
    pass

  def act(self, messages: Sequence[Mapping[str, str]]) -> str:
    return self.endpoint.complete(messages).text

  def close(self) -> None:
    self.endpoint.close()


POLICIES = ("oracle", "naive", "random", "llm", "http")


def make_policy(config: ml_collections.ConfigDict) -> Any:
  if config.policy == "oracle":
    return OraclePolicy(config.env)
  if config.policy == "naive":
    return NaivePolicy(config.env)
  if config.policy == "random":
    return RandomPolicy(config.env, config.seed)
  if config.policy == "llm":
    return LLMPolicy(config.llm)
  if config.policy == "http":
    return HttpPolicy(config.http)
  raise ValueError(f"unknown policy {config.policy!r}; valid: {', '.join(POLICIES)}.")
