"""The three agent interfaces of VehicleWorld (arXiv 2509.06736, Sec. 4 and Fig. 2): their prompts and the parser
of model output.

* FC: the agent discovers modules (`list_modules`), a module's APIs (`list_apis`), and calls APIs; it sees no
  state unless it calls a `<module>_get_status` API.
* SFC: the agent selects up to 6 modules, sees their full state (values, types, ranges, descriptions) with the
  shared environment block, and writes the target state as a JSON patch.
* FC+SFC: SFC-style selection shows the selected modules' state and their APIs, then the agent calls APIs of
  those modules (and of the environment block).

Every action is JSON (one object, a list of objects, or `<tool_call>` blocks; code fences are fine). Text with
no JSON in it ends the turn as the assistant's reply. Unreadable JSON, an unknown action shape, or an action the
interface does not offer raises `InvalidAction` with a message saying what to write instead: never a crash (JSON
nested deeper than any action, or a number too long for Python to read, included).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from agents.envs.base import InvalidAction

INTERFACES = ("fc", "sfc", "fc_sfc")


@dataclasses.dataclass(frozen=True)
class Action:
  kind: str  # call, list_modules, list_apis, select, patch, finish
  name: str = ""
  arguments: Any = None
  modules: tuple[str, ...] = ()
  patch: Any = None
  text: str = ""


ALLOWED = {"fc": ("call", "list_modules", "list_apis", "finish"),
           "sfc": ("select", "patch", "finish"),
           "fc_sfc": ("select", "call", "list_apis", "finish")}

_EXAMPLES = {
    "call": '{"name": "seat_set_heater", "arguments": {"seat": "driver", "level": 2}}',
    "list_modules": '{"name": "list_modules"}',
    "list_apis": '{"name": "list_apis", "arguments": {"module": "seat"}}',
    "select": '{"select": ["seat", "air_conditioner"]}',
    "patch": '{"patch": {"seat": {"heater_level": {"driver": 2}}}}',
    "finish": '{"name": "finish"} (or a plain-text reply)',
}


def action_help(interface: str) -> str:
  return "Actions: " + "; ".join(_EXAMPLES[k] for k in ALLOWED[interface]) + "."


def system_prompt(interface: str, module_lines: str, max_modules: int) -> str:
  """The instructions an agent gets once, before the first turn."""
  head = ("You control the cockpit of a car for its passengers. Each turn a passenger asks for something; change "
          "the car's state to do exactly that and nothing else. Devices depend on each other: heaters and climate "
          "need the engine running, doors and trunks open only in park, one audio source holds the speakers at a "
          "time. Temperatures are in the car's current temperature unit. 'My seat' means the seat in "
          "environment.speaker. When the request is done, end the turn with a short plain-text reply.\n")
  if interface == "fc":
    return head + (
        "You act through API calls written as JSON. Discover what exists first: "
        '{"name": "list_modules"} lists the modules, {"name": "list_apis", "arguments": {"module": "seat"}} '
        "lists a module's APIs with their arguments, and each module has <module>_get_status() to read its "
        'state. Call an API with {"name": "<api>", "arguments": {...}}; several calls may be sent as a JSON list. '
        "Each call's result (what changed, or why the car refused) comes back.\n" + action_help(interface))
  if interface == "sfc":
    return head + (
        f"You act on the car's state. First select the modules the request concerns (at most {max_modules}; the "
        "shared environment block is always shown): "
        '{"select": ["seat", "vehicle"]}. You then see every property of those modules with its value, type, '
        "range and description. Write the target values of the properties to change as a JSON patch: "
        '{"patch": {"seat": {"heater_level": {"driver": 2}}, "vehicle": {"engine_on": true}}} (dotted paths such '
        'as {"patch": {"seat.heater_level.driver": 2}} work too). Read-only properties cannot be written. The car '
        "applies the patch with its device logic and reports what changed; rejected values come back with the "
        "reason, and you may send a corrected patch.\nModules:\n" + module_lines + "\n" + action_help(interface))
  return head + (
      f"First select the modules the request concerns (at most {max_modules}; the shared environment block is "
      'always included): {"select": ["seat", "vehicle"]}. You then see their state and their APIs. Call those '
      'APIs with {"name": "<api>", "arguments": {...}} (several as a JSON list); APIs of modules you did not '
      "select are refused.\nModules:\n" + module_lines + "\n" + action_help(interface))


# ---------------------------------------------------------------------------------------------------------------
# Parsing

_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


MAX_JSON_DEPTH = 16  # a list of patches of {"value": v} leaves, the deepest action, nests 6 levels


def _json_depth(value: Any) -> int:
  """How deeply `value` nests (iteratively: the point is to refuse what recursion would choke on)."""
  deepest, stack = 0, [(value, 1)]
  while stack:
    v, d = stack.pop()
    if isinstance(v, (dict, list)):
      deepest = max(deepest, d)
      if d <= MAX_JSON_DEPTH:
        stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
  return deepest


def _too_deep() -> InvalidAction:
  return InvalidAction(f"the JSON nests more than {MAX_JSON_DEPTH} levels deep; no action does. Write one action "
                       f"object, e.g. {_EXAMPLES['call']}.")


def _decode_error(e: ValueError) -> InvalidAction:
  """A ValueError that is not a JSONDecodeError: Python refuses to read an integer of over 4,300 digits."""
  return InvalidAction(f"could not read the JSON: a number in it is too long ({str(e).split(':')[0]}). "
                       "Write numbers as the ranges in the state and API lists give them.")


def loads(text: str) -> Any:
  """`json.loads` for model text: any failure (bad syntax, nesting too deep, a number too long) is InvalidAction."""
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise InvalidAction(f"could not read the JSON: {e.msg} at character {e.pos}. Write valid JSON.") from None
  except RecursionError:
    raise _too_deep() from None
  except ValueError as e:
    raise _decode_error(e) from None
  if _json_depth(value) > MAX_JSON_DEPTH:
    raise _too_deep()
  return value


def _json_values(text: str) -> list[Any]:
  """JSON values found in `text`: `<tool_call>` blocks, else code fences, else every top-level object/array."""
  blocks = _TOOL_CALL.findall(text) or _FENCE.findall(text)
  sources = blocks if blocks else [text]
  values: list[Any] = []
  decoder = json.JSONDecoder()
  first_error: json.JSONDecodeError | None = None
  for source in sources:
    i = 0
    while i < len(source):
      if source[i] in "{[":
        try:
          value, end = decoder.raw_decode(source, i)
        except json.JSONDecodeError as e:
          first_error = first_error or e
          if source[i] == "[" and values == []:
            i += 1  # a bracket in prose ("[sic]") may precede the real object
            continue
          raise InvalidAction(f"could not read the JSON: {e.msg} at character {e.pos}. Write valid JSON, e.g. "
                              f"{_EXAMPLES['call']}.") from None
        except RecursionError:  # the decoder recurses once per level: "[[[[..." of a few thousand characters
          raise _too_deep() from None
        except ValueError as e:
          raise _decode_error(e) from None
        if _json_depth(value) > MAX_JSON_DEPTH:
          raise _too_deep()
        values.append(value)
        i = end
        continue
      i += 1
  if not values and first_error is not None:
    raise InvalidAction(f"could not read the JSON: {first_error.msg}. Write valid JSON.")
  return values


def parse_action(text: str, interface: str, max_actions: int = 10) -> list[Action]:
  """The actions in one model message (at most `max_actions`), or InvalidAction saying what is wrong."""
  if interface not in INTERFACES:
    raise ValueError(f"unknown interface {interface!r}; valid: {', '.join(INTERFACES)}.")
  text = text.strip()
  if not text:
    raise InvalidAction("the action is empty. " + action_help(interface))
  if "{" not in text and "[" not in text:
    return [Action("finish", text=text)]
  values = _json_values(text)
  if not values:
    return [Action("finish", text=text)]
  items: list[Any] = []
  for v in values:
    items.extend(v if isinstance(v, list) and not _is_json_patch(v) else [v])
  if len(items) > max_actions:
    raise InvalidAction(f"{len(items)} actions in one message; the limit is {max_actions}. Send fewer at a time.")
  actions = [_interpret(item, interface) for item in items]
  for a in actions:
    if a.kind not in ALLOWED[interface]:
      raise InvalidAction(f"this interface has no {a.kind.replace('_', ' ')} action. {action_help(interface)}")
  return actions


def _is_json_patch(v: list) -> bool:
  return bool(v) and all(isinstance(x, dict) and "op" in x and "path" in x for x in v)


def _interpret(item: Any, interface: str) -> Action:
  if isinstance(item, list) and _is_json_patch(item):
    return Action("patch", patch=item)
  if not isinstance(item, dict):
    raise InvalidAction(f"expected a JSON object, got {json.dumps(item)[:60]}. {action_help(interface)}")
  if "function" in item and isinstance(item["function"], dict):  # OpenAI tool-call shape
    item = item["function"]
  if "select" in item or "modules" in item:
    modules = item.get("select", item.get("modules"))
    if isinstance(modules, str):
      modules = [modules]
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
      raise InvalidAction('"select" takes a list of module names, e.g. {"select": ["seat"]}.')
    return Action("select", modules=tuple(modules))
  if "patch" in item or "state" in item:
    return Action("patch", patch=item.get("patch", item.get("state")))
  if "name" in item:
    name = item["name"]
    if not isinstance(name, str):
      raise InvalidAction('"name" must be the API name as a string.')
    args = item.get("arguments", item.get("args", item.get("parameters", {})))
    if isinstance(args, str):  # OpenAI sends arguments as a JSON string
      try:
        args = loads(args) if args.strip() else {}
      except InvalidAction as e:
        raise InvalidAction(f"the arguments of {name}: {e}") from None
    if name in ("finish", "final_answer", "done"):
      return Action("finish", text=str((args or {}).get("reply", "")) if isinstance(args, dict) else "")
    if name == "list_modules":
      return Action("list_modules")
    if name == "list_apis":
      module = args.get("module") if isinstance(args, dict) else None
      if not isinstance(module, str):
        raise InvalidAction('list_apis needs a module: {"name": "list_apis", "arguments": {"module": "seat"}}.')
      return Action("list_apis", name=module)
    return Action("call", name=name, arguments=args)
  if "finish" in item or "answer" in item or "reply" in item:
    return Action("finish", text=str(item.get("reply", item.get("answer", ""))))
  keys = ", ".join(sorted(map(str, item)))[:80]
  raise InvalidAction(f"a JSON object with keys {keys} is not an action. {action_help(interface)}")


def action_schema(interface: str) -> dict[str, Any]:
  """A JSON Schema of one action of `interface` (for tool-calling APIs and documentation)."""
  call = {"type": "object", "required": ["name"], "properties": {
      "name": {"type": "string", "description": "API name, or list_modules / list_apis / finish"},
      "arguments": {"type": "object"}}}
  select = {"type": "object", "required": ["select"], "properties": {
      "select": {"type": "array", "items": {"type": "string"}, "maxItems": 6}}}
  patch = {"type": "object", "required": ["patch"], "properties": {
      "patch": {"type": "object", "description": "target values: {module: {property: value | {key: value}}}"}}}
  shapes = {"fc": [call], "sfc": [select, patch], "fc_sfc": [select, call]}[interface]
  one = {"oneOf": shapes} if len(shapes) > 1 else shapes[0]
  return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": f"VehicleWorld {interface} action",
          "oneOf": [one, {"type": "array", "items": one}]}
