"""The environment protocol in-process and over a real HTTP server on 127.0.0.1: identical episodes, isolation
between clients, token, size limits, crashes and hangs, retries, unreadable replies, and no leak over thousands
of episodes."""

import concurrent.futures
import gc
import os
import threading
import time
import types
import weakref

import httpx
import pytest

from agents.envs import (EnvPool, EnvProtocolError, EnvRequestError, EnvSession, HttpEnvClient, LocalEnvClient,
                         PoolFullError, TextEnv, UnknownEnvError, env_config, http_client_config, make_env,
                         make_pool, pool_config)
from agents.envs.client import TOKEN_ENV_VAR
from agents.envs.server import check_exposure, make_app, read_token, server_config, start_background, validate_serve_config
from core import config as config_lib

FAST_CLIENT = http_client_config(retries=1, backoff_s=0.01, timeout_s=5.0, connect_timeout_s=1.0)


def serve(pool, token=None, name="env", env_cfg=None, **server_overrides):
  config = server_config(port=0, **server_overrides)
  return start_background(make_app(pool, config, token, name=name, env_config=env_cfg), config, token)


@pytest.fixture(scope="module")
def servers():
  running = {}
  for name in ("gridworld", "textcraft", "search", "sciworld"):
    running[name] = serve(make_pool(name, env_config(name), pool_config()), name=name, env_cfg=env_config(name))
  yield running
  for server in running.values():
    server.stop()


def oracle_episode(client, name, task_id):
  env_idx = client.create()
  results = [client.reset(env_idx, task_id)]
  oracle = make_env(name).oracle(task_id)
  while not results[-1].done:
    results.append(client.step(env_idx, oracle.act(results[-1].observation)))
  observation = client.observation(env_idx)
  client.close(env_idx)
  return [r.to_json() for r in results], observation


@pytest.mark.parametrize("name", ["gridworld", "textcraft", "search", "sciworld"])
def test_in_process_and_http_give_identical_episodes(servers, name):
  local = LocalEnvClient(make_pool(name, env_config(name), pool_config()))
  with HttpEnvClient(servers[name].url, FAST_CLIENT) as remote:
    for task_id in range(6):
      here, there = oracle_episode(local, name, task_id), oracle_episode(remote, name, task_id)
      assert here == there
      assert here[0][-1]["info"]["success"]
      assert here[1] == here[0][-1]["observation"]


def test_a_client_cannot_touch_another_clients_environment(servers):
  with HttpEnvClient(servers["gridworld"].url, FAST_CLIENT) as alice, \
       HttpEnvClient(servers["gridworld"].url, FAST_CLIENT) as mallory:
    env_idx = alice.create()
    assert len(env_idx) >= 24 and env_idx != alice.create()  # 144 random bits each
    alice.reset(env_idx, 1)
    for attempt in (lambda: mallory.step(env_idx, "turn left"), lambda: mallory.observation(env_idx),
                    lambda: mallory.reset(env_idx, 2), lambda: mallory.close(env_idx)):
      with pytest.raises(UnknownEnvError):
        attempt()
    with pytest.raises(UnknownEnvError):
      alice.step("AAAAAAAAAAAAAAAAAAAAAAAA", "turn left")  # a made-up id
    assert alice.step(env_idx, "turn left").info["steps"] == 1  # untouched by the attempts
    alice.close(env_idx)
    with pytest.raises(UnknownEnvError):
      alice.step(env_idx, "turn left")
  pool = make_pool("gridworld", env_config("gridworld"), pool_config())
  mine, theirs = LocalEnvClient(pool), LocalEnvClient(pool)
  env_idx = mine.create()
  with pytest.raises(UnknownEnvError):
    theirs.reset(env_idx, 0)


def test_token_is_required_when_set_and_exposure_needs_one(monkeypatch):
  monkeypatch.delenv(TOKEN_ENV_VAR, raising=False)
  pool = make_pool("gridworld", env_config("gridworld"), pool_config())
  with serve(pool, token="s3cret-token") as server:
    for token in (None, "wrong"):
      with HttpEnvClient(server.url, FAST_CLIENT, token=token) as client, pytest.raises(EnvRequestError, match="401"):
        client.create()
    with HttpEnvClient(server.url, FAST_CLIENT, token="s3cret-token") as client:
      assert client.reset(client.create(), 0).observation
    monkeypatch.setenv(TOKEN_ENV_VAR, "s3cret-token")  # what README tells users: export it on the clients too
    with HttpEnvClient(server.url, FAST_CLIENT) as client:
      assert client.reset(client.create(), 0).observation
  with pytest.raises(ValueError, match="token"):
    check_exposure("0.0.0.0", None)
  check_exposure("0.0.0.0", "tok")
  check_exposure("::1", None)
  with pytest.raises(ValueError, match="token"):
    serve(pool, host="0.0.0.0")
  # the check is on what the app enforces: a token given to the server alone would guard nothing
  config = server_config(port=0, host="0.0.0.0")
  with pytest.raises(ValueError, match=r"built without one.*Fix: pass the same token to make_app"):
    start_background(make_app(pool, config), config, "s3cret-token")


def test_the_token_file_is_read_where_the_config_check_looks(monkeypatch, tmp_path):
  monkeypatch.delenv(TOKEN_ENV_VAR, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))
  (tmp_path / "env.token").write_text("from-the-file\n")
  config = server_config(token_file="~/env.token")
  config_lib.check_existing_path(config, "token_file")  # the check `validate_serve_config` makes
  assert read_token(config) == "from-the-file"


def test_size_limits_and_malformed_requests(servers):
  url = servers["gridworld"].url
  with httpx.Client(base_url=url, headers={"X-Client-Key": "k" * 24}) as http:
    env_idx = http.post("/create").json()["env_idx"]
    assert http.post("/reset", json={"env_idx": env_idx, "id": 0}).status_code == 200
    huge = http.post("/step", json={"env_idx": env_idx, "action": "a" * 70000})
    assert huge.status_code == 413
    chunks = (b'{"env_idx": "' + b"a" * 8192 for _ in range(10))  # chunked: no Content-Length to check
    assert http.post("/step", content=chunks).status_code == 413
    assert http.post("/step", content=b"not json").status_code == 400
    assert http.post("/step", json=[1, 2]).status_code == 400
    nested = http.post("/step", content=b"[" * 30000 + b"]" * 30000)  # under the cap, past the parser's stack
    assert nested.status_code == 400 and "nested too deeply" in nested.json()["error"]
    assert http.post("/step", json={"env_idx": env_idx}).status_code == 400  # no action
    # a task id or action of the wrong type is a protocol error, as in-process (409)
    assert http.post("/reset", json={"env_idx": env_idx, "id": "3"}).status_code == 409
    assert http.post("/step", json={"env_idx": env_idx, "action": 5}).status_code == 409
    assert http.post("/step", json={"env_idx": "../../etc", "action": "x"}).status_code == 404
    long_action = http.post("/step", json={"env_idx": env_idx, "action": "b" * 5000}).json()
    assert long_action["observation"].startswith("Invalid action: the action is 5000 characters long")
    assert long_action["reward"] == 0.0 and not long_action["done"]
    # the environment's own invalid-action result: every info field, and it counts as a step
    assert long_action["info"] == {"progress": 0.0, "success": False, "steps": 1, "invalid": True}
    assert http.post("/step", json={"env_idx": env_idx, "action": "turn left"}).json()["info"]["steps"] == 2
    fresh = http.post("/create").json()["env_idx"]
    assert http.post("/step", json={"env_idx": fresh, "action": "turn left"}).status_code == 409


def test_a_retried_create_returns_the_environment_it_made():
  pool = make_pool("gridworld", env_config("gridworld"), pool_config())

  class LoseFirstCreateReply(httpx.HTTPTransport):
    """The server handles the first /create, but its reply never arrives (as after a read timeout)."""
    lost = False

    def handle_request(self, request):
      response = super().handle_request(request)
      if request.url.path == "/create" and not self.lost:
        self.lost = True
        response.close()
        raise httpx.ReadTimeout("reply lost", request=request)
      return response

  with serve(pool) as server:
    with httpx.Client(base_url=server.url) as http:
      def create(client_key, key):
        return http.post("/create", headers={"X-Client-Key": client_key, "Idempotency-Key": key}).json()["env_idx"]
      first, again, other = create("a" * 24, "k1"), create("a" * 24, "k1"), create("b" * 24, "k1")
      assert first == again != other and pool.created == 2  # a key names one create of one client
      http.post("/close", json={"env_idx": first}, headers={"X-Client-Key": "a" * 24})
      assert create("a" * 24, "k1") != first  # the key went with its environment
    client = HttpEnvClient(server.url, FAST_CLIENT)
    client._http.close()
    client._http = httpx.Client(base_url=server.url, headers=client._http.headers, transport=LoseFirstCreateReply())
    with client:
      created, live = pool.created, pool.num_live
      env_idx = client.create()  # retried after the lost reply
      assert pool.created == created + 1 and pool.num_live == live + 1  # no orphan left behind
      assert client.reset(env_idx, 0).observation


def test_a_trainer_refuses_a_server_of_another_environment_or_config(servers):
  from configs.agents.rl_common import rl_config
  from agents import train as train_lib
  from agents.envs import check_server_matches

  def check(config):
    check_server_matches(health, servers["gridworld"].url, config.env, config.env_config)

  with HttpEnvClient(servers["gridworld"].url, FAST_CLIENT) as client:
    health = client.health()
  assert health["env"] == "gridworld" and health["env_config"]["max_rooms"] == env_config("gridworld").max_rooms
  check(rl_config("gridworld", "grpo"))  # the same environment and config section: accepted
  quick = rl_config("gridworld", "grpo", "quick")  # smaller worlds than the server's defaults
  with pytest.raises(config_lib.ConfigError, match=r"max_rooms = 3 there, 2 here.*--config.env_config.max_rooms=2"):
    check(quick)
  with pytest.raises(config_lib.ConfigError, match="runs environment 'gridworld', not config.env = 'textcraft'"):
    check(rl_config("textcraft", "grpo"))
  quick.env_url = servers["gridworld"].url  # the trainer's own client makes the same check
  with pytest.raises(config_lib.ConfigError, match=r"max_rooms = 3 there, 2 here"):
    train_lib.make_client(quick)


def test_unreadable_replies_end_only_that_trajectory():
  step_reply = {}

  def handler(request):
    if request.url.path == "/create":
      return httpx.Response(200, json={"env_idx": "e" * 24})
    if request.url.path == "/reset":
      return httpx.Response(200, json={"observation": "hi", "reward": 0, "done": False, "info": {}})
    if isinstance(step_reply["now"], Exception):
      raise step_reply["now"]
    return step_reply["now"]

  client = HttpEnvClient("http://env.test", http_client_config(retries=0))
  client._http.close()
  client._http = httpx.Client(base_url="http://env.test", transport=httpx.MockTransport(handler))
  for reply, message in [(httpx.Response(200, content=b"<html>a proxy's page</html>"), "not JSON"),
                         (httpx.Response(200, json={"observation": "no reward"}), "not a step result"),
                         (httpx.Response(200, json=["a", "list"]), "not a step result"),
                         (httpx.Response(200, content=b'{"observation": "x", "reward": NaN, "done": true}'),
                          "not a finite number"),
                         (httpx.Response(200, content=b'{"observation": "x", "reward": Infinity, "done": true}'),
                          "not a finite number"),
                         (httpx.Response(200, json={"observation": "x", "reward": "1", "done": True}),
                          "not a finite number"),
                         (httpx.Response(200, json={"observation": "x", "reward": 1, "done": "false"}),
                          "not a boolean"),
                         (httpx.DecodingError("bad gzip"), "DecodingError"),
                         (httpx.TooManyRedirects("loop"), "TooManyRedirects")]:
    step_reply["now"] = reply
    with pytest.raises(EnvRequestError, match=message):
      client.step("e" * 24, "turn left")
    session = EnvSession(client, 0)
    assert session.start().observation == "hi"
    result = session.step("turn left")
    assert result.done and message in result.info["error"] and session.error == result.info["error"]
    session.close()
  step_reply["now"] = ZeroDivisionError("a bug nobody foresaw")  # the backstop: still one trajectory only
  session = EnvSession(client, 0)
  session.start()
  assert "ZeroDivisionError" in session.step("turn left").info["error"]


def test_a_retried_step_is_answered_from_the_record_not_applied_twice(servers):
  with httpx.Client(base_url=servers["gridworld"].url, headers={"X-Client-Key": "r" * 24}) as http:
    env_idx = http.post("/create").json()["env_idx"]
    http.post("/reset", json={"env_idx": env_idx, "id": 0})
    first = http.post("/step", json={"env_idx": env_idx, "action": "turn left", "seq": 1}).json()
    again = http.post("/step", json={"env_idx": env_idx, "action": "turn left", "seq": 1}).json()
    assert first == again and first["info"]["steps"] == 1
    assert http.post("/step", json={"env_idx": env_idx, "action": "turn left", "seq": 2}).json()["info"]["steps"] == 2
    # a late copy of the first attempt, arriving after the client moved on, is refused, not applied a third time
    late = http.post("/step", json={"env_idx": env_idx, "action": "turn left", "seq": 1})
    assert late.status_code == 409 and "late copy" in late.json()["error"]
    assert http.post("/step", json={"env_idx": env_idx, "action": "turn left", "seq": 3}).json()["info"]["steps"] == 3



def test_the_client_resends_a_step_whose_reply_was_lost_with_the_same_number(servers):
  """The server applies the first attempt, its reply is lost on the way back, and the client retries: the retry
  must carry the same sequence number, so that it is answered from the record instead of stepping again."""
  sent = []

  class LoseFirstStepReply(httpx.HTTPTransport):
    def handle_request(self, request):
      response = super().handle_request(request)
      if request.url.path == "/step":
        sent.append(request.read())
        if len(sent) == 1:
          response.read()
          response.close()
          raise httpx.ReadTimeout("reply lost", request=request)
      return response

  client = HttpEnvClient(servers["gridworld"].url, FAST_CLIENT)
  client._http = httpx.Client(base_url=servers["gridworld"].url, headers=client._http.headers,
                              transport=LoseFirstStepReply())
  env_idx = client.create()
  client.reset(env_idx, 0)
  assert client.step(env_idx, "turn left").info["steps"] == 1
  assert len(sent) == 2 and sent[0] == sent[1]
  assert client.step(env_idx, "turn left").info["steps"] == 2
  client.close(env_idx)

# Timing margins wide enough for a loaded 2-core machine: a "hang" blocks for HANG_S (until its test releases it),
# 60x the 0.5 s step timeout that must cut it short, and the HTTP client waits HANG_CLIENT's 20 s (40x) for the
# server's timeout reply. A "slow" step takes SLOW_S, 0.75 s under its 1.25 s step timeout.
HANG_S, SLOW_S = 30.0, 0.5
HANG_CLIENT = http_client_config(retries=1, backoff_s=0.01, timeout_s=20.0, connect_timeout_s=5.0)


class Fragile(TextEnv):
  """Crashes on "crash", hangs on "hang" (up to HANG_S, until `release` is set), sleeps SLOW_S on "slow", else
  counts steps. `release` and `hangs_ended` come from one test's `fragile` fixture: nothing is shared between
  tests, so a hang one test leaves behind can be neither released nor counted by another."""

  name = "fragile"

  def __init__(self, release: threading.Event, hangs_ended: list):
    super().__init__(max_steps=100)
    self.release, self.hangs_ended = release, hangs_ended

  def instructions(self):
    return ""

  def oracle(self, task_id):
    raise NotImplementedError

  def _reset(self, task_id):
    return f"task {task_id}", {}

  def _progress(self):
    return 0.0

  def _step(self, action):
    if action == "crash":
      raise RuntimeError("boom")
    if action == "hang":
      self.release.wait(HANG_S)
      self.hangs_ended.append(action)
    if action == "slow":
      time.sleep(SLOW_S)
    return f"ok {self._steps}", False


def within(seconds, call, *args):
  """`call(*args)`, run on a daemon thread so that a call starved behind hung steps fails the test after `seconds`
  instead of blocking the run for good."""
  result = concurrent.futures.Future()

  def target():
    try:
      result.set_result(call(*args))
    except BaseException as e:  # noqa: BLE001  handed to the test
      result.set_exception(e)

  threading.Thread(target=target, daemon=True).start()
  try:
    return result.result(timeout=seconds)
  except concurrent.futures.TimeoutError:
    pytest.fail(f"{call} did not return within {seconds} s: starved behind the hung steps?")


@pytest.fixture
def fragile():
  """This test's own Fragile family: `make` (the pool's factory), `release` (ends its hung steps) and `hangs_ended`.
  Teardown sets `release`, so no hung handler thread outlives its test by more than a moment."""
  family = types.SimpleNamespace(release=threading.Event(), hangs_ended=[])
  family.make = lambda: Fragile(family.release, family.hangs_ended)
  yield family
  family.release.set()


@pytest.mark.parametrize("over_http", [False, True])
def test_a_crashed_or_hung_environment_ends_only_its_trajectory(over_http, fragile):
  pool = EnvPool(fragile.make, pool_config(step_timeout_s=0.5, workers=4))
  server = serve(pool) if over_http else None
  client = HttpEnvClient(server.url, HANG_CLIENT) if over_http else LocalEnvClient(pool)
  try:
    crashing, hanging, healthy = EnvSession(client, 0), EnvSession(client, 1), EnvSession(client, 2)
    for session in (crashing, hanging, healthy):
      assert session.start().observation.startswith("task")
    crashed = crashing.step("crash")
    assert crashed.done and "RuntimeError: boom" in crashed.info["error"] and crashing.error
    start = time.monotonic()
    hung = hanging.step("hang")
    assert hung.done and "did not finish within 0.5 s" in hung.info["error"]
    assert time.monotonic() - start < HANG_S / 3 and not fragile.hangs_ended  # cut short, not waited out
    assert within(HANG_S / 3, healthy.step, "fine").observation == "ok 1"  # the others go on
    assert crashing.step("fine").done  # a broken trajectory stays ended
    assert client.reset(crashing.env_idx, 5).observation == "task 5"  # a reset builds a fresh environment
    assert client.step(crashing.env_idx, "fine").observation == "ok 1"
    for session in (crashing, hanging, healthy):
      session.close()
    assert pool.num_live == 0 and pool.crashed == 2
  finally:
    fragile.release.set()  # before the server stops: its handler thread is not left waiting
    client.shutdown()
    if server:
      server.stop()


def test_hung_steps_never_starve_healthy_environments(fragile):
  pool = EnvPool(fragile.make, pool_config(step_timeout_s=0.5, workers=2, max_hung_per_client=3))
  client, other = LocalEnvClient(pool), LocalEnvClient(pool)
  hanging = [EnvSession(client, i) for i in range(3)]
  healthy, elsewhere = EnvSession(client, 3), EnvSession(other, 4)
  for session in hanging + [healthy, elsewhere]:
    session.start()
  for session in hanging[:2]:  # as many hung steps as workers
    assert "did not finish within 0.5 s" in session.step("hang").info["error"]
  # it did not wait for them
  assert within(HANG_S / 3, healthy.step, "fine").observation == "ok 1" and not fragile.hangs_ended
  assert "did not finish" in hanging[2].step("hang").info["error"]
  # The client now has max_hung_per_client hung steps: its next call is refused, another client's is not.
  assert "pool.max_hung_per_client" in EnvSession(client, 5).start().info["error"]
  assert within(HANG_S / 3, elsewhere.step, "fine").observation == "ok 1" and not fragile.hangs_ended


def test_hung_steps_are_capped_across_clients_too(fragile):
  # a client that changes its key after each hung step gets past the per-client cap, not past the pool's
  pool = EnvPool(fragile.make, pool_config(step_timeout_s=0.5, workers=2, max_hung_per_client=2, max_hung=3))
  for i in range(3):
    session = EnvSession(LocalEnvClient(pool), i)  # a new client key each time
    session.start()
    assert "did not finish" in session.step("hang").info["error"]
  assert "pool.max_hung)" in EnvSession(LocalEnvClient(pool), 3).start().info["error"]
  assert not fragile.hangs_ended


def test_hung_steps_sent_together_stay_within_the_caps(fragile):
  """Twelve hanging steps of one client at once all pass the cap check on submission (none has hung yet); the
  check as each starts stops all but the first rounds: at most `max_hung_per_client + workers - 1` hang."""
  workers, cap = 2, 2
  pool = EnvPool(fragile.make, pool_config(step_timeout_s=0.5, workers=workers, max_hung_per_client=cap, max_hung=50))
  client = LocalEnvClient(pool)
  ids = [client.create() for _ in range(12)]
  for env_idx in ids:
    client.reset(env_idx, 0)
  with concurrent.futures.ThreadPoolExecutor(12) as threads:
    errors = [r.info["error"] for r in threads.map(lambda env_idx: client.step(env_idx, "hang"), ids)]
  hung = sum("did not finish" in e for e in errors)
  assert cap <= hung <= cap + workers - 1, errors
  assert sum("pool.max_hung_per_client" in e for e in errors) == 12 - hung
  assert not fragile.hangs_ended


def test_hung_steps_do_not_hold_up_other_routes_of_the_server(fragile):
  """More hung steps in flight than anyio's default thread limiter admits (40): the server's own limiter keeps
  `/create` and healthy steps of other clients answering at once."""
  pool = EnvPool(fragile.make, pool_config(step_timeout_s=HANG_S, workers=64, max_hung_per_client=100))
  with serve(pool) as server:
    clients = [HttpEnvClient(server.url, HANG_CLIENT) for _ in range(44)]
    ids = [c.create() for c in clients]
    for c, env_idx in zip(clients, ids):
      c.reset(env_idx, 0)
    threads = concurrent.futures.ThreadPoolExecutor(42)
    try:
      for c, env_idx in zip(clients[:42], ids[:42]):
        threads.submit(c.step, env_idx, "hang")
      deadline = time.monotonic() + 10
      while pool._runner._threads < 42 and time.monotonic() < deadline:  # every hang has reached the pool
        time.sleep(0.05)
      assert within(HANG_S / 3, clients[42].create)
      assert within(HANG_S / 3, clients[43].step, ids[43], "fine").observation == "ok 1"
      assert not fragile.hangs_ended
    finally:
      fragile.release.set()
      threads.shutdown(wait=True)


def test_the_step_timeout_counts_from_when_the_step_starts(fragile):
  pool = EnvPool(fragile.make, pool_config(step_timeout_s=1.25, workers=1))
  client = LocalEnvClient(pool)
  ids = [client.create() for _ in range(3)]
  for env_idx in ids:
    client.reset(env_idx, 0)
  # One worker, three 0.5 s steps at once: the last waits 1.0 s in the queue, 1.5 s in all (past the 1.25 s
  # timeout, were it counted from the request), yet runs for only 0.5 s (0.75 s inside it).
  with concurrent.futures.ThreadPoolExecutor(3) as threads:
    results = list(threads.map(lambda env_idx: client.step(env_idx, "slow"), ids))
  assert [r.observation for r in results] == ["ok 1"] * 3 and pool.crashed == 0


def test_serve_config_keeps_hang_protection_on():
  config = config_lib.load_config("configs/agents/serve.py:gridworld")
  validate_serve_config(config)
  config.pool.step_timeout_s = 0.0
  with pytest.raises(config_lib.ConfigError, match="pool.step_timeout_s"):
    validate_serve_config(config)


@pytest.mark.parametrize("env, message", [
    # Audit finding: the server started, and then every reset failed on the gridworld section.
    ("textcraft", r"env_config is not a textcraft section: it lacks max_depth, min_depth; .*max_rooms.* are no "
                  r"textcraft keys.*Fix: pass --config configs/agents/serve.py:textcraft"),
    ("gridwold", r"config.env = 'gridwold' is invalid: valid choices are 'gridworld'"),
])
def test_serve_config_refuses_an_environment_without_its_section(env, message):
  for name in ("gridworld", "textcraft", "search", "sciworld", "trivial", "vehicle", "toolenv"):
    validate_serve_config(config_lib.load_config(f"configs/agents/serve.py:{name}"))  # the shipped variants
  config = config_lib.load_config("configs/agents/serve.py:gridworld", [f"env={env}"])
  with pytest.raises(config_lib.ConfigError, match=message):
    validate_serve_config(config)


def test_a_vanished_server_ends_the_trajectory_with_an_error():
  server = serve(make_pool("gridworld", env_config("gridworld"), pool_config()))
  client = HttpEnvClient(server.url, FAST_CLIENT)
  session = EnvSession(client, 0)
  assert not session.start().done
  server.stop()
  result = session.step("turn left")
  assert result.done and "EnvUnavailableError" in result.info["error"]
  session.close()  # does not raise either
  client.shutdown()
  assert EnvSession(HttpEnvClient("http://127.0.0.1:9", FAST_CLIENT), 0).start().info["error"]


def test_the_load_benchmark_reports_error_results_not_only_exceptions():
  from benchmarks.agents_env_load import load_test

  def broken():
    env = make_env("gridworld")
    env._step = lambda action: 1 / 0
    return env

  with serve(EnvPool(broken, pool_config())) as server:
    load = load_test(server.url, "gridworld", clients=2, max_steps=2, time_limit=30.0, server_pid=os.getpid(),
                     oracles={"gridworld": make_env("gridworld")})
  assert load["errors"] == load["episodes"] > 0 and "ZeroDivisionError" in load["first_error"]


def test_thousands_of_episodes_leave_nothing_behind(servers):
  built = []

  def factory():
    env = make_env("gridworld")
    built.append(weakref.ref(env))
    return env

  pool = EnvPool(factory, pool_config())
  client = LocalEnvClient(pool)
  for task_id in range(3000):
    with EnvSession(client, task_id) as session:
      session.start()
      assert "error" not in session.step("turn left").info
  gc.collect()
  assert pool.num_live == 0 and pool.created == pool.closed == 3000
  assert len(built) == 3000 and sum(ref() is not None for ref in built) == 0
  url = servers["textcraft"].url
  with HttpEnvClient(url, FAST_CLIENT) as remote:
    for task_id in range(300):
      with EnvSession(remote, task_id) as session:
        session.start()
        session.step("inventory")
    health = httpx.get(f"{url}/health").json()
  assert health["live"] == 0 and health["created"] == health["closed"] >= 300


def test_the_pool_is_bounded_and_idle_environments_are_reaped():
  now = [0.0]
  pool = EnvPool(lambda: make_env("gridworld"), pool_config(max_envs=3, idle_timeout_s=60.0), clock=lambda: now[0])
  client = LocalEnvClient(pool)
  for _ in range(3):
    client.create()
  with pytest.raises(PoolFullError):
    client.create()
  with serve(pool) as server, HttpEnvClient(server.url, FAST_CLIENT) as remote:
    with pytest.raises(PoolFullError):
      remote.create()
    now[0] = 61.0
    env_idx = remote.create()  # the three idle ones were reaped
    assert pool.reaped == 3 and pool.num_live == 1
    with pytest.raises(EnvProtocolError, match="before reset"):
      remote.step(env_idx, "turn left")


def test_a_late_step_from_before_a_reset_is_refused_not_applied_to_the_new_episode():
  pool = make_pool("gridworld", env_config("gridworld"), pool_config())
  env_idx = pool.create("alice")
  pool.reset("alice", env_idx, 3)
  for seq in (1, 2, 3):
    pool.step("alice", env_idx, "turn left", seq=seq)
  pool.reset("alice", env_idx, 3)  # the next episode; the client's numbering goes on (4, 5, ...)
  with pytest.raises(EnvProtocolError, match=r"late copy .*before the last reset"):
    pool.step("alice", env_idx, "turn right", seq=1)  # the first episode's step 1, arriving now
  assert pool.step("alice", env_idx, "move forward", seq=4).info["steps"] == 1
  # and the HTTP client numbers on across resets
  with serve(pool) as server, HttpEnvClient(server.url, FAST_CLIENT) as remote:
    env_idx = remote.create()
    for _ in range(2):
      remote.reset(env_idx, 0)
      assert remote.step(env_idx, "turn left").info["steps"] == 1  # each episode's first step, applied once
    assert remote._seq[env_idx] == 2


def test_a_request_never_loses_its_environment_to_an_idle_reap_on_the_way():
  """The lookup and the last-used mark happen under one lock: a reap running right after the lookup (forced here
  through the clock, which the mark reads) sees the environment as just used."""
  now, reap_inside = [0.0], [False]

  def clock():
    if reap_inside[0]:
      reap_inside[0] = False
      thread = threading.Thread(target=pool.reap_idle)  # blocks on the pool's lock until the mark is done
      thread.start()
      thread.join(timeout=0.2)
    return now[0]

  pool = EnvPool(lambda: make_env("gridworld"), pool_config(idle_timeout_s=900.0), clock=clock)
  env_idx = pool.create("alice")
  now[0], reap_inside[0] = 1000.0, True  # idle past the timeout when the request arrives
  pool.reset("alice", env_idx, 3)
  assert pool.reap_idle() == 0 and pool.step("alice", env_idx, "turn left").info["steps"] == 1


def test_an_action_that_is_not_valid_unicode_is_a_bad_action_over_http_too(servers):
  local = LocalEnvClient(make_pool("sciworld", env_config("sciworld"), pool_config()))
  env_idx = local.create()
  local.reset(env_idx, 0)
  result = local.step(env_idx, "examine \ud800")  # a lone surrogate, which JSON can carry
  assert result.info["invalid"] and "not valid Unicode" in result.observation and result.reward == 0.0
  with httpx.Client(base_url=servers["sciworld"].url, headers={"X-Client-Key": "u" * 24}) as http:
    env_idx = http.post("/create").json()["env_idx"]
    http.post("/reset", json={"env_idx": env_idx, "id": 0})
    body = ('{"env_idx": "%s", "action": "examine \\ud800", "seq": 1}' % env_idx).encode()
    reply = http.post("/step", content=body)
    assert reply.status_code == 200 and reply.json()["info"]["invalid"], reply.text
    assert http.get("/observation", params={"env_idx": env_idx}).status_code == 200


def test_serve_config_refuses_a_step_timeout_no_wait_can_take():
  config = config_lib.load_config("configs/agents/serve.py:gridworld", ["pool.step_timeout_s=1e10"])
  with pytest.raises(config_lib.ConfigError, match=r"pool.step_timeout_s = 10000000000.0 is invalid: must be at most "
                                                   r"86400 .*Fix: pass --config.pool.step_timeout_s=86400 or less"):
    validate_serve_config(config)


@pytest.mark.parametrize("call", [
    lambda c, i: c.reset(i, "3"), lambda c, i: c.reset(i, 3.0), lambda c, i: c.reset(i, True),
    lambda c, i: c.step(i, 5), lambda c, i: c.step(i, None), lambda c, i: c.step(123, "look"),
    lambda c, i: c.observation(None), lambda c, i: c.close(["x"]),
], ids=["task-id-text", "task-id-float", "task-id-bool", "action-int", "action-none", "env-id-int",
        "env-id-none", "env-id-list"])
def test_both_clients_raise_the_same_error_for_the_same_bad_call(servers, call):
  def raised(client):
    env_idx = client.create()
    client.reset(env_idx, 0)
    with pytest.raises(Exception) as info:
      call(client, env_idx)
    return type(info.value)

  local = LocalEnvClient(make_pool("gridworld", env_config("gridworld"), pool_config()))
  with HttpEnvClient(servers["gridworld"].url, FAST_CLIENT) as remote:
    here, there = raised(local), raised(remote)
  assert here is there and here in (EnvProtocolError, UnknownEnvError), (here, there)


def test_a_reply_that_cannot_be_encoded_is_a_json_500_not_a_client_error(monkeypatch):
  pool = make_pool("gridworld", env_config("gridworld"), pool_config())
  with serve(pool) as server, httpx.Client(base_url=server.url, headers={"X-Client-Key": "n" * 24}) as http:
    env_idx = http.post("/create").json()["env_idx"]
    monkeypatch.setattr(pool, "observation", lambda owner, idx: float("nan"))  # JSON replies hold no NaN
    reply = http.get("/observation", params={"env_idx": env_idx})
    assert reply.status_code == 500 and "could not be encoded" in reply.json()["error"]
