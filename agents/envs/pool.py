"""The environment manager behind both the in-process client and the HTTP server, so the two behave the same:
AgentGym's create / reset / observation / step / close (AgentGym-RL) over many live environments.

What it guarantees, and why:
* Environment ids are `secrets.token_urlsafe` strings: an id cannot be guessed from another one. Ids still get
  written to logs and trajectory files, so an environment also remembers the key of the client that created it,
  and any other key is answered exactly as an unknown id is (`UnknownEnvError`): a client can neither use nor
  detect another client's environment. Keys are compared in constant time.
* A crash inside an environment (an exception in reset/step) or a step that exceeds `step_timeout_s` ends that
  episode: the caller gets a terminal result with `info["error"]` and the run goes on. The environment object is
  discarded (a hung step keeps its worker thread until it returns, but nothing waits for it) and the next reset
  of the same id builds a fresh one.
* Closed environments are dropped at once; environments idle for `idle_timeout_s` (a client that died without
  closing) are reaped; `max_envs` bounds how many live at a time. Thousands of episodes leave nothing behind.
* An action longer than `max_action_chars` is a bad action like any other: the agent is told, reward 0.
* A step may carry a sequence number: a client retrying a step whose reply was lost sends the same number and
  gets the stored result instead of stepping twice.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hmac
import re
import secrets
import threading
import time
import traceback
from typing import Any, Callable

import ml_collections

from agents.envs.base import EnvProtocolError, StepResult, TextEnv
from core.config import section

ENV_ID_BYTES = 18  # 144 random bits, 24 url-safe characters
_ENV_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def pool_config(**overrides: Any) -> ml_collections.ConfigDict:
  """Limits of one environment pool (in-process or behind a server)."""
  return section("pool", dict(max_envs=4096, max_action_chars=4096, step_timeout_s=30.0, idle_timeout_s=900.0,
                              workers=16), overrides)


class EnvError(RuntimeError):
  """Base of the errors a client sees."""


class UnknownEnvError(EnvError):
  """No environment with this id belongs to this client (never created, closed, reaped, or someone else's)."""


class PoolFullError(EnvError):
  """`max_envs` environments are live; close some (or raise the limit)."""


@dataclasses.dataclass
class _Slot:
  env: TextEnv | None
  owner: str
  lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
  last_used: float = 0.0
  error: str | None = None
  last_seq: int | None = None
  last_result: StepResult | None = None


class EnvPool:
  """Live environments by id. Thread-safe: many clients (threads) may use one pool at once."""

  def __init__(self, make_env: Callable[[], TextEnv], config: ml_collections.ConfigDict,
               clock: Callable[[], float] = time.monotonic):
    self._make_env = make_env
    self.config = config
    self._clock = clock  # injectable so that tests can age environments without sleeping
    self._slots: dict[str, _Slot] = {}
    self._lock = threading.Lock()
    # Steps run on worker threads only so that a hung one can be abandoned after its timeout.
    self._executor = (concurrent.futures.ThreadPoolExecutor(config.workers, thread_name_prefix="env-step")
                      if config.step_timeout_s else None)
    self.created = self.closed = self.reaped = self.crashed = 0

  @property
  def num_live(self) -> int:
    return len(self._slots)

  def shutdown(self) -> None:
    with self._lock:
      self._slots.clear()
    if self._executor is not None:
      self._executor.shutdown(wait=False, cancel_futures=True)

  # -- the protocol ----------------------------------------------------------------------------------------------
  def create(self, owner: str) -> str:
    self.reap_idle()
    with self._lock:
      if len(self._slots) >= self.config.max_envs:
        raise PoolFullError(f"{len(self._slots)} environments are live, the limit (max_envs); close finished "
                            "ones or start the server with a higher pool.max_envs.")
      env_idx = secrets.token_urlsafe(ENV_ID_BYTES)
      self._slots[env_idx] = _Slot(env=None, owner=owner, last_used=self._clock())
      self.created += 1
    return env_idx

  def reset(self, owner: str, env_idx: str, task_id: int) -> StepResult:
    if not isinstance(task_id, int) or isinstance(task_id, bool) or task_id < 0:
      raise EnvProtocolError(f"task id must be an integer >= 0, got {task_id!r}.")
    slot = self._slot(owner, env_idx)
    with slot.lock:
      if slot.env is None or slot.error is not None:
        slot.env, slot.error = None, None
        try:
          slot.env = self._make_env()
        except Exception as e:  # an environment that cannot even be built fails this episode only
          return self._fail(slot, f"creating the environment failed: {type(e).__name__}: {e}")
      slot.last_seq, slot.last_result = None, None
      return self._guarded(slot, lambda env: env.reset(task_id), "reset")

  def observation(self, owner: str, env_idx: str) -> str:
    slot = self._slot(owner, env_idx)
    with slot.lock:
      if slot.error is not None:
        return f"Environment error: {slot.error}"
      if slot.env is None:
        raise EnvProtocolError("observation before reset: call reset(env_idx, task_id) first.")
      return slot.env.observation()

  def step(self, owner: str, env_idx: str, action: str, seq: int | None = None) -> StepResult:
    if not isinstance(action, str):
      raise EnvProtocolError(f"an action is text, got {type(action).__name__}.")
    slot = self._slot(owner, env_idx)
    with slot.lock:
      if seq is not None and seq == slot.last_seq and slot.last_result is not None:
        return slot.last_result  # a retried request: the step already happened
      if slot.error is not None:
        result = StepResult(f"Environment error: {slot.error}", 0.0, True, {"error": slot.error})
      elif slot.env is None:
        raise EnvProtocolError("step before reset: call reset(env_idx, task_id) first.")
      elif len(action) > self.config.max_action_chars:
        result = StepResult(f"Invalid action: the action is {len(action)} characters long; the limit is "
                            f"{self.config.max_action_chars}.", 0.0, False, {"invalid": True})
      else:
        result = self._guarded(slot, lambda env: env.step(action), "step")
      slot.last_seq, slot.last_result = seq, result
      return result

  def close(self, owner: str, env_idx: str) -> None:
    slot = self._slot(owner, env_idx)
    with self._lock:
      if self._slots.get(env_idx) is slot:
        del self._slots[env_idx]
        self.closed += 1

  def reap_idle(self) -> int:
    """Drops environments nobody used for `idle_timeout_s`; returns how many."""
    if not self.config.idle_timeout_s:
      return 0
    deadline = self._clock() - self.config.idle_timeout_s
    with self._lock:
      stale = [k for k, s in self._slots.items() if s.last_used < deadline and not s.lock.locked()]
      for k in stale:
        del self._slots[k]
      self.reaped += len(stale)
    return len(stale)

  # -- internals -------------------------------------------------------------------------------------------------
  def _slot(self, owner: str, env_idx: str) -> _Slot:
    if not isinstance(env_idx, str) or not _ENV_ID.match(env_idx):
      raise UnknownEnvError("no such environment.")
    with self._lock:
      slot = self._slots.get(env_idx)
    # Same answer for "never existed" and "belongs to someone else": ownership is not revealed.
    if slot is None or not hmac.compare_digest(slot.owner.encode(), owner.encode()):
      raise UnknownEnvError("no such environment.")
    slot.last_used = self._clock()
    return slot

  def _guarded(self, slot: _Slot, call: Callable[[TextEnv], StepResult], what: str) -> StepResult:
    env = slot.env
    try:
      if self._executor is None:
        return call(env)
      future = self._executor.submit(call, env)
      try:
        return future.result(timeout=self.config.step_timeout_s)
      except concurrent.futures.TimeoutError:
        future.cancel()
        return self._fail(slot, f"{what} did not finish within {self.config.step_timeout_s} s")
    except EnvProtocolError:
      raise
    except Exception as e:
      detail = traceback.format_exception_only(type(e), e)[-1].strip()
      return self._fail(slot, f"{what} raised {detail}")

  def _fail(self, slot: _Slot, error: str) -> StepResult:
    slot.env, slot.error = None, error  # the broken object is dropped; reset builds a new one
    self.crashed += 1
    return StepResult(f"Environment error: {error}", 0.0, True, {"error": error})
