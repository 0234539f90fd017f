"""The verifiable reward and the test metrics of arXiv 2508.08791 (Sec. 3.2 and Sec. 4.1), as in its released code.

Per model response, with n tool calls in it and s of them solving a still-unsolved sub-question:
  r = 2s / (n + 1)                      when the response makes tool calls,
  r = -0.5                              for an empty response,
  r = -0.3                              for malformed tool-call text,
  r = 1 / (1 + number still unsolved)   for a final answer that contains the gold answer,
  r = 0.5                               for a final answer that does not, when every sub-question is solved,
  r = 0                                 otherwise.
n counts every call the response writes, also those past the environment's per-response limit (which are not
run). A call solves a sub-question when it succeeds and every part of the sub-question's gold answer appears in its
output (any accepted spelling, matched as a whole token: see `contains`), not merely echoed from the call's own
arguments; one call solves at most one sub-question, and a call to a tool built for some of the sub-questions
solves only one of those (`assign_solved`; the environment adds that an exact repeat of an earlier call solves
nothing). Metrics over an episode: Solve-P = solved / calls, Solve-R = solved / sub-questions,
Solve-F1 = 2 solved / (calls + sub-questions).

Tool calls are written as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks (the format of the
Qwen models the paper trains); a response without the tag is a final answer.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from typing import Any, Iterable, Sequence

from core.data.quiz import expand_pattern, normalize_answer

EMPTY_REWARD = -0.5
MALFORMED_REWARD = -0.3
UNMATCHED_BUT_SOLVED_REWARD = 0.5

_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# Tool calls here nest three levels ({"arguments": {"query": {...}}}); text nested far deeper is no tool call, and
# walking it (json.loads, then validation and echo checks) would exhaust Python's recursion limit.
MAX_JSON_DEPTH = 32


@dataclasses.dataclass(frozen=True)
class Parsed:
  kind: str  # "empty", "malformed", "tool_calls" or "answer"
  calls: tuple[dict[str, Any], ...] = ()
  answer: str = ""
  error: str = ""


def parse_response(text: str) -> Parsed:
  """Classifies one model response and extracts its tool calls or its final answer."""
  stripped = text.strip()
  if not stripped:
    return Parsed("empty")
  if "<tool_call>" not in stripped and "</tool_call>" not in stripped:
    m = _ANSWER.search(stripped)
    return Parsed("answer", answer=(m.group(1) if m else stripped).strip())
  blocks = _BLOCK.findall(stripped)
  if stripped.count("<tool_call>") != len(blocks) or stripped.count("</tool_call>") != len(blocks):
    return Parsed("malformed", error="a <tool_call> tag is not closed (or a </tool_call> has no opening tag).")
  calls = []
  for i, block in enumerate(blocks):
    call, error = _load_json(block)
    if error:
      return Parsed("malformed", error=f"tool call {i + 1} {error}")
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
      return Parsed("malformed", error=f"tool call {i + 1} must be a JSON object with a string \"name\".")
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
      arguments, error = _load_json(arguments) if arguments.strip() else ({}, "")
      if error:
        return Parsed("malformed", error=f"the arguments of tool call {i + 1} are a string that {error}")
    if not isinstance(arguments, dict):
      return Parsed("malformed", error=f"the arguments of tool call {i + 1} must be a JSON object.")
    calls.append({"name": call["name"], "arguments": arguments})
  return Parsed("tool_calls", calls=tuple(calls))


def _load_json(text: str) -> tuple[Any, str]:
  """(value, "") or (None, what is wrong, as the end of a sentence): the parser's errors never escape."""
  depth = _nesting(text)
  if depth > MAX_JSON_DEPTH:  # checked before parsing: json.loads recurses once per level
    return None, f"nests JSON {depth} levels deep; tool calls nest at most {MAX_JSON_DEPTH} levels."
  try:
    return json.loads(text), ""
  except json.JSONDecodeError as e:
    return None, f"is not valid JSON ({e.msg} at character {e.pos})."
  except RecursionError:
    return None, f"nests JSON too deeply to read (tool calls nest at most {MAX_JSON_DEPTH} levels)."
  except ValueError as e:  # e.g. an integer of more than sys.get_int_max_str_digits() digits
    return None, f"is not valid JSON here ({str(e).split(';')[0]})."


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _nesting(text: str) -> int:
  """The deepest nesting of [ and { in JSON text, strings left out, without parsing it."""
  depth = deepest = 0
  for char in _JSON_STRING.sub("", text):
    if char in "[{":
      depth += 1
      deepest = max(deepest, depth)
    elif char in "]}":
      depth -= 1
  return deepest


def argument_text(arguments: Any) -> str:
  """The string values of a call's arguments, one per line: what a tool output may echo back (entities are
  strings in every schema here; numbers such as `max_chars` are settings, not echoes)."""
  parts, stack = [], [arguments]
  while stack:
    item = stack.pop()
    if isinstance(item, dict):
      stack.extend(item.values())
    elif isinstance(item, list):
      stack.extend(item)
    elif isinstance(item, str):
      parts.append(item)
  return "\n".join(parts)


def _forms(pattern: str) -> list[str]:
  try:
    return [normalize_answer(f) for f in expand_pattern(pattern) if f.strip()]
  except ValueError:
    return [normalize_answer(pattern)]


# A form is matched as a whole token. Letters, digits and "-" always join a token ("Guinea" is not in
# "Guinea-Bissau", "..-" not in "..--"); so does a "." before the form, or one after it that is followed by more of
# the token ("1" is not in "1.008" or "12.5"). A "." that ends a sentence ("It is Paris.", "atomic number 1.") is
# punctuation, except after a form written in dots and dashes only (Morse code), where "..-." is another code.
_LEFT = r"(?<![\w.\-])"
_RIGHT = r"(?![\w\-])(?!\.+[\w\-])"
_RIGHT_DOTS_AND_DASHES = r"(?![\w.\-])"
_DOTS_AND_DASHES = re.compile(r"[.\-]+")


def dots_and_dashes(form: str) -> bool:
  """Whether `form` is written in dots and dashes only (Morse code): a full stop after it reads as part of it."""
  return _DOTS_AND_DASHES.fullmatch(normalize_answer(form)) is not None


@functools.lru_cache(maxsize=16384)
def _form_regex(form: str) -> re.Pattern:
  right = _RIGHT_DOTS_AND_DASHES if dots_and_dashes(form) else _RIGHT
  return re.compile(_LEFT + re.escape(form) + right)


def occurs(text: str, form: str) -> bool:
  """Whether the answer form `form` occurs in `text` as a whole token (case and spacing ignored)."""
  form = normalize_answer(form)
  return bool(form) and _form_regex(form).search(normalize_answer(text)) is not None


def contains(text: str, pattern: str, exclude: str = "") -> bool:
  """Whether some accepted form of `pattern` occurs in `text` as a whole token (case and spacing ignored) and,
  when `exclude` is given, does not occur in it (an echo of the input is no answer)."""
  haystack = normalize_answer(text)
  echoed = normalize_answer(exclude)
  for form in _forms(pattern):
    regex = _form_regex(form)
    if regex.search(haystack) and not (echoed and regex.search(echoed)):
      return True
  return False


def answer_contains_gold(answer: str, patterns: Iterable[str]) -> bool:
  """Every part of the gold answer (one pattern per final sub-question) appears in the answer."""
  return all(contains(answer, p) for p in patterns)


def response_reward(parsed: Parsed, newly_solved: int, unsolved: int, answer_matched: bool) -> float:
  """The reward of one response; `unsolved` counts sub-questions still unsolved after it."""
  if parsed.kind == "empty":
    return EMPTY_REWARD
  if parsed.kind == "malformed":
    return MALFORMED_REWARD
  if parsed.kind == "tool_calls":
    return 2.0 * newly_solved / (len(parsed.calls) + 1)
  if answer_matched:
    return 1.0 / (1 + unsolved)
  if unsolved == 0:
    return UNMATCHED_BUT_SOLVED_REWARD
  return 0.0


def assign_solved(output_ok: bool, output: str, answers: Sequence[str], unsolved: Sequence[int],
                  meant_for: Iterable[int] = (), arguments: str = "") -> int | None:
  """The sub-question (index) a call solves, or None: the lowest-index unsolved one whose answer the output
  contains other than as an echo of the call's `arguments` (`argument_text`). When the called tool is built for
  some of the sub-questions (`meant_for` non-empty), only those can be solved: a state tool called for the flower
  of Oregon echoes "Oregon", which must not solve "which state is OR?"."""
  if not output_ok:
    return None
  meant_for = set(meant_for)
  candidates = [i for i in unsolved if not meant_for or i in meant_for]
  return next((i for i in candidates if contains(output, answers[i], exclude=arguments)), None)


def solve_metrics(solved: int, calls: int, subquestions: int) -> dict[str, float]:
  """Solve-P, Solve-R, Solve-F1 in %."""
  return {"solve_p": 100.0 * solved / calls if calls else 0.0,
          "solve_r": 100.0 * solved / subquestions if subquestions else 0.0,
          "solve_f1": 100.0 * 2 * solved / (calls + subquestions) if calls + subquestions else 0.0}
