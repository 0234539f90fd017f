"""The verifiable reward of arXiv 2508.08791 (every branch) and Solve-P/R/F1, directly and through the environment."""

import json

import pytest

from agents.toolenv.env import ToolEnv, toolenv_config
from agents.toolenv.pipeline import gold_call
from agents.toolenv.reward import (answer_contains_gold, assign_solved, contains, parse_response, response_reward,
                                   solve_metrics)


def test_parse_response_classifies_each_shape():
  assert parse_response("   \n").kind == "empty"
  assert parse_response("Paris.").kind == "answer" and parse_response("x <answer>Paris</answer>").answer == "Paris"
  ok = parse_response('<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>'
                      '<tool_call>{"name": "g", "arguments": "{\\"b\\": 2}"}</tool_call>')
  assert ok.kind == "tool_calls"
  assert ok.calls == ({"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {"b": 2}})
  for bad, why in [('<tool_call>{"name": "f"}', "not closed"), ("<tool_call>{name: f}</tool_call>", "not valid JSON"),
                   ('<tool_call>{"arguments": {}}</tool_call>', "string \"name\""),
                   ('<tool_call>{"name": "f", "arguments": [1]}</tool_call>', "must be a JSON object")]:
    parsed = parse_response(bad)
    assert parsed.kind == "malformed" and why in parsed.error


def test_every_reward_branch():
  calls = parse_response('<tool_call>{"name": "f"}</tool_call>' * 3)
  assert response_reward(parse_response(""), 0, 2, False) == -0.5
  assert response_reward(parse_response("<tool_call>{</tool_call>"), 0, 2, False) == -0.3
  assert response_reward(calls, 2, 1, False) == pytest.approx(2 * 2 / (3 + 1))  # r = 2s/(n+1)
  assert response_reward(calls, 0, 3, False) == 0.0
  answer = parse_response("It is Paris.")
  assert response_reward(answer, 0, 0, True) == 1.0  # 1 / (1 + 0 unsolved)
  assert response_reward(answer, 0, 2, True) == pytest.approx(1 / 3)
  assert response_reward(answer, 0, 0, False) == 0.5  # all solved, answer unmatched
  assert response_reward(answer, 0, 1, False) == 0.0


def test_answer_matching_and_solving():
  assert contains("The capital is Washington.", "{G{eorge} }Washington")
  assert contains("george  WASHINGTON", "{G{eorge} }Washington")
  assert not contains("11th century", "1") and contains("atomic number 1.", "1")
  assert answer_contains_gold("Salem, and the flower is the Oregon grape", ["Salem", "Oregon grape"])
  assert not answer_contains_gold("Salem", ["Salem", "Oregon grape"])
  answers = ["Oregon", "Salem"]
  assert assign_solved(True, "The capital of Oregon is Salem.", answers, [0, 1], preferred=[1]) == 1
  assert assign_solved(True, "The capital of Oregon is Salem.", answers, [0, 1]) == 0  # one per call
  assert assign_solved(False, "Error: ... Close matches: Salem", answers, [1]) is None
  assert solve_metrics(2, 4, 2) == {"solve_p": 50.0, "solve_r": 100.0, "solve_f1": pytest.approx(100 * 4 / 6)}
  assert solve_metrics(0, 0, 2)["solve_p"] == 0.0


def test_rewards_through_the_environment():
  env = ToolEnv(toolenv_config(levels=(0,)))
  task_id = 3  # parallel multi-hop: four sub-questions, two chains
  env.reset(task_id)
  subs = env.spec.scenario.subquestions
  assert env.step("").reward == -0.5
  bad = env.step("<tool_call>{oops</tool_call>")
  assert bad.reward == -0.3 and bad.info["invalid"] and "malformed tool call" in bad.observation
  first = [s for s in subs if s.depends_on is None]
  text = "".join(f"<tool_call>{json.dumps(gold_call(env.spec, s))}</tool_call>" for s in first)
  text += '<tool_call>{"name": "no_such_tool", "arguments": {}}</tool_call>'
  result = env.step(text)  # n = 3 calls, s = 2 solved
  assert result.reward == pytest.approx(2 * 2 / 4) and result.info["solved"] == 2 and result.info["calls"] == 3
  assert "unknown tool 'no_such_tool'" in result.observation
  again = env.step(text)  # the same calls solve nothing new
  assert again.reward == 0.0 and again.info["solved"] == 2
  finals = [subs[i].answer for i in env.spec.scenario.final]
  end = env.step(f"I think: {'; '.join(finals)}")  # right answer, two sub-questions unsolved
  assert end.done and end.info["success"] and end.reward == pytest.approx(1 / 3)
  assert end.info["solve_p"] == pytest.approx(100 * 2 / 6) and end.info["solve_r"] == 50.0

  env.reset(task_id)
  for _ in range(3):
    ready = [s for s in subs if s.index not in env.solved and (s.depends_on is None or s.depends_on in env.solved)]
    if ready:
      env.step("".join(f"<tool_call>{json.dumps(gold_call(env.spec, s))}</tool_call>" for s in ready))
  assert env.solved == {0, 1, 2, 3}
  end = env.step("No idea.")
  assert end.done and not end.info["success"] and end.reward == 0.5  # all solved, answer unmatched
  env.reset(task_id)
  end = env.step("No idea.")
  assert end.done and end.reward == 0.0
