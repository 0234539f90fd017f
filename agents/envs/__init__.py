"""Text environments for multi-turn agent RL, and the AgentGym-style protocol that serves them in-process or over
HTTP (AgentGym-RL, arXiv 2509.08755). `make_env("gridworld", gridworld_config())` builds one;
`make_pool(name, env_config, pool_config())` the manager that `LocalEnvClient` and the HTTP server share."""

from __future__ import annotations

import importlib
import json
from typing import Any, Sequence

import ml_collections

from agents.envs.base import EnvProtocolError, EpisodeFailed, InvalidAction, StepResult, TextEnv
from agents.envs.client import (EnvClient, EnvRequestError, EnvSession, EnvUnavailableError, HttpEnvClient,
                                LocalEnvClient, http_client_config)
from agents.envs.gridworld import Gridworld, gridworld_config
from agents.envs.pool import EnvError, EnvPool, PoolFullError, UnknownEnvError, pool_config
from agents.envs.sciworld import SciWorld, sciworld_config
from agents.envs.search import WordNetSearch, search_config
from agents.envs.textcraft import TextCraft, textcraft_config
from agents.envs.trivial import SayWord, trivial_config


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


def env_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """The default config section of environment `name`, with overrides."""
  return ENVIRONMENTS[_check(name)][1](**overrides)


def env_config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """An environment's config section as it crosses the wire (tuples become lists): what a server's `/health`
  reports and what a trainer compares it with."""
  return json.loads(json.dumps(config.to_dict()))


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
    "env_config", "gridworld_config", "http_client_config", "make_env", "make_pool", "pool_config",
    "sciworld_config", "search_config", "textcraft_config",
]
