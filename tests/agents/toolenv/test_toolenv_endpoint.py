"""The tool-environment evaluation against an OpenAI-compatible endpoint (`agents.chat_model.ChatEndpoint`, the
client the VehicleWorld evaluation shares), served by the local fake of tests/agents/conftest.py (loopback)."""

import pytest

from agents.toolenv import evaluation
from core import config as config_lib


def _config(**overrides):
  config = config_lib.load_config("configs/agents/toolenv.py:http", ["tasks_per_cell=1", "env.levels=(0,)",
                                                                     "progress_bar=false"])
  for key, value in overrides.items():
    config_lib.apply_overrides(config, [f"{key}={value}"])
  return config


def test_http_policy_runs_the_evaluation(monkeypatch, fake_chat_endpoint, tmp_path):
  monkeypatch.setenv("FAKE_KEY", "sk-test")
  fake_chat_endpoint.reply = '<tool_call>{"name": "no_such_tool", "arguments": {}}</tool_call>'
  config = _config(**{"http.url": fake_chat_endpoint.url, "http.model": "tiny", "http.api_key_env": "FAKE_KEY",
                      "env.max_steps": 2})
  evaluation.validate_config(config)
  results = evaluation.evaluate(config, str(tmp_path))
  row = results["rows"][-1]
  assert row["group"] == "all" and row["episodes"] == 4
  assert row["calls_per_episode"] == 2.0 and row["solve_f1"] == 0.0  # two unknown-tool calls per episode
  assert len(fake_chat_endpoint.seen) == 8
  path, auth, body = fake_chat_endpoint.seen[1]
  assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "tiny"
  roles = [m["role"] for m in body["messages"]]
  assert roles == ["system", "user", "assistant", "user"]  # the conversation so far
  assert "unknown tool 'no_such_tool'" in body["messages"][-1]["content"]


def test_clear_config_errors():
  with pytest.raises(config_lib.ConfigError, match="http.url is empty.*--config.http.url="):
    evaluation.validate_config(_config())
  missing = config_lib.load_config("configs/agents/toolenv.py:llm_step_rl", ["llm.source=/no/such/export"])
  with pytest.raises(config_lib.ConfigError, match="does not exist. Fix: export an RL run first"):
    evaluation.validate_config(missing)
  with pytest.raises(config_lib.ConfigError, match="task_offset"):
    evaluation.validate_config(_config(**{"http.url": "http://127.0.0.1:1/v1", "task_offset": 6}))
  # Audit finding: no levels gave a ZeroDivisionError (task ids are laid out over the levels).
  no_levels = config_lib.load_config("configs/agents/toolenv.py:oracle", ["env.levels=()"])
  with pytest.raises(config_lib.ConfigError, match=r"env.levels = \(\) is invalid: must name at least one "
                                                   r"complexity level. Fix: pass --config.env.levels="):
    evaluation.validate_config(no_levels)
  with pytest.raises(config_lib.ConfigError, match=r"task_offset = -4 is invalid"):
    evaluation.validate_config(config_lib.load_config("configs/agents/toolenv.py:oracle", ["task_offset=-4"]))


def test_environment_errors_are_counted_and_fail_the_quick_report(monkeypatch, tmp_path):
  """Episodes an environment error ended stay in the means as failures, are counted per row (`errors`, also a
  column of the markdown), and make the quick report fail rather than show the scripted policy's score."""
  from agents.toolenv import report
  from agents.toolenv.env import ToolEnv

  monkeypatch.setattr(ToolEnv, "_step", lambda self, action: (_ for _ in ()).throw(RuntimeError("tool server down")))
  config = config_lib.load_config("configs/agents/toolenv.py:oracle", ["tasks_per_cell=1", "env.levels=(0,)",
                                                                       "progress_bar=false"])
  results = evaluation.evaluate(config, None)
  row = results["rows"][-1]
  assert row["group"] == "all" and row["errors"] == row["episodes"] > 0 and row["solve_f1"] == 0.0
  assert "| errors |" in evaluation.markdown(results)
  with pytest.raises(RuntimeError, match="oracle episodes ended with an environment error"):
    report._run("oracle", 1, str(tmp_path))


def test_an_environment_that_fails_at_reset_is_counted_in_all(monkeypatch):
  from agents.toolenv.env import ToolEnv
  monkeypatch.setattr(ToolEnv, "_reset", lambda self, task_id: (_ for _ in ()).throw(RuntimeError("no tools")))
  config = config_lib.load_config("configs/agents/toolenv.py:oracle", ["tasks_per_cell=1", "env.levels=(0,)",
                                                                       "progress_bar=false"])
  rows = evaluation.evaluate(config, None)["rows"]
  assert [r["group"] for r in rows] == ["all"] and rows[0]["errors"] == rows[0]["episodes"] > 0


def test_the_paired_comparison_of_two_evaluations(tmp_path, capsys):
  import json as json_lib

  from agents.toolenv import compare

  def write(name, scores):
    path = tmp_path / name
    path.mkdir()
    (path / "episodes.jsonl").write_text("".join(json_lib.dumps({"task_id": i, "solve_f1": s}) + "\n"
                                                 for i, s in enumerate(scores)))
    return str(path)

  before, after = write("before", [0, 50, 100, 100]), write("after", [100, 50, 100, 0])
  assert compare.main([before, after]) == 0
  assert "solve_f1 over 4 paired episodes, candidate - baseline: +0.00" in capsys.readouterr().out
  result = compare.compare(compare.load_episodes(before), compare.load_episodes(after))
  assert (result.better, result.worse, result.equal) == (1, 1, 2) and result.low < 0 < result.high
  other = write("other", [0, 50, 100])
  assert compare.main([before, other]) == 2 and "different tasks" in capsys.readouterr().err
  assert compare.main([before, str(tmp_path / "missing")]) == 2 and "Fix" in capsys.readouterr().err
