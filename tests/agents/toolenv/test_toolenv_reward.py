"""The verifiable reward of arXiv 2508.08791 (every branch) and Solve-P/R/F1, directly and through the environment."""

import json
import shutil

import pytest

from agents.toolenv import pipeline
from agents.toolenv.env import ToolEnv, task_spec, toolenv_config
from agents.toolenv.knowledge import load_knowledge
from agents.toolenv.pipeline import gold_call
from agents.toolenv.runtime import deploy
from agents.toolenv.steps import score_step, step_prompts
from core.data.errors import DataSourceMissingError
from core.data.quiz import QUIZ_DIR
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
  assert assign_solved(True, "The capital of Oregon is Salem.", answers, [0, 1], meant_for=[1]) == 1
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


def test_answers_match_whole_tokens_only():
  # numbers: "1" is not the 1 of "1.008" or "11", a sentence's full stop is punctuation
  assert not contains("1.008", "1") and not contains("The answer is 12.5", "12") and not contains("-1", "1")
  assert contains("The atomic weight is 1.008.", "1.008") and contains("atomic number 1, I think", "1")
  # words: "Paris." and "Paris..." end a sentence; a hyphen joins ("Guinea" is not in "Guinea-Bissau")
  for text in ("Paris.", "It is Paris. Next question", "Paris...", "(Paris)", '{"capital": "Paris"}'):
    assert contains(text, "Paris"), text
  assert not contains("Guinea-Bissau", "Guinea") and not contains("Parisian", "Paris")
  # Morse: a code is not inside a longer code, a trailing dot is part of the code
  assert not contains("..-.", "..-") and not contains("The code is ..-.", "..-") and not contains("-.", "-")
  assert contains("The code is ..-", "..-") and contains('{"morse code": "..-"}', "..-") and contains(".", ".")
  assert not contains("I do not know.", ".") and not contains("Paris - Lima", ".")
  codes = [f.value_pattern for f in load_knowledge().facts["morse_code"]]
  assert len(codes) == 26
  for gold in codes:
    for written in codes:
      assert contains(written, gold) == (written == gold), (written, gold)
      assert contains(f"The answer is {written}", gold) == (written == gold)


def test_unreadable_tool_calls_are_malformed_not_crashes():
  cases = {"<tool_call>" + "[" * 2000 + "</tool_call>": "nests JSON 2000 levels deep",
           '<tool_call>{"name": "f", "arguments": {"a": ' + "[" * 40 + "]" * 40 + "}}</tool_call>":
               "nests JSON 42 levels deep",
           '<tool_call>{"name": "f", "arguments": {"a": ' + "1" * 5000 + "}}</tool_call>": "4300 digits",
           '<tool_call>{"name": "f", "arguments": {"a": "[[[[" , "b": ' + "{" * 33 + "</tool_call>":
               "nests JSON 35 levels deep",
           '<tool_call>{"name": "f", "arguments": "' + "[" * 2000 + '"}</tool_call>': "are a string that nests JSON 2000"}
  for text, why in cases.items():
    parsed = parse_response(text)
    assert parsed.kind == "malformed" and why in parsed.error, (parsed.error, why)
  env = ToolEnv(toolenv_config(levels=(0,)))
  env.reset(0)
  for text in cases:
    result = env.step(text)
    assert result.reward == -0.3 and result.info["invalid"] and "malformed tool call" in result.observation
  env.reset(0)  # a field of the wrong type reaches the tool look-up without breaking it
  level2 = ToolEnv(toolenv_config(levels=(2,)))
  level2.reset(0)
  tool = level2.spec.tools[0].name
  assert level2.step(f'<tool_call>{{"name": "{tool}", "arguments": {{"name": "x", "field": ["a"]}}}}</tool_call>'
                     ).reward == 0.0


def test_repeated_and_echoing_calls_solve_nothing():
  answers = ["Oregon|Ore", "{Oregon }grape"]
  output = '{"name": "Oregon", "flower": "Oregon grape"}'
  assert assign_solved(True, output, answers, [0], meant_for=[1]) is None  # a flower tool never names the state
  assert assign_solved(True, output, answers, [0], arguments="Oregon") is None  # an echo of its own input
  assert assign_solved(True, '{"name": "Oregon", "abbreviation": "OR"}', answers, [0], arguments="OR") == 0

  env = ToolEnv(toolenv_config(levels=(0,)))
  env.reset(2)  # multi-hop: which state is OR, then its flower
  subs = env.spec.scenario.subquestions
  second = f"<tool_call>{json.dumps(gold_call(env.spec, subs[1]))}</tool_call>"  # the state from memory
  result = env.step(second * 2)
  assert result.info["solved"] == 1 and result.reward == pytest.approx(2 * 1 / 3)
  assert env.step(second).reward == 0.0  # the same call in a later response: nothing new either
  first = f"<tool_call>{json.dumps(gold_call(env.spec, subs[0]))}</tool_call>"
  assert env.step(first).reward == 1.0 and env.solved == {0, 1}

  # a reverse look-up (functional generalisation) answers the inverse question: "find_by_abbreviation OR"
  env = ToolEnv(toolenv_config(levels=(2,)))
  task = next(t for t in range(0, 400, 4) if task_spec(t, env.config).scenario.subquestions[0].relation
              == "state_by_abbreviation")
  env.reset(task)
  sub = env.spec.scenario.subquestions[0]
  tool = next(t for t in env.spec.tools if t.family == "us_state" and t.key_kind == "name")
  call = {"name": tool.name, "arguments": {"name": sub.key, "field": "find_by_abbreviation"}}
  assert env.step(f"<tool_call>{json.dumps(call)}</tool_call>").info["solved"] == 1

  # step-level states keep the calls made, so a repeat from a training prompt solves nothing either
  config = toolenv_config(levels=(0,))
  states = step_prompts(2, [second, first], config)
  assert states[1].seen_calls and states[1].solved == (1,)
  assert score_step(states[1], second, config) == 0.0 and score_step(states[1], first, config) == 1.0


def test_calls_past_the_limit_are_not_run_but_count():
  env = ToolEnv(toolenv_config(levels=(0,)))  # max_calls_per_step = 8
  env.reset(0)
  good = f"<tool_call>{json.dumps(gold_call(env.spec, env.spec.scenario.subquestions[0]))}</tool_call>"
  junk = '<tool_call>{"name": "nope", "arguments": {}}</tool_call>'
  result = env.step(good + junk * 30)
  assert result.reward == pytest.approx(2 * 1 / 32) and result.info["calls"] == 31
  assert result.info["solve_p"] == pytest.approx(100 / 31) and result.observation.count("<tool_response>") == 8
  assert "the other 23 were not run (they still count as calls)" in result.observation
  assert env.step("x").done and env.step("after the end").reward == 0.0  # not scored as malformed


def test_answers_written_in_the_question_do_not_count():
  spec = pipeline.ScenarioSpec("single_hop", (("state_by_abbreviation",),), ("TX",))
  texas = pipeline.decompose(spec, load_knowledge())
  assert texas.question == "Which US state has the postal abbreviation TX?"
  assert texas.subquestions[0].answer_pattern == "Texas|Tex"  # the quiz's "Texas|Tex|TX", less the echo
  with pytest.raises(pipeline.EchoedAnswer, match="Singapore"):  # its capital is its name: no question
    pipeline.decompose(pipeline.ScenarioSpec("single_hop", (("asian_capital",),), ("Singapore",)), load_knowledge())
  config = toolenv_config()
  for task_id in range(1000):
    scenario = task_spec(task_id, config).scenario
    assert not answer_contains_gold(scenario.question, [scenario.subquestions[i].answer_pattern
                                                        for i in scenario.final]), scenario.question
  env = ToolEnv(toolenv_config(levels=(0,)))
  task = next(t for t in range(0, 400, 4) if task_spec(t, env.config).scenario.question == texas.question)
  env.reset(task)
  assert env.step(texas.question).reward == 0.0  # echoing the question: unmatched, unsolved
  env.reset(task)
  assert env.step("Texas").reward == pytest.approx(1 / 2)  # right, with its sub-question unsolved


def test_a_quiz_folder_of_ones_own(tmp_path):
  folder = tmp_path / "quiz"
  shutil.copytree(QUIZ_DIR, folder)
  text = (folder / "state").read_text()
  (folder / "state").write_text(text.replace("Oregon|Ore|OR:Salem:", "Oregon|Ore|OR:Testville:"))
  config = toolenv_config(quiz_dir=str(folder))
  assert load_knowledge(str(folder)).lookup("state_capital", "Oregon").value == "Testville"
  assert load_knowledge().lookup("state_capital", "Oregon").value == "Salem"  # the system's, cached apart
  env = ToolEnv(config)
  assert env.kb is load_knowledge(str(folder))
  runtime = deploy(pipeline.EnvSpec(task_spec(0, config).scenario, (pipeline.document_for("state_capital"),)),
                   env.kb)
  assert "Testville" in runtime.call("get_state_capital", {"name": "Oregon"}).output
  with pytest.raises(DataSourceMissingError, match="Point quiz_dir at a folder"):
    ToolEnv(toolenv_config(quiz_dir=str(tmp_path / "missing")))
