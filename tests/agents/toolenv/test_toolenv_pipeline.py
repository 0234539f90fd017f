"""The five construction stages of arXiv 2508.08791: determinism, the four scenario types, documents and their
integration, complexity operators making harder variants, deployment (validation, time limit), the
environment on the agents' protocol, and step-level prompts."""

import json
import random
import time

import pytest

from agents.envs import EnvSession, LocalEnvClient, make_pool, pool_config
from agents.toolenv import pipeline
from agents.toolenv.env import ToolEnv, task_spec, toolenv_config
from agents.toolenv.evaluation import evaluate
from agents.toolenv.knowledge import load_knowledge
from agents.toolenv.runtime import ToolRuntime, deploy, validate
from agents.toolenv.steps import score_step, step_prompts
from core import config as config_lib

KB = load_knowledge()


def test_pipeline_is_deterministic_by_seed():
  for t in pipeline.SCENARIO_TYPES:
    a, b = pipeline.build("seed-1", t, 4, KB), pipeline.build("seed-1", t, 4, KB)
    assert a == b
    assert pipeline.build("seed-2", t, 4, KB).scenario != a.scenario or t == "single_hop"
  # the scenario does not depend on the level: levels are harder variants of one scenario
  assert pipeline.build("s", "multi_hop", 0, KB).scenario == pipeline.build("s", "multi_hop", 4, KB).scenario


def test_decomposition_gives_the_four_types():
  for seed in range(30):
    rng = random.Random(seed)
    shapes = {}
    for t in pipeline.SCENARIO_TYPES:
      s = pipeline.decompose(pipeline.sample_scenario(KB, t, rng), KB)
      shapes[t] = ([sq.depends_on for sq in s.subquestions], s.final)
      for sq in s.subquestions:
        assert KB.lookup(sq.relation, sq.key).value == sq.answer  # every gold answer is a fact
    assert shapes["single_hop"] == ([None], (0,))
    assert set(shapes["parallel_single_hop"][0]) == {None} and len(shapes["parallel_single_hop"][0]) in (2, 3)
    assert shapes["multi_hop"] == ([None, 0], (1,))
    assert shapes["parallel_multi_hop"] == ([None, 0, None, 2], (1, 3))


def test_documents_and_function_integration():
  scenario = pipeline.Scenario("parallel_single_hop", "q", tuple(
      pipeline.SubQuestion(i, r, "k", "t", None, "a", "a") for i, r in enumerate(
          ["african_capital", "asian_capital", "state_capital", "state_flower", "state_capital", "morse_code"])), ())
  docs = pipeline.generate_documents(scenario)
  assert len(docs) == 6 and docs[0].name == "get_capital_of_african_country"
  merged = {d.name: d for d in pipeline.integrate(docs)}
  assert set(merged) == {"get_capital_of_country", "lookup_us_state", "encode_morse"}
  assert merged["get_capital_of_country"].binding.relations() == {"african_capital", "asian_capital"}
  assert merged["lookup_us_state"].parameters["properties"]["field"]["enum"] == ["capital", "flower"]


def test_each_operator_makes_a_harder_variant():
  for i in range(80):
    t = pipeline.SCENARIO_TYPES[i % 4]
    scores = [pipeline.complexity(pipeline.build(f"c{i}", t, level, KB))["score"] for level in pipeline.LEVELS]
    assert all(a < b for a, b in zip(scores, scores[1:])), (i, scores)
  # and agents feel it: a schema-following random caller falls with tools and field choices,
  # a caller that ignores schemas fails once a required field appears
  f1 = {}
  for policy in ("random", "naive"):
    for level in (0, 1, 2):
      config = config_lib.load_config("configs/agents/toolenv.py:oracle", [f"policy={policy}", "tasks_per_cell=12",
                                                                           "progress_bar=false"])
      config.unlock()
      config.env.levels = (level,)
      f1[policy, level] = next(r["solve_f1"] for r in evaluate(config, None)["rows"] if r["group"] == "all")
  assert f1["random", 0] > f1["random", 1] > f1["random", 2]
  assert f1["naive", 0] > 70 and f1["naive", 2] == 0.0


def test_random_floor_passes_what_it_saw_to_a_later_hop_not_the_gold_answer():
  from agents.toolenv.policies import RandomPolicy
  config = config_lib.load_config("configs/agents/toolenv.py:random", ["progress_bar=false"])
  task_id = 2  # type i % 4 = multi_hop
  first, second = task_spec(task_id, config.env).scenario.subquestions
  assert second.depends_on == first.index and second.key == first.answer
  policy = RandomPolicy(config.env)
  policy.start(task_id)
  messages = [{"role": "user", "content": "the task"}]
  messages += [{"role": "assistant", "content": policy.act(messages)},
               {"role": "user", "content": "<tool_response>Atlantis</tool_response>"}]  # a wrong first hop
  call = json.loads(policy.act(messages).removeprefix("<tool_call>").removesuffix("</tool_call>"))
  passed = json.dumps(call["arguments"])
  assert "Atlantis" in passed and second.key not in passed, call


def test_deployed_tools_validate_arguments_and_keep_a_time_limit():
  spec = pipeline.build("d", "single_hop", 4, KB)
  runtime = deploy(spec, KB)
  name = spec.tools[0].name
  out = runtime.call(name, {"query": {"value": 3, "match": "fuzzy"}, "colour": "red"})
  assert not out.ok and "arguments.query.value must be a string" in out.output
  assert 'arguments.query.match must be one of "exact", "case_insensitive"' in out.output
  assert "arguments.colour is not a parameter" in out.output and "arguments.field is required" in out.output
  assert validate({"type": "integer", "minimum": 20}, 5) == ["arguments must be >= 20, got 5"]
  sub = spec.scenario.subquestions[0]
  call = pipeline.gold_call(spec, sub)
  assert runtime.call(call["name"], call["arguments"]).ok
  call["arguments"]["query"] = {"value": sub.key.swapcase(), "match": "exact"}
  if sub.key.swapcase() != sub.key:
    assert "no exact match" in runtime.call(call["name"], call["arguments"]).output

  slow = ToolRuntime(time_limit_s=0.2)
  slow.register({"name": "sleepy", "parameters": {"type": "object", "properties": {}}}, lambda args: time.sleep(2))
  start = time.perf_counter()
  result = slow.call("sleepy", {})
  # 1.5 s: 7x the limit, yet 0.5 s short of the tool's own 2 s, so only a call that waited for the tool fails
  assert not result.ok and "did not finish within 0.2 s" in result.output and time.perf_counter() - start < 1.5


def test_oracle_solves_every_type_and_level_over_the_protocol():
  config = toolenv_config()
  client = LocalEnvClient(make_pool("toolenv", config, pool_config()))
  env = ToolEnv(config)
  for task_id in range(200):
    oracle = env.oracle(task_id)
    with EnvSession(client, task_id=task_id) as session:
      result = session.start()
      while not result.done:
        result = session.step(oracle.act(result.observation))
    assert result.info["success"] and result.info["solve_f1"] == 100.0 and result.reward == 1.0


def test_step_level_prompts_rebuild_intermediate_states():
  config = toolenv_config()
  task_id = 7  # parallel multi-hop
  env = ToolEnv(config)
  oracle = env.oracle(task_id)
  result, responses, rewards = env.reset(task_id), [], []
  while not result.done:
    responses.append(oracle.act(result.observation))
    result = env.step(responses[-1])
    rewards.append(result.reward)
  prompts = step_prompts(task_id, responses, config)
  assert [len(p.solved) for p in prompts] == [0, 2, 4] and [len(p.messages) for p in prompts] == [2, 4, 6]
  assert prompts[1].messages[-1]["content"].startswith("<tool_response>")
  assert [score_step(p, r, config) for p, r in zip(prompts, responses)] == pytest.approx(rewards)
  assert score_step(prompts[2], "", config) == -0.5  # a different response from the same state
  assert json.loads(json.dumps([p.messages for p in prompts]))  # plain data a trainer can store
  assert task_spec(task_id, config).level == 1
