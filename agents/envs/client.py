"""One client interface for environments in this process and behind an HTTP server (AgentGym's API:
`POST /create` -> env id, `POST /reset {env_idx, id}`, `GET /observation?env_idx=`, `POST /step {env_idx,
action}` -> `{observation, reward, done, info}`, `POST /close {env_idx}`).

`LocalEnvClient` calls an `EnvPool` directly; `HttpEnvClient` calls the same pool through `agents.envs.server`.
Both return the same `StepResult`s and raise the same errors, so rollout code does not know which it holds.
`EnvSession` is one trajectory's handle: it turns every failure (environment crash or hang, server gone,
network down after retries) into a terminal step with `info["error"]`, so one broken environment ends one
trajectory and never the run.

The HTTP client retries what is safe to retry: connection failures, timeouts and 502/503/504 answers, with
exponential backoff. A step carries a per-environment sequence number, and a create an idempotency key, so a
retried request whose first attempt did reach the server is answered from the server's record instead of being
applied twice (a second step, or an orphan environment nobody closes). Any reply the client cannot read (not
JSON, missing fields, a broken stream) raises `EnvRequestError`; `EnvSession` turns even unforeseen exceptions
into an ended trajectory.
"""

from __future__ import annotations

import abc
import os
import secrets
import time
from typing import Any

import httpx
import ml_collections

from agents.envs.base import EnvProtocolError, StepResult
from agents.envs.pool import EnvError, EnvPool, PoolFullError, UnknownEnvError
from core.config import section

CLIENT_KEY_HEADER = "X-Client-Key"
CREATE_KEY_HEADER = "Idempotency-Key"
TOKEN_ENV_VAR = "AGENTS_ENV_TOKEN"  # the shared token; here because server.py imports this module, not back


class EnvUnavailableError(EnvError):
  """The server could not be reached or kept failing after all retries."""


class EnvRequestError(EnvError):
  """The server refused a request as malformed, too large or unauthorised (a bug or a misconfiguration)."""


class EnvClient(abc.ABC):
  """create / reset / observation / step / close, in-process or remote."""

  @abc.abstractmethod
  def create(self) -> str: ...

  @abc.abstractmethod
  def reset(self, env_idx: str, task_id: int) -> StepResult: ...

  @abc.abstractmethod
  def observation(self, env_idx: str) -> str: ...

  @abc.abstractmethod
  def step(self, env_idx: str, action: str) -> StepResult: ...

  @abc.abstractmethod
  def close(self, env_idx: str) -> None: ...

  def shutdown(self) -> None:
    """Releases the client's own resources (connections)."""

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.shutdown()


class LocalEnvClient(EnvClient):
  """Environments in this process, through the same pool a server uses. Each client has its own key."""

  def __init__(self, pool: EnvPool, client_key: str | None = None):
    self.pool = pool
    self.client_key = client_key or secrets.token_urlsafe(18)

  def create(self) -> str:
    return self.pool.create(self.client_key)

  def reset(self, env_idx: str, task_id: int) -> StepResult:
    return self.pool.reset(self.client_key, env_idx, task_id)

  def observation(self, env_idx: str) -> str:
    return self.pool.observation(self.client_key, env_idx)

  def step(self, env_idx: str, action: str) -> StepResult:
    return self.pool.step(self.client_key, env_idx, action)

  def close(self, env_idx: str) -> None:
    self.pool.close(self.client_key, env_idx)


def http_client_config(**overrides: Any) -> ml_collections.ConfigDict:
  """Timeouts (seconds) and retries of the HTTP client."""
  return section("http_client", dict(connect_timeout_s=5.0, timeout_s=60.0, retries=4, backoff_s=0.2,
                                     max_connections=8), overrides)


_RETRY_STATUS = (502, 503, 504)


class HttpEnvClient(EnvClient):
  """Environments behind an `agents.envs.server` at `base_url`; `token` (default: $AGENTS_ENV_TOKEN) if the
  server requires one."""

  def __init__(self, base_url: str, config: ml_collections.ConfigDict | None = None, token: str | None = None,
               client_key: str | None = None):
    self.config = config or http_client_config()
    self.client_key = client_key or secrets.token_urlsafe(18)
    token = token or os.environ.get(TOKEN_ENV_VAR)
    headers = {CLIENT_KEY_HEADER: self.client_key}
    if token:
      headers["Authorization"] = f"Bearer {token}"
    self._http = httpx.Client(
        base_url=base_url.rstrip("/"), headers=headers,
        timeout=httpx.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s),
        limits=httpx.Limits(max_connections=self.config.max_connections,
                            max_keepalive_connections=self.config.max_connections))
    self._seq: dict[str, int] = {}

  def shutdown(self) -> None:
    self._http.close()

  def _request(self, method: str, path: str, *, json: Any = None, params: Any = None, headers: Any = None,
               missing_ok: bool = False) -> Any:
    last_error = ""
    for attempt in range(self.config.retries + 1):
      if attempt:
        time.sleep(self.config.backoff_s * 2**(attempt - 1))
      try:
        response = self._http.request(method, path, json=json, params=params, headers=headers)
      except httpx.TransportError as e:  # connect/read/write timeouts, refused or reset connections
        last_error = f"{type(e).__name__}: {e}"
        continue
      except httpx.HTTPError as e:  # not worth retrying: too many redirects, a body that does not decode
        raise EnvRequestError(f"{method} {path}: {type(e).__name__}: {e}") from e
      if response.status_code in _RETRY_STATUS:
        last_error = f"HTTP {response.status_code}: {response.text[:200]}"
        if response.status_code == 503 and "max_envs" in response.text:
          raise PoolFullError(_message(response))
        continue
      if response.status_code == 404:
        if missing_ok and attempt:
          return None  # a retried close whose first attempt did close it
        raise UnknownEnvError(_message(response))
      if response.status_code == 409:
        raise EnvProtocolError(_message(response))
      if response.status_code >= 400:
        raise EnvRequestError(f"{method} {path}: HTTP {response.status_code}: {_message(response)}")
      try:
        return response.json()
      except ValueError as e:  # a proxy's HTML page, a truncated body: not this protocol's answer
        raise EnvRequestError(f"{method} {path}: the reply is not JSON ({e}): {response.text[:200]!r}") from e
    raise EnvUnavailableError(f"{method} {path} failed after {self.config.retries + 1} attempts: {last_error}")

  def create(self) -> str:
    # One key for all attempts of this create: a retry after a lost reply gets the environment already made.
    key = secrets.token_urlsafe(12)
    return _field(self._request("POST", "/create", json={}, headers={CREATE_KEY_HEADER: key}), "env_idx", "/create")

  def reset(self, env_idx: str, task_id: int) -> StepResult:
    # the numbering goes on across resets, as the pool's does: a late copy of an old step stays recognisable
    return _step_result(self._request("POST", "/reset", json={"env_idx": env_idx, "id": task_id}), "/reset")

  def observation(self, env_idx: str) -> str:
    return _field(self._request("GET", "/observation", params={"env_idx": env_idx}), "observation", "/observation")

  def step(self, env_idx: str, action: str) -> StepResult:
    seq = 1  # a bad id (no string) is numbered 1 and not kept: the server refuses it as the pool would
    if isinstance(env_idx, str):
      seq = self._seq[env_idx] = self._seq.get(env_idx, 0) + 1
    return _step_result(self._request("POST", "/step", json={"env_idx": env_idx, "action": action, "seq": seq}),
                        "/step")

  def close(self, env_idx: str) -> None:
    if isinstance(env_idx, str):
      self._seq.pop(env_idx, None)
    self._request("POST", "/close", json={"env_idx": env_idx}, missing_ok=True)

  def health(self) -> dict[str, Any]:
    """The server's `/health` reply: the environment's name and config section, and the pool's counters."""
    reply = self._request("GET", "/health")
    if not isinstance(reply, dict):
      raise EnvRequestError(f"/health: the reply is not a JSON object: {str(reply)[:200]}")
    return reply


def _field(data: Any, key: str, path: str) -> Any:
  try:
    return data[key]
  except (KeyError, TypeError, IndexError) as e:
    raise EnvRequestError(f"{path}: the reply has no {key!r}: {str(data)[:200]}") from e


def _step_result(data: Any, path: str) -> StepResult:
  try:
    return StepResult.from_json(data)
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise EnvRequestError(f"{path}: the reply is not a step result ({type(e).__name__}: {e}): "
                          f"{str(data)[:200]}") from e


def _message(response: httpx.Response) -> str:
  try:
    return str(response.json().get("error", response.text))
  except (ValueError, AttributeError):
    return response.text[:200]


class EnvSession:
  """One trajectory's environment: create + reset on `start`, `step`, close at the end; failures end the
  trajectory with `info["error"]` instead of raising."""

  def __init__(self, client: EnvClient, task_id: int):
    self.client, self.task_id = client, task_id
    self.env_idx: str | None = None
    self.error: str | None = None

  def _failed(self, e: Exception) -> StepResult:
    self.error = f"{type(e).__name__}: {e}"
    return StepResult(f"Environment error: {self.error}", 0.0, True, {"error": self.error})

  def start(self) -> StepResult:
    try:
      self.env_idx = self.client.create()
      result = self.client.reset(self.env_idx, self.task_id)
    except Exception as e:  # whatever one environment or reply does, it ends this trajectory, never the run
      return self._failed(e)
    if "error" in result.info:
      self.error = result.info["error"]
    return result

  def step(self, action: str) -> StepResult:
    if self.env_idx is None or self.error is not None:
      return StepResult(f"Environment error: {self.error or 'not started'}", 0.0, True,
                        {"error": self.error or "not started"})
    try:
      result = self.client.step(self.env_idx, action)
    except Exception as e:  # as in start
      return self._failed(e)
    if "error" in result.info:
      self.error = result.info["error"]
    return result

  def close(self) -> None:
    if self.env_idx is not None:
      try:
        self.client.close(self.env_idx)
      except Exception:
        pass  # the server is gone, already reaped it, or answers nonsense: nothing left to free on our side
      self.env_idx = None

  def __enter__(self) -> "EnvSession":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
