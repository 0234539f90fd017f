"""benchmarks.agents_rollout's timed RL step and benchmarks.agents_env_load's error count and server shutdown,
with stand-ins: no policy, no environment server."""

import os
import subprocess
import sys
import types

import jax.numpy as jnp


def test_timed_rl_step_starts_from_the_warm_up_state_and_retries_a_compiling_step(monkeypatch):
  from benchmarks import agents_rollout as ar
  seen, compiles = [], iter([7, 2, 0, 0])  # the warm-up compiles, so does the first timed try

  class Learner:
    tree = {"policy": jnp.zeros(2)}

    def checkpoint_tree(self):
      return self.tree

    def load_checkpoint_tree(self, tree):
      self.tree = tree

  def fake_rl_step(learner, client, config, tasks, turns, key, step):
    seen.append((float(learner.tree["policy"][0]), step))
    learner.tree = {"policy": learner.tree["policy"] + 1.0}  # the update moves the policy
    return {"compiles": next(compiles)}

  monkeypatch.setattr(ar, "rl_step", fake_rl_step)
  step = ar.timed_rl_step(Learner(), None, None, [0, 1], 1, None)
  assert step == {"compiles": 0, "attempts": 2}
  assert seen == [(0.0, 0), (0.0, 0), (0.0, 0)]  # every run from the warm-up's start state, same step number


def test_timed_rl_step_gives_up_after_the_tries(monkeypatch):
  from benchmarks import agents_rollout as ar
  learner = types.SimpleNamespace(checkpoint_tree=lambda: {}, load_checkpoint_tree=lambda tree: None)
  monkeypatch.setattr(ar, "rl_step", lambda *args: {"compiles": 1})
  step = ar.timed_rl_step(learner, None, None, [0], 1, None)
  assert step == {"compiles": 1, "attempts": ar.RL_STEP_TRIES}  # reported, not hidden


def _load_test(monkeypatch, client_cls, clients=3):
  from benchmarks import agents_env_load as bench
  monkeypatch.setattr(bench, "HttpEnvClient", client_cls)
  monkeypatch.setattr(bench, "oracle_episode", lambda client, env, task_id, oracles: (2, True, ""))
  monkeypatch.setattr(bench.httpx, "get", lambda url, **kw: types.SimpleNamespace(json=lambda: {"live": 0}))
  return bench.load_test("http://127.0.0.1:1", "gridworld", clients, 20, 5.0, os.getpid(), {})


def test_load_counts_a_client_that_cannot_be_created(monkeypatch):
  class Refused:
    def __init__(self, url, config):
      raise ConnectionError("refused")

  load = _load_test(monkeypatch, Refused)
  assert load["errors"] == 3 and load["episodes"] == 0
  assert load["first_error"] == "client: ConnectionError: refused"


def test_load_counts_a_client_that_fails_to_close(monkeypatch):
  class FailsToClose:
    def __init__(self, url, config):
      pass

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      raise RuntimeError("close failed")

  load = _load_test(monkeypatch, FailsToClose)
  assert load["steps"] >= 20 and load["episodes"] >= 10  # the episodes ran and counted no error
  assert load["errors"] == 3 and "close failed" in load["first_error"]


def test_stop_server_kills_a_server_that_ignores_sigterm():
  from benchmarks import agents_env_load as bench
  process = subprocess.Popen(
      [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                             "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline().strip() == "ready"  # the handler is in place
  bench.stop_server(process, timeout=0.5)
  assert process.returncode == -9  # SIGKILL after the SIGTERM was ignored; reaped
