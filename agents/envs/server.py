"""An HTTP server for one environment type: AgentGym's env-server API (AgentGym-RL) on Starlette + uvicorn.

Routes: `POST /create` -> `{"env_idx"}` (an `Idempotency-Key` header makes a retried create return the same id);
`POST /reset {"env_idx", "id"}` (id = task id) and `POST /step {"env_idx", "action", "seq"?}` -> `{"observation",
"reward", "done", "info"}`; `GET /observation?env_idx=` -> `{"observation"}`; `POST /close {"env_idx"}`;
`GET /health`. Errors are JSON `{"error": ...}` with 400 (malformed request), 401 (token), 404 (no such
environment for this client, an id that is no string or none at all), 409 (protocol: step before reset, a late
copy of an earlier step, a task id or action of the wrong type: what the pool raises in-process too), 413 (body
too large), 500 (a reply that cannot be encoded as JSON), 503 (pool full).

Safety: the server binds 127.0.0.1 unless told otherwise, and refuses to bind anything else without a shared
token, checked in constant time on every request (`Authorization: Bearer <token>`). Bodies are capped at
`max_body_bytes` while they stream in; actions at `pool.max_action_chars`. Each request's client key
(`X-Client-Key`, a random string each client makes) owns the environments it creates; see pool.py.
Environment work runs on worker threads, so one slow environment never blocks the event loop.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import json
import os
import socket
import threading
from typing import Any, Callable

import anyio
import anyio.to_thread
import ml_collections
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agents.envs import env_config_json, make_pool, validate_env_config
from agents.envs.base import EnvProtocolError
from agents.envs.client import CLIENT_KEY_HEADER, CREATE_KEY_HEADER, TOKEN_ENV_VAR
from agents.envs.pool import EnvPool, PoolFullError, UnknownEnvError
from core import config as config_lib
from core.config import section

ANONYMOUS = ""  # the key of clients that send none (AgentGym's own clients): ids alone then guard environments


def server_config(**overrides: Any) -> ml_collections.ConfigDict:
  """Where the server listens and its request limits. The token comes from $AGENTS_ENV_TOKEN or `token_file`,
  never from the config or the command line (both end up in logs and `ps`)."""
  return section("server", dict(host="127.0.0.1", port=8765, token_file="", max_body_bytes=65536,
                                limit_concurrency=1024, log_level="warning"), overrides)


class _BodyTooLarge(Exception):
  pass


def is_loopback(host: str) -> bool:
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def read_token(config: ml_collections.ConfigDict) -> str | None:
  """The shared token: $AGENTS_ENV_TOKEN, else the first line of `config.token_file`, else None."""
  token = os.environ.get(TOKEN_ENV_VAR, "")
  if not token and config.token_file:
    with open(os.path.expanduser(config.token_file)) as f:  # as the config check reads it
      token = f.readline().strip()
  return token or None


def check_exposure(host: str, token: str | None) -> None:
  if not is_loopback(host) and not token:
    raise ValueError(f"binding {host!r} exposes the environments beyond this machine; set a shared token first "
                     f"(export {TOKEN_ENV_VAR}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') "
                     "on server and clients), or bind 127.0.0.1.")


class _TokenGuard:
  """Pure ASGI middleware: every HTTP request must carry `Authorization: Bearer <token>`."""

  def __init__(self, app, token: str):
    self.app = app
    self.expected = f"Bearer {token}".encode()

  async def __call__(self, scope, receive, send):
    if scope["type"] == "http":
      given = dict(scope["headers"]).get(b"authorization", b"")
      if not hmac.compare_digest(given, self.expected):
        await JSONResponse({"error": "missing or wrong token"}, status_code=401)(scope, receive, send)
        return
    await self.app(scope, receive, send)


def make_app(pool: EnvPool, config: ml_collections.ConfigDict, token: str | None = None,
             name: str = "env", env_config: ml_collections.ConfigDict | None = None) -> Starlette:
  """The Starlette app serving `pool`; with `token`, every request must present it. `name` and `env_config`
  (the environment's config section) are reported by `/health`, so that a trainer can check that the server runs
  the environment its own config describes."""
  max_body = config.max_body_bytes
  described = env_config_json(env_config) if env_config is not None else None
  # A handler thread waits out its environment call, hung ones included; on anyio's shared default limiter (40
  # threads) 40 hung steps would hold every route of every client, so the server gets a limiter as wide as the
  # requests it admits. Made on the first request: a limiter belongs to the running event loop.
  limiter: list[anyio.CapacityLimiter] = []

  async def read_json(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_body):
      raise _BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():  # counted as it arrives: a chunked body cannot dodge the cap
      body += chunk
      if len(body) > max_body:
        raise _BodyTooLarge
    try:
      data = json.loads(body or b"{}")
    except ValueError as e:
      raise ValueError(f"the body is not JSON ({e})") from None
    except RecursionError:  # nesting deep enough to exhaust the parser's stack, still under the size cap
      raise ValueError("the body's JSON is nested too deeply") from None
    if not isinstance(data, dict):
      raise ValueError("the body must be a JSON object")
    return data

  def owner(request: Request) -> str:
    return request.headers.get(CLIENT_KEY_HEADER, ANONYMOUS)

  def handler(work: Callable[[Request, dict[str, Any]], Any], with_body: bool = True):
    async def endpoint(request: Request) -> JSONResponse:
      try:
        data = await read_json(request) if with_body else dict(request.query_params)
        if not limiter:
          limiter.append(anyio.CapacityLimiter(config.limit_concurrency))
        result = await anyio.to_thread.run_sync(work, request, data, limiter=limiter[0])
      except _BodyTooLarge:
        return JSONResponse({"error": f"request body over {max_body} bytes"}, status_code=413)
      except UnknownEnvError as e:
        return JSONResponse({"error": str(e)}, status_code=404)
      except PoolFullError as e:
        return JSONResponse({"error": str(e)}, status_code=503)
      except EnvProtocolError as e:
        return JSONResponse({"error": str(e)}, status_code=409)
      except (KeyError, TypeError, ValueError) as e:
        return JSONResponse({"error": f"malformed request: {type(e).__name__}: {e}"}, status_code=400)
      try:  # the server's fault, not the request's: text that is not valid Unicode, NaN, a value JSON cannot hold
        return JSONResponse(result)
      except (TypeError, ValueError) as e:  # UnicodeEncodeError is a ValueError
        return JSONResponse({"error": f"the reply could not be encoded as JSON: {type(e).__name__}: {e}"},
                            status_code=500)
    return endpoint

  def field(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
      raise TypeError(f"{key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value

  def create(request, data):
    return {"env_idx": pool.create(owner(request), request.headers.get(CREATE_KEY_HEADER))}

  # The pool checks the ids, the task id and the action itself, so a bad one raises what it raises in-process
  # (an id that is no string: no such environment, 404; a task id or action of the wrong type: 409), and the two
  # clients raise the same errors.
  def reset(request, data):
    return pool.reset(owner(request), data.get("env_idx"), data["id"]).to_json()

  def observation(request, data):
    return {"observation": pool.observation(owner(request), data.get("env_idx"))}

  def step(request, data):
    seq = data.get("seq")
    if seq is not None:
      seq = field(data, "seq", int)
    return pool.step(owner(request), data.get("env_idx"), data["action"], seq).to_json()

  def close(request, data):
    pool.close(owner(request), data.get("env_idx"))
    return {"closed": True}

  async def health(request: Request) -> JSONResponse:
    return JSONResponse({"env": name, "env_config": described, "live": pool.num_live, "created": pool.created,
                         "closed": pool.closed, "reaped": pool.reaped, "crashed": pool.crashed})

  app = Starlette(routes=[
      Route("/create", handler(create), methods=["POST"]),
      Route("/reset", handler(reset), methods=["POST"]),
      Route("/observation", handler(observation, with_body=False), methods=["GET"]),
      Route("/step", handler(step), methods=["POST"]),
      Route("/close", handler(close), methods=["POST"]),
      Route("/health", health, methods=["GET"]),
      Route("/", health, methods=["GET"]),
  ])
  return _TokenGuard(app, token) if token else app


@dataclasses.dataclass
class RunningServer:
  """A server on a background thread (tests, benchmarks, notebooks); `stop()` ends it."""
  url: str
  server: uvicorn.Server
  thread: threading.Thread

  def stop(self) -> None:
    self.server.should_exit = True
    self.thread.join(timeout=10)

  def __enter__(self) -> "RunningServer":
    return self

  def __exit__(self, *exc) -> None:
    self.stop()


def _bind(host: str, port: int) -> socket.socket:
  family = socket.AF_INET6 if ":" in host else socket.AF_INET
  sock = socket.socket(family, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  sock.bind((host, port))
  return sock


def _uvicorn(app, config: ml_collections.ConfigDict) -> uvicorn.Server:
  return uvicorn.Server(uvicorn.Config(app, log_level=config.log_level, lifespan="off", access_log=False,
                                       limit_concurrency=config.limit_concurrency, timeout_keep_alive=30))


def _check_served_app(app, host: str, token: str | None) -> None:
  """The exposure check on what `app` really enforces: a token handed to the server but not to `make_app` would
  guard nothing."""
  guarded = isinstance(app, _TokenGuard)
  if token and not guarded:
    raise ValueError("a token was given to serve an app that was built without one, so no request would be "
                     "checked. Fix: pass the same token to make_app(pool, config, token).")
  if not guarded:
    check_exposure(host, None)  # beyond loopback, refused


def start_background(app, config: ml_collections.ConfigDict, token: str | None = None) -> RunningServer:
  """Serves `app` on a daemon thread at config.host:config.port (port 0: any free port); returns once listening."""
  _check_served_app(app, config.host, token)
  sock = _bind(config.host, config.port)
  server = _uvicorn(app, config)
  thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="env-server")
  thread.start()
  while not server.started:
    if not thread.is_alive():
      raise RuntimeError(f"the environment server on {config.host}:{config.port} failed to start.")
    threading.Event().wait(0.01)
  host, port = sock.getsockname()[:2]
  return RunningServer(f"http://{_url_host(host)}:{port}", server, thread)


def _url_host(host: str) -> str:
  return f"[{host}]" if ":" in host else host


def serve_forever(app, config: ml_collections.ConfigDict, token: str | None = None) -> None:
  """Serves in the foreground until interrupted; prints the URL first (useful with port 0)."""
  _check_served_app(app, config.host, token)
  sock = _bind(config.host, config.port)
  host, port = sock.getsockname()[:2]
  print(f"serving on http://{_url_host(host)}:{port}", flush=True)
  _uvicorn(app, config).run(sockets=[sock])


MAX_STEP_TIMEOUT_S = 86_400.0


def validate_serve_config(config: ml_collections.ConfigDict) -> None:
  """Checks a serve config (configs/agents/serve.py) before anything starts; raises core.config.ConfigError."""
  validate_env_config(config, "pass --config configs/agents/serve.py:{env} rather than overriding config.env alone")
  config_lib.check(config, "server.port", lambda p: isinstance(p, int) and 0 <= p <= 65535,
                   "must be a port number in 0..65535 (0: any free port)")
  # step_timeout_s = 0 would turn off hang protection: one hung environment would then hold its request forever.
  for key in ("server.max_body_bytes", "server.limit_concurrency", "pool.max_envs", "pool.max_action_chars",
              "pool.workers", "pool.max_hung_per_client", "pool.max_hung", "pool.step_timeout_s"):
    config_lib.check_positive(config, key)
  config_lib.check_positive(config, "pool.idle_timeout_s", allow_zero=True)
  # past threading.TIMEOUT_MAX (~292 years) every wait would raise OverflowError, failing each reset and step
  config_lib.check(config, "pool.step_timeout_s", lambda v: v <= MAX_STEP_TIMEOUT_S,
                   f"must be at most {MAX_STEP_TIMEOUT_S:.0f} s (a day); there is no 'no timeout' setting, since one "
                   "hung environment would hold its request forever",
                   f"pass --config.pool.step_timeout_s={MAX_STEP_TIMEOUT_S:.0f} or less")
  config_lib.check_existing_path(config, "server.token_file")
  if not is_loopback(config.server.host) and not read_token(config.server):
    raise config_lib.ConfigError(
        f"config.server.host = {config.server.host!r} exposes the environments beyond this machine and no token "
        f"is set. Fix: export {TOKEN_ENV_VAR}=<secret> (or set config.server.token_file), or bind 127.0.0.1.")


def serve(config: ml_collections.ConfigDict) -> None:
  """Builds the pool of `config.env` and serves it until interrupted (the `python -m agents.serve` body)."""
  pool = make_pool(config.env, config.env_config, config.pool)
  token = read_token(config.server)
  serve_forever(make_app(pool, config.server, token, name=config.env, env_config=config.env_config), config.server,
                token)
