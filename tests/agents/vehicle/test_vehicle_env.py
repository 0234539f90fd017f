"""VehicleWorld tasks, interfaces and evaluation (arXiv 2509.06736, Sec. 4-5): the task set, the parsers, the
oracle's 100, the random floor, the agents' protocol (in-process and HTTP), and the OpenAI-compatible client
against a local fake endpoint (the `fake_chat_endpoint` fixture of tests/agents/conftest.py)."""

import json
import pytest

from agents.envs import EnvSession, LocalEnvClient, make_pool, pool_config
from agents.chat_model import EndpointReply, http_policy_config
from agents.envs.server import make_app, server_config, start_background
from agents.vehicle import evaluation, tasks
from agents.vehicle.catalog import load_schema
from agents.vehicle.env import VehicleEnv, vehicle_config
from agents.vehicle.interfaces import action_schema, parse_action
from agents.vehicle.policies import HttpChatPolicy
from agents.envs.base import InvalidAction
from core import config as config_lib


def _config(policy="oracle", per_split=10, **overrides):
  config = config_lib.load_config("configs/agents/vehicle.py:quick", [f"policy={policy}",
                                                                     f"tasks_per_split={per_split}",
                                                                     "progress_bar=false"])
  config.unlock()
  for k, v in overrides.items():
    config[k] = v
  evaluation.validate_config(config)
  return config


def test_task_set_is_deterministic_and_covers_four_splits_single_and_multi_turn():
  config = tasks.tasks_config()
  built = [tasks._build_task(i, config) for i in range(1000)]
  assert {t.split for t in built} == {"multimedia", "touch_control", "car_control", "lights"}
  splits = ("multimedia", "touch_control", "car_control", "lights")
  assert [sum(t.split == s for t in built) for s in splits] == [250] * 4
  multi = sum(t.multi_turn for t in built)
  assert 250 < multi < 450 and all(1 <= len(t.turns) <= 3 for t in built)
  assert sum(len(turn.calls) > len(turn.said) for t in built for turn in t.turns) > 30  # implicit prerequisites
  assert tasks.statistics(range(1000), config) == {  # the figures agents/vehicle/README.md quotes
      "tasks": 1000, "multi_turn_tasks": 343, "turns": 1499, "gold_calls": 2703,
      "turns_with_unsaid_prerequisites": 82, "gold_changes": 3754}
  again = tasks._build_task(123, config)
  assert again.initial == built[123].initial and [t.calls for t in again.turns] == [t.calls for t in built[123].turns]
  other = tasks._build_task(123, tasks.tasks_config(seed=1))
  assert other.initial != built[123].initial
  for t in built[:50]:
    for turn in t.turns:
      assert turn.instruction[0].isupper() and "{" not in turn.instruction and turn.changes


def test_parser_turns_bad_output_into_clear_messages():
  assert parse_action("All done, enjoy the ride!", "fc")[0].kind == "finish"
  a = parse_action('Sure.\n<tool_call>{"name": "seat_set_heater", "arguments": {"seat": "driver", "level": 2}}'
                   '</tool_call><tool_call>{"name": "hud_turn_on"}</tool_call>', "fc")
  assert [x.name for x in a] == ["seat_set_heater", "hud_turn_on"]
  a = parse_action('```json\n{"function": {"name": "hud_turn_on", "arguments": "{}"}}\n```', "fc")
  assert a[0].kind == "call" and a[0].arguments == {}
  assert parse_action('[{"op": "replace", "path": "/hud/power", "value": true}]', "sfc")[0].kind == "patch"
  with pytest.raises(InvalidAction, match="could not read the JSON"):
    parse_action('{"name": "hud_turn_on", "arguments": {', "fc")
  with pytest.raises(InvalidAction, match="no patch action"):
    parse_action('{"patch": {"hud.power": true}}', "fc")
  with pytest.raises(InvalidAction, match="not an action"):
    parse_action('{"hello": 1}', "sfc")
  with pytest.raises(InvalidAction, match="empty"):
    parse_action("   ", "sfc")
  assert action_schema("sfc")["oneOf"][0]["oneOf"][0]["required"] == ["select"]


def test_environment_answers_mistakes_with_observations_not_crashes():
  env = VehicleEnv(vehicle_config(interface="fc_sfc"))
  env.reset(1)
  for action, expected in [('{"name": "seat_set_heater", "arguments": {"seat": "driver", "level": 2}}',
                            "select modules first"),
                           ('{"select": ["seat", "hud", "door", "window", "mirror", "fridge", "wiper"]}',
                            "at most 6"),
                           ('{"select": ["seet"]}', "Did you mean 'seat'"),
                           ('{"name": "list_modules"}', "no list modules action")]:
    result = env.step(action)
    assert result.info["invalid"] and expected in result.observation and not result.done
  result = env.step('{"select": ["hud"]}')
  assert "## hud" in result.observation and "hud_turn_on()" in result.observation
  result = env.step('{"name": "seat_set_heater", "arguments": {"seat": "driver", "level": 2}}')
  assert "module seat is not selected" in result.observation
  result = env.step('{"name": "hud_set_height", "arguments": {"height": 99}}')
  assert "refused" in result.observation and "1..10" in result.observation
  result = env.step('{"name": "hud_fly", "arguments": {}}')
  assert "unknown API 'hud_fly'" in result.observation
  for _ in range(len(env.task.turns)):
    result = env.step("I have done it.")
  assert result.done and not result.info["success"] and len(result.info["turn_metrics"]) == len(env.task.turns)

  env = VehicleEnv(vehicle_config(interface="sfc"))
  env.reset(2)
  result = env.step('{"patch": {"hud.power": true}}')
  assert result.info["invalid"] and "select modules first" in result.observation
  result = env.step('{"select": ["hud"]}')
  result = env.step('{"patch": {"hud": {"power": "on"}, "vehicle.speed": 3}}')
  assert "expected true or false" in result.observation and "not selected" in result.observation


def test_oracle_scores_100_under_every_interface_and_random_is_the_floor():
  results = evaluation.evaluate(_config("oracle", 25), None)
  for row in results["rows"]:
    assert row["tasks"] > 0
    for key in ("change_accuracy", "f1_positive", "f1_negative", "success", "task_success"):
      assert row[key] == 100.0, (row["interface"], row["split"], key)
  tokens = {r["interface"]: r["env_tokens_per_task"] for r in results["rows"] if r["split"] == "all"}
  assert tokens["fc"] < tokens["sfc"] < tokens["fc_sfc"]  # state views cost tokens
  floor = evaluation.evaluate(_config("random", 10), None)
  for row in floor["rows"]:
    assert row["change_accuracy"] < 15.0 and row["f1_negative"] > 95.0


def test_served_over_http_like_any_agents_environment(tmp_path):
  env_config = vehicle_config(interface="sfc")
  pool = make_pool("vehicle", env_config, pool_config())
  app = make_app(pool, server_config(port=0), None, name="vehicle", env_config=env_config)
  with start_background(app, server_config(port=0)) as srv:
    config = _config("oracle", 3, env_url=srv.url, interfaces=("sfc",))
    results = evaluation.evaluate(config, str(tmp_path))
  assert all(row["task_success"] == 100.0 for row in results["rows"])
  assert (tmp_path / "results.md").read_text().count("| sfc |") == 5
  assert len((tmp_path / "episodes.jsonl").read_text().splitlines()) == 12


def test_a_server_of_another_environment_interface_or_task_set_is_refused_before_any_episode(tmp_path):
  """Audit finding: against a gridworld server, or a vehicle server of another interface, the evaluation ran every
  episode into an error and exited 0 with an all-zero table."""
  from agents.envs import env_config as default_env_config

  def serving(name, cfg):
    return start_background(make_app(make_pool(name, cfg, pool_config()), server_config(port=0), None, name=name,
                                     env_config=cfg), server_config(port=0))

  def refused(url, message, **overrides):
    config = _config("oracle", 1, env_url=url, interfaces=("sfc",), **overrides)
    with pytest.raises(config_lib.ConfigError, match=message):
      evaluation.evaluate(config, str(tmp_path))
    assert not (tmp_path / "episodes.jsonl").exists()  # refused before the first episode

  with serving("gridworld", default_env_config("gridworld")) as srv:
    refused(srv.url, "runs environment 'gridworld', not config.env = 'vehicle'.*serve.py:vehicle")
  with serving("vehicle", vehicle_config(interface="fc")) as srv:
    refused(srv.url, r"interface = 'fc' there, 'sfc' here.*--config.env_config.interface=\"sfc\".*"
                     r"--config.interfaces=\"\('fc',\)\"")
    results = evaluation.evaluate(_config("oracle", 1, env_url=srv.url, interfaces=("fc",)), None)
    assert all(row["task_success"] == 100.0 for row in results["rows"])  # the interface it serves: accepted
  served = vehicle_config(interface="sfc")
  served.tasks.seed += 1  # another task generator: the local scoring would judge other tasks
  with serving("vehicle", served) as srv:
    refused(srv.url, r"tasks.seed = 1 there, 0 here.*--config.env_config.tasks.seed=0")


def test_openai_compatible_client_against_a_local_fake(monkeypatch, fake_chat_endpoint):
  monkeypatch.setenv("FAKE_KEY", "sk-test")
  url = fake_chat_endpoint.url
  policy = HttpChatPolicy(http_policy_config(url=url, model="tiny", api_key_env="FAKE_KEY"))
  reply = policy.act([{"role": "user", "content": "hi"}])
  assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ("Done.", 111, 2)
  path, auth, body = fake_chat_endpoint.seen[-1]
  assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "tiny"
  config = _config("oracle", 1, interfaces=("fc",))
  config.policy, config.http.url, config.http.model = "http", url, "tiny"
  results = evaluation.evaluate(config, None)
  row = next(r for r in results["rows"] if r["split"] == "all")
  assert row["tasks"] == 4 and row["policy_tokens_per_task"] > 100 and row["task_success"] == 0.0
  with pytest.raises(ValueError, match="http.url is empty"):
    HttpChatPolicy(http_policy_config())


def test_config_errors_are_clear():
  config = _config()
  config.interfaces = ("fc", "xml")
  with pytest.raises(config_lib.ConfigError, match="interfaces\\[1\\] = 'xml'"):
    evaluation.validate_config(config)
  config = _config()
  config.first_task = -5  # every episode would fail at reset
  with pytest.raises(config_lib.ConfigError, match=r"first_task = -5 is invalid: must be a task id >= 0\. Fix"):
    evaluation.validate_config(config)
  config = _config()
  config.env.max_modules = 2  # 224 turns need more: the oracle's SFC table fell to 85% with no error shown
  with pytest.raises(config_lib.ConfigError, match=r"env.max_modules = 2 is invalid: must be >= env.tasks.max_modules "
                                                   r"= 6 .*Fix: pass --config.env.max_modules=6"):
    evaluation.validate_config(config)
  config = _config()
  config.splits = ("lights", "lights")
  with pytest.raises(config_lib.ConfigError, match=r"splits = \('lights', 'lights'\) names an entry twice"):
    evaluation.validate_config(config)


def test_malformed_json_of_any_shape_is_an_invalid_action_not_a_crash():
  """Review finding: "[" * 2000 (under the action length limit) raised RecursionError, a 5,000-digit integer
  ValueError, a 400-digit one for a float argument OverflowError; through the pool each ended the episode."""
  deep = "[" * 2000 + "]" * 2000
  cases = [(deep, "fc", "nests more than"),
           ('{"patch": ' + '{"a": ' * 1500 + "1" + "}" * 1501, "sfc", "nests more than"),
           ('{"patch": ' + '{"a": ' * 40 + "1" + "}" * 41, "sfc", "nests more than"),  # parses; still refused
           ('{"name": "radio_tune", "arguments": {"frequency": %s}}' % ("9" * 5000), "fc", "number in it is too long"),
           ('{"name": "radio_tune", "arguments": "%s"}' % ("[" * 900 + "]" * 900), "fc", "arguments of radio_tune"),
           ('{"name": "radio_tune", "arguments": "{\\"frequency\\": %s}"}' % ("9" * 5000), "fc", "too long")]
  for text, interface, expected in cases:
    with pytest.raises(InvalidAction, match=expected):
      parse_action(text, interface)
  env = VehicleEnv(vehicle_config(interface="fc"))
  env.reset(0)
  result = env.step('{"name": "radio_tune", "arguments": {"frequency": %s}}' % ("9" * 400))
  assert "refused" in result.observation and "out of range" in result.observation and not result.done
  result = env.step(deep)
  assert result.info["invalid"] and "nests more than" in result.observation and not result.done
  pool = make_pool("vehicle", vehicle_config(interface="fc"), pool_config(step_timeout_s=0.0))
  with LocalEnvClient(pool) as client, EnvSession(client, task_id=0) as session:
    session.start()
    result = session.step(deep)
    assert "error" not in result.info and result.info["invalid"] and not result.done


def test_every_turn_is_scored_when_the_step_budget_ends_the_episode():
  """Review finding: with 4 steps per episode and 2 per turn the oracle's unfinished turns had no record, and the
  means covered 55 of 65 turns (100% change accuracy, 75% task success)."""
  task_id = next(i for i in range(100) if len(tasks.make_task(i).turns) == 3)
  env = VehicleEnv(vehicle_config(interface="fc", max_steps=1))
  oracle = env.oracle(task_id)
  result = env.reset(task_id)
  result = env.step(oracle.act(result.observation))  # turn 1's calls; the budget ends before its "Done."
  assert result.done and not result.info["success"]
  turns = result.info["turn_metrics"]
  assert [t["status"] for t in turns] == ["cut", "unreached", "unreached"]
  assert turns[0]["success"] and turns[0]["change_accuracy"] == 1.0  # its state is right: scored as it stands
  assert all(t["change_accuracy"] == 0.0 and not t["success"] for t in turns[1:])
  assert result.info["progress"] == pytest.approx(1 / 3)
  again = env.step("Done.")
  assert again.done and len(again.info["turn_metrics"]) == 3  # closed once

  config = _config("oracle", 10, interfaces=("fc",))
  config.env.max_steps, config.env.max_steps_per_turn = 4, 2  # the :llm budgets
  results = evaluation.evaluate(config, None)
  row = next(r for r in results["rows"] if r["split"] == "all")
  total = sum(len(tasks.make_task(i, config.env.tasks).turns) for i in evaluation.task_ids(config))
  assert row["turns"] == total == 65
  assert row["change_accuracy"] < 100.0 and row["success"] < 100.0 and row["task_success"] == 75.0


def test_a_failed_environment_counts_its_remaining_turns(monkeypatch):
  """The pool answers an environment that raises with `info = {"error": ...}` only; the turns it did not score
  count as turns in which nothing changed, and the episode fails."""
  act = VehicleEnv._act

  def broken(self, a):
    if a.kind == "finish" and self.turn == 1:
      raise RuntimeError("the car's computer crashed")
    return act(self, a)

  monkeypatch.setattr(VehicleEnv, "_act", broken)
  config = _config("oracle", 10, interfaces=("fc",))
  results = evaluation.evaluate(config, None)
  row = next(r for r in results["rows"] if r["split"] == "all")
  ids = evaluation.task_ids(config)
  made = [tasks.make_task(i, config.env.tasks) for i in ids]
  assert row["turns"] == sum(len(t.turns) for t in made)
  single = sum(len(t.turns) == 1 for t in made)
  assert row["task_success"] == pytest.approx(100.0 * single / len(made))
  assert row["success"] == pytest.approx(100.0 * len(made) / row["turns"])  # each task's first turn only
  assert row["errors"] == len(made) - single  # each failed episode is counted, and shown in the table
  assert "| env errors |" in evaluation.markdown(results)
  record = evaluation.complete_turns({"turns": [], "success": True}, made[0])
  assert len(record["turns"]) == len(made[0].turns) and not record["success"]
  assert {t["status"] for t in record["turns"]} == {"unscored"}


def test_the_quick_report_refuses_scores_with_environment_errors(monkeypatch, tmp_path):
  """A scripted policy's episodes that an environment error ended would pass for its score in the main table: the
  report fails instead (the paper's row then reads FAILED)."""
  from agents.vehicle import report
  monkeypatch.setattr(VehicleEnv, "_act", lambda self, a: (_ for _ in ()).throw(RuntimeError("crashed")))
  with pytest.raises(RuntimeError, match=r"oracle episodes ended with an environment error"):
    report._run("oracle", 1, str(tmp_path))


def test_http_policy_is_closed_and_reads_null_usage(monkeypatch, fake_chat_endpoint):
  closed = []
  monkeypatch.setattr(HttpChatPolicy, "close", lambda self: closed.append(True))
  config = _config("oracle", 1, interfaces=("fc",))
  config.policy, config.http.url, config.http.model = "http", fake_chat_endpoint.url, "tiny"
  evaluation.evaluate(config, None)
  assert closed == [True]
  policy = HttpChatPolicy(http_policy_config(url=fake_chat_endpoint.url, model="tiny"))
  monkeypatch.setattr(policy.endpoint, "complete",
                      lambda messages: EndpointReply("Done.", {"prompt_tokens": None, "completion_tokens": 3}))
  reply = policy.act([{"role": "user", "content": "hi there"}])
  assert reply.completion_tokens == 3 and reply.prompt_tokens > 0


def test_turns_record_their_by_an_amount_requests_consistently_with_the_gold_states():
  """`Turn.relative` (the targets of requests like "up by 10" from another start): for every such property, the
  gold start plus the recorded move, within the recorded bounds, is the gold value after the turn."""
  seen = 0
  for task_id in range(200):
    task = tasks.make_task(task_id)
    for t, turn in enumerate(task.turns):
      before, after = task.state_before(t), task.state_after(t)
      for path, (move, low, high) in turn.relative.items():
        seen += 1
        assert move != 0 and low < high and path in turn.changes
        assert min(max(before[path] + move, low), high) == pytest.approx(after[path]), (task_id, t, path)
  assert seen > 20  # a fifth or so of the numeric writes are relative


def test_the_gold_calls_replayed_from_the_gold_start_give_the_gold_state():
  """`tasks.targets_from` (a turn's targets from the agent's start) is the gold state after the turn when the
  start is the gold one, for every turn of the 1,000 tasks: the oracle's scores cannot move."""
  schema = load_schema()
  turns = 0
  for task_id in range(1000):
    task = tasks.make_task(task_id)
    for t, turn in enumerate(task.turns):
      after = task.state_after(t)
      assert tasks.targets_from(schema, turn, task.state_before(t)) == {p: after[p] for p in turn.changes}
      turns += 1
  assert turns == 1499


@pytest.mark.parametrize("task_id,request_api", [(12, "music_next_track"), (295, "reading_light_toggle")])
def test_a_relative_request_is_scored_from_the_agents_own_start(task_id, request_api):
  """Turn 3 asks to skip to the next song (task 12) or to toggle a reading light (task 295). After turn 1 also made
  that call by mistake, doing what turn 3 asks from there is right and leaving it undone is wrong (the gold
  values, one song or one toggle behind, had scored it the other way round)."""
  task = tasks.make_task(task_id)
  assert request_api in [c.name for c in task.turns[2].said]

  def third_turn(do_the_request: bool) -> dict:
    env = VehicleEnv(vehicle_config(interface="fc"))
    env.reset(task_id)
    for k, turn in enumerate(task.turns):
      calls = [c.to_json() for c in turn.calls]
      if k == 0:
        calls.append(next(c.to_json() for c in task.turns[2].said if c.name == request_api))  # the slip
      if k == 2 and not do_the_request:
        calls = [c for c in calls if c["name"] != request_api]
      env.step(json.dumps(calls))
      result = env.step("Done.")
    return result.info["turn_metrics"][2]

  done, undone = third_turn(True), third_turn(False)
  assert done["success"] and done["change_accuracy"] == 1.0, done["differences"]
  assert not undone["success"] and undone["change_accuracy"] < 1.0


def test_an_invalid_action_after_valid_ones_reports_them_all_and_spends_the_step_budget():
  """Review finding: [set the volume, list the APIs of a module that does not exist] changed the volume but
  answered only "Invalid action", and a turn of such steps never ran out of its step budget."""
  env = VehicleEnv(vehicle_config(interface="fc", max_steps_per_turn=2))
  env.reset(1)
  before = env.world.state["environment.volume"]
  volume = 77 if before != 77 else 76
  step = json.dumps([{"name": "environment_set_volume", "arguments": {"volume": volume}},
                     {"name": "list_apis", "arguments": {"module": "bogus"}}])
  result = env.step(step)
  assert env.world.state["environment.volume"] == volume and "environment_set_volume" in result.observation
  assert "Invalid action" in result.observation and not result.info["invalid"] and env.turn == 0
  result = env.step(step)
  assert "step budget of this turn is used up" in result.observation and (env.turn == 1 or result.done)
  # a step whose first action is invalid is an invalid step (nothing took effect), and spends the budget too
  env.reset(1)
  bad = json.dumps({"name": "list_apis", "arguments": {"module": "bogus"}})
  assert env.step(bad).info["invalid"] and env.turn == 0
  result = env.step(bad)
  assert "step budget of this turn is used up" in result.observation and (env.turn == 1 or result.done)


def test_a_turn_the_sfc_patch_cannot_reproduce_stops_generation(monkeypatch):
  """If the patch rules could not write a property that an API can (here: the volume), generation fails loudly
  instead of quietly dropping every turn that touches it (which only pinned task statistics would notice)."""
  original = tasks.VehicleWorld.apply_patch

  def without_volume(self, patch, **kwargs):
    return original(self, {k: v for k, v in patch.items() if k != "environment.volume"}, **kwargs)
  monkeypatch.setattr(tasks.VehicleWorld, "apply_patch", without_volume)
  with pytest.raises(tasks.GenerationError, match="environment.volume"):
    for task_id in range(400):
      tasks._build_task(task_id, tasks.tasks_config())
