"""A one-turn sanity environment for RL code (not from a paper): the reply must start with a fixed word.

It answers "does the learner learn at all?" in seconds: a from-scratch policy over its dozen-word vocabulary says
the word by chance (about one reply in ten), and any working policy-gradient update raises that to nearly always
within a few dozen steps. Bad or empty replies are observations with reward 0, as in every environment here.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from agents.envs.base import InvalidAction, TextEnv
from core.config import section


def trivial_config(**overrides: Any) -> ml_collections.ConfigDict:
  return section("trivial", dict(word="left", other="right"), overrides)


class _SayWord:
  def __init__(self, word: str):
    self.word = word

  def act(self, observation: str) -> str:
    del observation
    return self.word


class SayWord(TextEnv):
  name = "trivial"

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(max_steps=1)
    self.config = config

  def instructions(self) -> str:
    return f"Say {self.config.word} or {self.config.other} ."

  def _reset(self, task_id: int) -> tuple[str, dict[str, Any]]:
    return self.instructions(), {}

  def _step(self, action: str) -> tuple[str, bool]:
    words = action.split()
    if not words:
      raise InvalidAction("the reply is empty")
    return f"You said {words[0]} .", words[0] == self.config.word

  def _progress(self) -> float:
    return 0.0

  def oracle(self, task_id: int) -> _SayWord:
    return _SayWord(self.config.word)
