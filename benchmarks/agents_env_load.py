"""Environment servers under load (AgentGym-RL's env servers, issue 6): steps/s in-process vs over HTTP, and one
server driven by many concurrent clients on loopback.

    python -m benchmarks.agents_env_load                       # all four environments, 64 clients
    python -m benchmarks.agents_env_load --envs gridworld --clients 64 --steps 20000 --time-limit 60

For each environment: (1) one client stepping scripted-oracle episodes in-process through `LocalEnvClient`
(the peer) and over HTTP through `HttpEnvClient` against a server in another process, same episodes;
(2) `--clients` threads, each its own `HttpEnvClient`, running oracle episodes (create, reset, steps, close) on
one server until `--steps` steps or `--time-limit` seconds. Each client of (1) first runs one untimed warm-up
episode (connections, first-call costs). Reported: steps/s, errors (exceptions, error results, or an oracle
episode that did not succeed: must be 0; in (2) also any exception of a client thread outside its episodes,
e.g. creating or closing its client; `first_error` is the first of them), the server's resident memory after a
warm-up fifth of the steps (null if the time limit ended the load before that) and at the end (flat = no leak),
the live environments left (must be 0), and the CPU seconds the server process and this (client) process spent
during the concurrent load: with both on the same 2 cores, they say who the bottleneck was.
Everything binds 127.0.0.1. Prints one JSON line per figure (benchmarks/harness.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

import httpx
import psutil

from agents.envs import (EnvSession, HttpEnvClient, LocalEnvClient, env_config, http_client_config, make_env,
                         make_pool, pool_config)
from benchmarks.harness import emit

BENCH = "agents_env_load"


def start_server(env: str) -> tuple[subprocess.Popen, str]:
  """`python -m agents.serve` for `env` on a free loopback port, in its own process (its own GIL)."""
  process = subprocess.Popen(
      [sys.executable, "-m", "agents.serve", "--config", f"configs/agents/serve.py:{env}",
       "--config.server.port=0", "--config.server.host=127.0.0.1"],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  line = process.stdout.readline()
  if not line.startswith("serving on "):
    process.kill()
    process.wait()
    raise RuntimeError(f"the {env} server did not start: {line}{process.stdout.read()}")
  url = line.split()[-1]
  for _ in range(200):
    try:
      httpx.get(f"{url}/health", timeout=1.0)
      return process, url
    except httpx.TransportError:
      time.sleep(0.05)
  stop_server(process)  # not left running: the caller's `finally` only covers a server that started
  raise RuntimeError(f"the {env} server at {url} does not answer")


def oracle_episode(client, env_name: str, task_id: int, oracles: dict) -> tuple[int, bool, str]:
  """One episode driven by the scripted oracle; returns (steps taken, success and no error, the error if any)."""
  with EnvSession(client, task_id) as session:
    result = session.start()
    oracle = oracles[env_name].oracle(task_id)
    steps = 0
    while not result.done:
      result = session.step(oracle.act(result.observation))
      steps += 1
    error = str(result.info.get("error", ""))
    return steps, bool(result.info.get("success")) and not error, error


def _cpu_s(process: psutil.Process) -> float:
  times = process.cpu_times()
  return times.user + times.system


def sequential_rate(client, env_name: str, oracles: dict, min_steps: int) -> tuple[float, int]:
  """(steps/s, failed episodes) of oracle episodes one after another, after one untimed warm-up episode."""
  _, warm_ok, _ = oracle_episode(client, env_name, 0, oracles)
  steps, failures = 0, int(not warm_ok)
  task_id = 0
  start = time.perf_counter()
  while steps < min_steps:
    n, ok, _ = oracle_episode(client, env_name, task_id, oracles)
    steps, failures, task_id = steps + n, failures + (not ok), task_id + 1
  return steps / (time.perf_counter() - start), failures


def load_test(url: str, env_name: str, clients: int, max_steps: int, time_limit: float, server_pid: int,
              oracles: dict) -> dict:
  server = psutil.Process(server_pid)
  lock = threading.Lock()
  state = {"steps": 0, "episodes": 0, "errors": 0, "rss_warm": None, "first_error": ""}
  deadline = time.monotonic() + time_limit
  next_task = iter(range(10**9))

  def episodes(client):
    while time.monotonic() < deadline:
      with lock:
        if state["steps"] >= max_steps:
          return
        task_id = next(next_task)
      try:
        n, ok, error = oracle_episode(client, env_name, task_id, oracles)
      except Exception as e:  # counted, not raised: the figure is how many there were
        n, ok, error = 0, False, f"task {task_id}: {type(e).__name__}: {e}"
      if not ok and not error:
        error = f"task {task_id}: the oracle episode did not succeed"
      with lock:
        state["first_error"] = state["first_error"] or error
        state["steps"] += n
        state["episodes"] += 1
        state["errors"] += not ok
        if state["rss_warm"] is None and state["steps"] >= max_steps // 5:
          state["rss_warm"] = server.memory_info().rss

  def worker():
    try:
      with HttpEnvClient(url, http_client_config(max_connections=1)) as client:
        episodes(client)
    except Exception as e:  # creating or closing the client, or the loop around the episodes
      # a thread's exception would otherwise only reach stderr: an error the load's figures must show
      with lock:
        state["errors"] += 1
        state["first_error"] = state["first_error"] or f"client: {type(e).__name__}: {e}"

  threads = [threading.Thread(target=worker) for _ in range(clients)]
  me = psutil.Process()
  server_cpu, client_cpu = _cpu_s(server), _cpu_s(me)
  start = time.perf_counter()
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  elapsed = time.perf_counter() - start
  server_cpu, client_cpu = _cpu_s(server) - server_cpu, _cpu_s(me) - client_cpu
  health = httpx.get(f"{url}/health").json()
  return {**state, "elapsed_s": elapsed, "rss_end": server.memory_info().rss, "live_after": health["live"],
          "server_cpu_s": server_cpu, "client_cpu_s": client_cpu}


def stop_server(process: subprocess.Popen, timeout: float = 10.0) -> None:
  """SIGTERM, then SIGKILL if the server has not exited within `timeout` seconds; reaped either way."""
  process.terminate()
  try:
    process.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait()
  if process.stdout is not None:
    process.stdout.close()


def _mb(nbytes: int | None) -> float | None:
  return None if nbytes is None else round(nbytes / 2**20, 1)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--envs", nargs="+", default=["gridworld", "textcraft", "search", "sciworld"])
  parser.add_argument("--clients", type=int, default=64)
  parser.add_argument("--steps", type=int, default=10000, help="steps of the concurrent load, per environment")
  parser.add_argument("--time-limit", type=float, default=60.0, help="seconds of the concurrent load, at most")
  parser.add_argument("--sequential-steps", type=int, default=2000)
  args = parser.parse_args(argv)
  for env_name in args.envs:
    oracles = {env_name: make_env(env_name)}
    process, url = start_server(env_name)
    try:
      local = LocalEnvClient(make_pool(env_name, env_config(env_name), pool_config()))
      local_rate, local_failures = sequential_rate(local, env_name, oracles, args.sequential_steps)
      with HttpEnvClient(url) as remote:
        http_rate, http_failures = sequential_rate(remote, env_name, oracles, args.sequential_steps)
      emit(BENCH, f"{env_name}: env steps/s, 1 client over HTTP", http_rate, unit="steps/s",
           peer="the same episodes in-process (LocalEnvClient)", peer_value=local_rate,
           errors=local_failures + http_failures)
      load = load_test(url, env_name, args.clients, args.steps, args.time_limit, process.pid, oracles)
      emit(BENCH, f"{env_name}: env steps/s, {args.clients} concurrent HTTP clients, one server",
           load["steps"] / load["elapsed_s"], unit="steps/s", peer="1 client over HTTP", peer_value=http_rate,
           steps=load["steps"], episodes=load["episodes"], errors=load["errors"], first_error=load["first_error"],
           elapsed_s=round(load["elapsed_s"], 2), server_cpu_s=round(load["server_cpu_s"], 2),
           client_cpu_s=round(load["client_cpu_s"], 2), server_rss_warm_mb=_mb(load["rss_warm"]),
           server_rss_end_mb=_mb(load["rss_end"]), live_envs_after=load["live_after"])
    finally:
      stop_server(process)


if __name__ == "__main__":
  main()
