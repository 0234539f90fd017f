"""Localized deployment, stage 5 of arXiv 2508.08791 (Sec. 3.1): the generated tool documents become local tools.

Each tool is a plain Python function built from its document's binding (which relation tables to search,
where the key sits in the arguments, which field and format to return); nothing generated is ever executed as
code. A call is checked before it runs: the tool must exist, and its JSON arguments must satisfy the document's
JSON Schema (types, required and unknown properties, enum values, ranges, nested objects), with a message that
names the argument and what it takes. The function then runs under a time limit on a worker thread; a call that
overruns returns an error instead of stalling the episode (Python cannot stop the thread; it is abandoned).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import difflib
import json
from typing import Any, Callable

from agents.toolenv.knowledge import BY_NAME, Fact, KnowledgeBase
from agents.toolenv.pipeline import LABELS, EnvSpec, ToolDoc
from agents.toolenv.reward import dots_and_dashes
from core.data.quiz import expand_pattern

_EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="toolenv-tool")


class ToolError(ValueError):
  """A tool refused its input (unknown entity); the message is the tool's output."""


@dataclasses.dataclass(frozen=True)
class ToolResult:
  ok: bool
  output: str


# ---------------------------------------------------------------------------------------------------------------
# JSON Schema (the subset the documents use)

_TYPES = {"object": dict, "string": str, "boolean": bool, "array": list}


def validate(schema: dict[str, Any], value: Any, where: str = "arguments") -> list[str]:
  """Problems of `value` against `schema` (type, properties, required, additionalProperties, enum, minimum,
  maximum, items), one message per problem; empty when it is valid."""
  kind = schema.get("type")
  if kind == "integer":
    if isinstance(value, bool) or not isinstance(value, int):
      return [f"{where} must be an integer, got {json.dumps(value)}"]
  elif kind == "number":
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return [f"{where} must be a number, got {json.dumps(value)}"]
  elif kind in _TYPES and not isinstance(value, _TYPES[kind]):
    return [f"{where} must be {'an' if kind[0] in 'aeiou' else 'a'} {kind}, got {json.dumps(value)}"]
  problems = []
  if "enum" in schema and value not in schema["enum"]:
    problems.append(f"{where} must be one of {', '.join(map(json.dumps, schema['enum']))}, got {json.dumps(value)}")
  if "minimum" in schema and value < schema["minimum"]:
    problems.append(f"{where} must be >= {schema['minimum']}, got {value}")
  if "maximum" in schema and value > schema["maximum"]:
    problems.append(f"{where} must be <= {schema['maximum']}, got {value}")
  if kind == "object":
    props = schema.get("properties", {})
    for name in schema.get("required", []):
      if name not in value:
        problems.append(f"{where}.{name} is required ({_describe(props.get(name, {}))})")
    for name, item in value.items():
      if name in props:
        problems.extend(validate(props[name], item, f"{where}.{name}"))
      elif schema.get("additionalProperties") is False:
        problems.append(f"{where}.{name} is not a parameter; parameters: {', '.join(props) or '(none)'}")
  if kind == "array" and "items" in schema:
    for i, item in enumerate(value):
      problems.extend(validate(schema["items"], item, f"{where}[{i}]"))
  return problems


def _describe(schema: dict[str, Any]) -> str:
  if "enum" in schema:
    return "one of " + ", ".join(map(json.dumps, schema["enum"]))
  return schema.get("type", "a value")


# ---------------------------------------------------------------------------------------------------------------
# Tools from documents


def make_tool(doc: ToolDoc, kb: KnowledgeBase) -> Callable[[dict[str, Any]], str]:
  """The Python function behind one document (arguments already validated)."""
  binding = doc.binding
  routes = dict(binding.routes)
  label = LABELS.get(doc.family, doc.family.replace("_", " "))

  def tool(arguments: dict[str, Any]) -> str:
    key: Any = arguments
    for part in binding.key_path:
      key = key[part]
    exact = bool(binding.match_param) and arguments[binding.key_path[0]].get(binding.match_param) == "exact"
    field = arguments.get(binding.field_param, "") if binding.field_param else ""
    for route in routes[field]:
      reverse = route.startswith("reverse:")
      relation = route.split(":")[-1]
      fact = kb.reverse(relation, key) if reverse else kb.lookup(relation, key)
      if fact is None:
        continue
      if exact and key not in expand_pattern(fact.value_pattern if reverse else fact.key_pattern):
        raise ToolError(f"no exact match for {key!r}; with match \"exact\" the spelling must be exactly right "
                        f"(e.g. {fact.value if reverse else fact.key!r}).")
      return _answer(doc, relation, fact, reverse, arguments, binding)
    names = sorted({f.value if r.startswith("reverse:") else f.key for r in routes[field]
                    for f in kb.facts[r.split(":")[-1]]})
    close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.6)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ToolError(f"no {label} found for {key!r}" + (f" (field {field})" if field else "") + f".{hint}")

  return tool


def _answer(doc: ToolDoc, relation: str, fact: Fact, reverse: bool, arguments: dict[str, Any], binding) -> str:
  rel = BY_NAME[relation]
  fmt = arguments.get(binding.format_param, "json") if binding.format_param else "json"
  if reverse:
    data = {rel.attribute: fact.value, rel.key_kind: fact.key}
    text = f"{fact.value} is the {rel.attribute} of {fact.key}."
  else:
    data = {rel.key_kind: fact.key, rel.attribute: fact.value}
    # no full stop after a Morse code: "..-." would read as another code (F, not U and a stop)
    text = f"The {rel.attribute} of {fact.key} is {fact.value}" + ("" if dots_and_dashes(fact.value) else ".")
  if arguments.get("include_source"):
    data["source"] = f"bsdgames quiz: {rel.quizzes[0][0]}"
    text += f" (Source: bsdgames quiz {rel.quizzes[0][0]}.)"
  out = text if fmt == "text" else json.dumps(data, ensure_ascii=False)
  limit = arguments.get("max_chars")
  return out[:limit] if isinstance(limit, int) else out


class ToolRuntime:
  """The deployed tools of one environment: `call(name, arguments)` validates, runs with a time limit, and
  returns a ToolResult (never raises for the agent's mistakes)."""

  def __init__(self, time_limit_s: float = 2.0):
    self.time_limit_s = time_limit_s
    self.docs: dict[str, dict[str, Any]] = {}
    self.functions: dict[str, Callable[[dict[str, Any]], str]] = {}

  def register(self, public_doc: dict[str, Any], function: Callable[[dict[str, Any]], str]) -> None:
    """Adds a plain Python tool (`public_doc` in OpenAI function format)."""
    self.docs[public_doc["name"]] = public_doc
    self.functions[public_doc["name"]] = function

  def call(self, name: Any, arguments: Any) -> ToolResult:
    if not isinstance(name, str) or name not in self.functions:
      close = difflib.get_close_matches(str(name), list(self.functions), n=2)
      hint = f" Did you mean {', '.join(close)}?" if close else ""
      return ToolResult(False, f"Error: unknown tool {name!r}.{hint} Tools: {', '.join(self.functions)}.")
    if arguments is None:
      arguments = {}
    problems = validate(self.docs[name]["parameters"], arguments)
    if problems:
      return ToolResult(False, f"Error: invalid arguments for {name}: " + "; ".join(problems) + ".")
    future = _EXECUTOR.submit(self.functions[name], arguments)
    try:
      return ToolResult(True, future.result(timeout=self.time_limit_s))
    except concurrent.futures.TimeoutError:
      future.cancel()
      return ToolResult(False, f"Error: {name} did not finish within {self.time_limit_s} s.")
    except ToolError as e:
      return ToolResult(False, f"Error: {e}")
    except Exception as e:  # a broken tool ends this call, not the episode
      return ToolResult(False, f"Error: {name} failed ({type(e).__name__}: {e}).")


def deploy(spec: EnvSpec, kb: KnowledgeBase, time_limit_s: float = 2.0) -> ToolRuntime:
  runtime = ToolRuntime(time_limit_s)
  for doc in spec.tools:
    runtime.register(doc.public(), make_tool(doc, kb))
  return runtime
