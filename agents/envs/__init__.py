"""Text environments for multi-turn agent RL, and the AgentGym-style protocol that serves them in-process or over
HTTP (AgentGym-RL, arXiv 2509.08755). `make_env("gridworld", gridworld_config())` builds one;
`make_pool(name, env_config, pool_config())` the manager that `LocalEnvClient` and the HTTP server share."""

from __future__ import annotations

import importlib
import json
from typing import Any, Mapping, Sequence

import ml_collections

from agents.envs.base import EnvProtocolError, EpisodeFailed, InvalidAction, StepResult, TextEnv
from agents.envs.client import (EnvClient, EnvRequestError, EnvSession, EnvUnavailableError, HttpEnvClient,
                                LocalEnvClient, http_client_config)
from agents.envs.gridworld import Gridworld, check_gridworld_config, gridworld_config, validate_gridworld_config
from agents.envs.pool import EnvError, EnvPool, PoolFullError, UnknownEnvError, pool_config
from agents.envs.sciworld import SciWorld, sciworld_config, validate_sciworld_config
from agents.envs.search import WordNetSearch, search_config, validate_search_config
from agents.envs.textcraft import TextCraft, textcraft_config, validate_textcraft_config
from agents.envs.trivial import SayWord, trivial_config
from core import config as config_lib


class _Deferred(Sequence):
  """(environment class, config function) of an environment in another package, imported on first use: those
  packages import agents.envs themselves, so importing them here would be circular."""

  def __init__(self, module: str, cls: str, config: str):
    self._names = (module, cls, config)

  def __getitem__(self, i):
    module = importlib.import_module(self._names[0])
    return (getattr(module, self._names[1]), getattr(module, self._names[2]))[i]

  def __len__(self) -> int:
    return 2


ENVIRONMENTS: dict[str, Sequence] = {
    "gridworld": (Gridworld, gridworld_config),
    "textcraft": (TextCraft, textcraft_config),
    "search": (WordNetSearch, search_config),
    "sciworld": (SciWorld, sciworld_config),
    "trivial": (SayWord, trivial_config),
    "vehicle": _Deferred("agents.vehicle.env", "VehicleEnv", "vehicle_config"),
    "toolenv": _Deferred("agents.toolenv.env", "ToolEnv", "toolenv_config"),
}


# Each environment's settings check (its constructor runs it too): the values, beyond the keys, so that a server or
# a run refuses a section that would make resets fail (some only now and then) before any episode.
SETTINGS_CHECKS: dict[str, Any] = {"gridworld": check_gridworld_config, "textcraft": validate_textcraft_config,
                                   "search": validate_search_config, "sciworld": validate_sciworld_config}


def env_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """The default config section of environment `name`, with overrides."""
  return ENVIRONMENTS[_check(name)][1](**overrides)


def env_config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """An environment's config section as it crosses the wire (tuples become lists): what a server's `/health`
  reports and what a trainer compares it with."""
  return json.loads(json.dumps(config.to_dict()))


def validate_env_config(config: ml_collections.ConfigDict, fix: str) -> None:
  """`config.env` names an environment and `config.env_config` is that environment's section (same keys).
  `--config.env=<other>` alone leaves the section of the config file's environment behind, which the other
  environment cannot read (every reset would fail); `fix` tells how to get both right, `{env}` being the name."""
  name = config_lib.check_choice(config, "env", ENVIRONMENTS)
  have, want = set(config.env_config.keys()), set(env_config(name).keys())
  if have != want:
    problems = [f"it lacks {', '.join(sorted(want - have))}"] if want - have else []
    problems += [f"{', '.join(sorted(have - want))} are no {name} keys"] if have - want else []
    raise config_lib.ConfigError(
        f"config.env_config is not a {name} section: {'; '.join(problems)} (config.env = {name!r} was changed "
        f"without its section). Fix: {fix.format(env=name)}.")
  if name in SETTINGS_CHECKS:
    try:
      SETTINGS_CHECKS[name](config.env_config)
    except ValueError as e:
      raise config_lib.ConfigError(str(e)) from None


def check_server_matches(health: Mapping[str, Any], url: str, name: str, config: ml_collections.ConfigDict,
                         fix_here: str = "") -> None:
  """Fails when the server at `url` (its `/health` reply `health`) runs another environment than `name`, or the
  same one with another config section than `config`: whoever talks to it (a trainer's warm start, vocabulary and
  oracles; an evaluation's scoring of episodes) takes the local config as the world the episodes run in, so a
  mismatch would measure or train on another world without a word. `fix_here` names a change on this side that
  also fixes a mismatch (e.g. the evaluated interface)."""
  served = health.get("env")
  if served != name:
    raise config_lib.ConfigError(
        f"the server at {url} runs environment {served!r}, not config.env = {name!r}. Fix: start "
        f"`python -m agents.serve --config configs/agents/serve.py:{name}` there, or point --config.env_url at a "
        f"{name} server.")
  theirs = health.get("env_config")
  if theirs is None:  # a server built without its config section (make_app's default): nothing to compare
    return
  # dotted keys (`tasks.seed`): a mismatch names the one override that fixes it
  ours, theirs = config_lib.flat_keys(env_config_json(config)), config_lib.flat_keys(theirs)
  differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
  if differ:
    flags = " ".join(f"--config.env_config.{k}={json.dumps(ours.get(k))}" for k in differ)
    raise config_lib.ConfigError(
        f"the {name} server at {url} has another env_config than this run: "
        + ", ".join(f"{k} = {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in differ)
        + f". Fix: start the server with the run's settings ({flags}){fix_here}.")


def make_env(name: str, config: ml_collections.ConfigDict | None = None) -> TextEnv:
  cls, default = ENVIRONMENTS[_check(name)]
  return cls(config if config is not None else default())


def make_pool(name: str, config: ml_collections.ConfigDict, pool: ml_collections.ConfigDict) -> EnvPool:
  """A pool of environments `name` built from `config`; loads shared data (the search corpus) once, up front."""
  make_env(name, config)  # fail here, not on the first request, if a data source is missing
  return EnvPool(lambda: make_env(name, config), pool)


def _check(name: str) -> str:
  if name not in ENVIRONMENTS:
    raise ValueError(f"unknown environment {name!r}; valid: {', '.join(ENVIRONMENTS)}.")
  return name


__all__ = [
    "ENVIRONMENTS", "EnvClient", "EnvError", "EnvPool", "EnvProtocolError", "EnvRequestError", "EnvSession",
    "EnvUnavailableError", "EpisodeFailed", "Gridworld", "HttpEnvClient", "InvalidAction", "LocalEnvClient",
    "PoolFullError", "SciWorld", "StepResult", "TextCraft", "TextEnv", "UnknownEnvError", "WordNetSearch",
    "check_server_matches", "env_config", "env_config_json", "gridworld_config", "http_client_config", "make_env",
    "make_pool", "pool_config", "sciworld_config", "search_config", "textcraft_config", "validate_env_config",
    "SETTINGS_CHECKS", "validate_gridworld_config", "validate_sciworld_config", "validate_search_config",
    "validate_textcraft_config",
]
