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
