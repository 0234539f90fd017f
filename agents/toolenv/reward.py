"""The verifiable reward and the test metrics of arXiv 2508.08791 (Sec. 3.2 and Sec. 4.1), as in its released code.

Per model response, with n tool calls in it and s of them solving a still-unsolved sub-question:
  r = 2s / (n + 1)                      when the response makes tool calls,
  r = -0.5                              for an empty response,
  r = -0.3                              for malformed tool-call text,
  r = 1 / (1 + number still unsolved)   for a final answer that contains the gold answer,
  r = 0.5                               for a final answer that does not, when every sub-question is solved,
  r = 0                                 otherwise.
A call solves a sub-question when it succeeds and every part of the sub-question's gold answer appears in its
output (any accepted spelling; matched on word boundaries so "1" does not match inside "11"); one call solves
at most one sub-question, preferring one the called tool is meant for. Metrics over an episode:
Solve-P = solved / calls, Solve-R = solved / sub-questions, Solve-F1 = 2 solved / (calls + sub-questions).

Tool calls are written as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks (the format of the
Qwen models the paper trains); a response without the tag is a final answer.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Iterable, Sequence

from core.data.quiz import expand_pattern, normalize_answer

EMPTY_REWARD = -0.5
MALFORMED_REWARD = -0.3
UNMATCHED_BUT_SOLVED_REWARD = 0.5

_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


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
    try:
      call = json.loads(block)
    except json.JSONDecodeError as e:
      return Parsed("malformed", error=f"tool call {i + 1} is not valid JSON ({e.msg} at character {e.pos}).")
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
      return Parsed("malformed", error=f"tool call {i + 1} must be a JSON object with a string \"name\".")
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
      try:
        arguments = json.loads(arguments) if arguments.strip() else {}
      except json.JSONDecodeError:
        return Parsed("malformed", error=f"the arguments of tool call {i + 1} are not valid JSON.")
    if not isinstance(arguments, dict):
      return Parsed("malformed", error=f"the arguments of tool call {i + 1} must be a JSON object.")
    calls.append({"name": call["name"], "arguments": arguments})
  return Parsed("tool_calls", calls=tuple(calls))


def _forms(pattern: str) -> list[str]:
  try:
    return [normalize_answer(f) for f in expand_pattern(pattern) if f.strip()]
  except ValueError:
    return [normalize_answer(pattern)]


def contains(text: str, pattern: str) -> bool:
  """Whether some accepted form of `pattern` appears in `text` as whole words (case and spacing ignored)."""
  haystack = normalize_answer(text)
  for form in _forms(pattern):
    if re.search(r"(?<![\w])" + re.escape(form) + r"(?![\w])", haystack):
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
                  preferred: Iterable[int] = ()) -> int | None:
  """The sub-question (index) a call solves, or None: among unsolved ones whose answer the output contains,
  one the tool is meant for (`preferred`) first, else the lowest index."""
  if not output_ok:
    return None
  hits = [i for i in unsolved if contains(output, answers[i])]
  if not hits:
    return None
  preferred = set(preferred)
  return next((i for i in hits if i in preferred), hits[0])


def solve_metrics(solved: int, calls: int, subquestions: int) -> dict[str, float]:
  """Solve-P, Solve-R, Solve-F1 in %."""
  return {"solve_p": 100.0 * solved / calls if calls else 0.0,
          "solve_r": 100.0 * solved / subquestions if subquestions else 0.0,
          "solve_f1": 100.0 * 2 * solved / (calls + subquestions) if calls + subquestions else 0.0}
