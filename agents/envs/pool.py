"""The environment manager behind both the in-process client and the HTTP server, so the two behave the same:
AgentGym's create / reset / observation / step / close (AgentGym-RL) over many live environments.

What it guarantees, and why:
* Environment ids are `secrets.token_urlsafe` strings: an id cannot be guessed from another one. Ids still get
  written to logs and trajectory files, so an environment also remembers the key of the client that created it,
  and any other key is answered exactly as an unknown id is (`UnknownEnvError`): a client can neither use nor
  detect another client's environment. Keys are compared in constant time.
* A crash inside an environment (an exception in reset/step) or a step that runs longer than `step_timeout_s`
  ends that episode: the caller gets a terminal result with `info["error"]` and the run goes on. The environment
  object is discarded and the next reset of the same id builds a fresh one. The timeout counts from when the step
  starts running, not from when it was queued. Python cannot kill a thread, so a hung step keeps its thread until
  it returns; a new worker takes that thread's place as soon as the step is given up, so healthy environments
  wait on hung ones only while `workers` steps hang at once, and then for at most `step_timeout_s`. Once a client
  has `max_hung_per_client` hung steps, or all clients `max_hung`, later steps of that client (or of every
  client) fail at once, checked both when a step is submitted and when it starts; steps already running when the
  cap is reached can still hang, so at most `workers - 1` more are carried. Neither a client whose environments
  keep hanging nor clients that keep changing their key can pile up threads without bound.
* Closed environments are dropped at once; environments idle for `idle_timeout_s` (a client that died without
  closing) are reaped; `max_envs` bounds how many live at a time. Thousands of episodes leave nothing behind.
* An action longer than `max_action_chars` is a bad action like any other (the environment's own invalid-action
  path: the agent is told, reward 0, and it counts as a step).
* A step may carry a sequence number: a client retrying a step whose reply was lost sends the same number and
  gets the stored result instead of stepping twice. Likewise a create may carry a client-made key: a retried
  create returns the environment the first attempt made instead of leaving it orphaned. Keys live only as long as
  their environment, so they take no more memory than `max_envs` allows.
"""

from __future__ import annotations

import collections
import dataclasses
import hmac
import queue
import re
import secrets
import threading
import time
import traceback
import weakref
from typing import Any, Callable

import ml_collections

from agents.envs.base import EnvProtocolError, StepResult, TextEnv
from core.config import section

ENV_ID_BYTES = 18  # 144 random bits, 24 url-safe characters
_ENV_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def pool_config(**overrides: Any) -> ml_collections.ConfigDict:
  """Limits of one environment pool (in-process or behind a server)."""
  return section("pool", dict(max_envs=4096, max_action_chars=4096, step_timeout_s=30.0, idle_timeout_s=900.0,
                              workers=16, max_hung_per_client=16, max_hung=256), overrides)


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
  create_key: str | None = None


class EnvPool:
  """Live environments by id. Thread-safe: many clients (threads) may use one pool at once."""

  def __init__(self, make_env: Callable[[], TextEnv], config: ml_collections.ConfigDict,
               clock: Callable[[], float] = time.monotonic):
    self._make_env = make_env
    self.config = config
    self._clock = clock  # injectable so that tests can age environments without sleeping
    self._slots: dict[str, _Slot] = {}
    self._by_create_key: dict[tuple[str, str], str] = {}  # (owner, create key) -> env id, live environments only
    self._lock = threading.Lock()
    # Steps run on worker threads only so that a hung one can be abandoned after its timeout.
    self._runner = (_StepRunner(config.workers, config.step_timeout_s, config.max_hung_per_client,
                                config.max_hung)
                    if config.step_timeout_s else None)
    # The workers end with the pool even if nobody calls shutdown (they hold the runner, never the pool).
    self._stop_workers = weakref.finalize(self, self._runner.shutdown) if self._runner else None
    self.created = self.closed = self.reaped = self.crashed = 0

  @property
  def num_live(self) -> int:
    return len(self._slots)

  def shutdown(self) -> None:
    with self._lock:
      self._slots.clear()
      self._by_create_key.clear()
    if self._stop_workers is not None:
      self._stop_workers()

  # -- the protocol ----------------------------------------------------------------------------------------------
  def create(self, owner: str, key: str | None = None) -> str:
    """A new environment of `owner`. With `key` (made by the client, sent again on a retry) a repeated create
    returns the environment the first one made, as long as it is live."""
    if key is not None and (not isinstance(key, str) or not _ENV_ID.match(key)):
      raise ValueError(f"a create key is 1-64 url-safe characters (A-Z a-z 0-9 _ -), got {key!r}.")
    self.reap_idle()
    with self._lock:
      if key is not None and (owner, key) in self._by_create_key:
        return self._by_create_key[(owner, key)]
      if len(self._slots) >= self.config.max_envs:
        raise PoolFullError(f"{len(self._slots)} environments are live, the limit (max_envs); close finished "
                            "ones or start the server with a higher pool.max_envs.")
      env_idx = secrets.token_urlsafe(ENV_ID_BYTES)
      self._slots[env_idx] = _Slot(env=None, owner=owner, last_used=self._clock(), create_key=key)
      if key is not None:
        self._by_create_key[(owner, key)] = env_idx
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
          slot.env.max_action_chars = self.config.max_action_chars
        except Exception as e:  # an environment that cannot even be built fails this episode only
          return self._fail(slot, f"creating the environment failed: {type(e).__name__}: {e}")
      # The step count goes on across resets (the client's numbering does too): a late copy of a step sent before
      # the reset is then still recognised as late, not applied to the new episode.
      slot.last_result = None
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
      if seq is not None and slot.last_seq is not None and seq <= slot.last_seq:
        # a copy of an earlier attempt that arrived late, after the client moved on: stepping again would apply
        # that action twice
        raise EnvProtocolError(f"step {seq} arrives after step {slot.last_seq} of this environment: a late copy "
                               "of a retried request (perhaps from before the last reset), not applied.")
      if slot.error is not None:
        result = StepResult(f"Environment error: {slot.error}", 0.0, True, {"error": slot.error})
      elif slot.env is None:
        raise EnvProtocolError("step before reset: call reset(env_idx, task_id) first.")
      else:
        result = self._guarded(slot, lambda env: env.step(action), "step")
      slot.last_seq, slot.last_result = seq, result
      return result

  def close(self, owner: str, env_idx: str) -> None:
    slot = self._slot(owner, env_idx)
    with self._lock:
      if self._slots.get(env_idx) is slot:
        self._drop(env_idx)
        self.closed += 1

  def reap_idle(self) -> int:
    """Drops environments nobody used for `idle_timeout_s`; returns how many."""
    if not self.config.idle_timeout_s:
      return 0
    deadline = self._clock() - self.config.idle_timeout_s
    with self._lock:
      stale = [k for k, s in self._slots.items() if s.last_used < deadline and not s.lock.locked()]
      for k in stale:
        self._drop(k)
      self.reaped += len(stale)
    return len(stale)

  # -- internals -------------------------------------------------------------------------------------------------
  def _drop(self, env_idx: str) -> None:
    """Forgets a live environment and its create key; the caller holds `self._lock`."""
    slot = self._slots.pop(env_idx)
    if slot.create_key is not None:
      del self._by_create_key[(slot.owner, slot.create_key)]

  def _slot(self, owner: str, env_idx: str) -> _Slot:
    if not isinstance(env_idx, str) or not _ENV_ID.match(env_idx):
      raise UnknownEnvError("no such environment.")
    with self._lock:  # looked up and marked used at once: an idle reap cannot drop it in between
      slot = self._slots.get(env_idx)
      # Same answer for "never existed" and "belongs to someone else": ownership is not revealed.
      if slot is None or not hmac.compare_digest(slot.owner.encode(), owner.encode()):
        raise UnknownEnvError("no such environment.")
      slot.last_used = self._clock()
    return slot

  def _guarded(self, slot: _Slot, call: Callable[[TextEnv], StepResult], what: str) -> StepResult:
    env = slot.env
    try:
      if self._runner is None:
        return call(env)
      return self._runner.run(slot.owner, lambda: call(env))
    except _Abandoned as e:
      return self._fail(slot, f"{what} {e}")
    except EnvProtocolError:
      raise
    except Exception as e:
      detail = traceback.format_exception_only(type(e), e)[-1].strip()
      return self._fail(slot, f"{what} raised {detail}")

  def _fail(self, slot: _Slot, error: str) -> StepResult:
    slot.env, slot.error = None, error  # the broken object is dropped; reset builds a new one
    self.crashed += 1
    return StepResult(f"Environment error: {error}", 0.0, True, {"error": error})


class _Abandoned(Exception):
  """A call the runner gave up on (it overran its timeout) or refused (its client has too many hung ones)."""


class _Job:
  __slots__ = ("owner", "call", "done", "started", "result", "error", "abandoned")

  def __init__(self, owner: str, call: Callable[[], StepResult]):
    self.owner, self.call = owner, call
    self.done = threading.Event()
    self.started: float | None = None  # time.monotonic() when a worker began it
    self.result: StepResult | None = None
    self.error: BaseException | None = None
    self.abandoned = False


class _StepRunner:
  """Up to `workers` daemon threads (started as needed) running environment calls, with a timeout counted from
  when a call starts. A call that overruns is abandoned together with its thread and a fresh thread takes its
  place, so the threads free for healthy environments never run out for longer than one timeout; the abandoned
  one ends when its call returns. A client with `max_hung_per_client` abandoned calls still running gets its next
  calls refused until some return; with `max_hung` of them across all clients (client keys cost nothing to make),
  every client's calls are."""

  def __init__(self, workers: int, timeout_s: float, max_hung_per_client: int, max_hung: int):
    self.workers, self.timeout_s = workers, timeout_s
    self.max_hung_per_client, self.max_hung = max_hung_per_client, max_hung
    self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
    self._idle = threading.Semaphore(0)  # released by each worker that waits for a call
    self._threads = 0  # workers started and not abandoned
    self._lock = threading.Lock()
    self._hung: collections.Counter[str] = collections.Counter()  # owner -> abandoned calls still running

  def _spawn(self) -> None:
    threading.Thread(target=self._work, daemon=True, name="env-step").start()

  def _refusal(self, owner: str) -> str | None:
    """Why a call of `owner` may not start now (the caller holds `_lock`), or None."""
    total, mine = sum(self._hung.values()), self._hung[owner]
    if total >= self.max_hung:
      return (f"was not run: {total} calls are still hung across all clients (the limit, pool.max_hung); fix the "
              "environment's hang, or raise the limit.")
    if mine >= self.max_hung_per_client:
      return (f"was not run: {mine} earlier calls of this client are still hung (the limit, "
              "pool.max_hung_per_client); fix the environment's hang, or raise the limit.")
    return None

  def _work(self) -> None:
    while (job := self._jobs.get()) is not None:
      # Checked again as the call starts: calls queued together all passed the check in `run` before any of them
      # hung, and without this they would all run and could all hang, past the caps.
      with self._lock:
        refusal = self._refusal(job.owner)
      if refusal is not None:
        job.error = _Abandoned(refusal)
      else:
        job.started = time.monotonic()
        try:
          job.result = job.call()
        except BaseException as e:  # handed to the caller, as concurrent.futures does
          job.error = e
      with self._lock:
        job.done.set()
        if job.abandoned:
          self._hung[job.owner] -= 1
          if not self._hung[job.owner]:
            del self._hung[job.owner]
          return  # a replacement already took this thread's place
      del job  # while this thread waits for the next call, it keeps no finished environment alive
      self._idle.release()

  def run(self, owner: str, call: Callable[[], StepResult]) -> StepResult:
    with self._lock:  # workers delete owners from `_hung` as their calls return: never iterate it unlocked
      refusal = self._refusal(owner)
    if refusal is not None:
      raise _Abandoned(refusal)
    job = _Job(owner, call)
    self._jobs.put(job)
    if not self._idle.acquire(blocking=False):
      with self._lock:
        if self._threads < self.workers:
          self._threads += 1
          self._spawn()
    # Waiting in the queue is not the environment's fault: the clock starts when a worker picks the call up.
    while not job.done.wait(self.timeout_s if job.started is None
                            else job.started + self.timeout_s - time.monotonic()):
      if job.started is not None and time.monotonic() >= job.started + self.timeout_s:
        with self._lock:
          if not job.done.is_set():
            job.abandoned = True
            self._hung[owner] += 1
            self._spawn()
            raise _Abandoned(f"did not finish within {self.timeout_s} s")
    if job.error is not None:
      raise job.error
    return job.result

  def shutdown(self) -> None:
    for _ in range(self.workers):  # queued after the calls already waiting; abandoned threads end on their own
      self._jobs.put(None)
