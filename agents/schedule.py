"""The ScalingInter-RL horizon curriculum (AgentGym-RL, arXiv 2509.08755): training starts with a small
limit on interaction turns, so the agent first learns to solve short tasks reliably, and the limit is raised in
stages, letting it learn longer-horizon behaviour (planning, backtracking) once the basics are stable.

A schedule is a list of turn limits and how many training steps each stage lasts; the last stage lasts for the
rest of training. With `steps_per_stage` one integer, every stage but the last has that length (the paper's
setting: BabyAI 6 -> 13 -> 20 turns, a stage every 100 steps); a sequence gives each non-final stage its own
length. A single turn limit is a fixed horizon (the paper's baselines).

    schedule = ScalingInterSchedule((6, 13, 20), 100)
    schedule.turn_limit(0) == 6; schedule.turn_limit(99) == 6; schedule.turn_limit(100) == 13
    schedule.turn_limit(200) == 20 == schedule.turn_limit(10**6)
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from typing import Any, Sequence

import ml_collections

from core.config import section

# The paper's schedules, as issue 6 quotes them: (turn limits, steps per stage).
PAPER_SCHEDULES: dict[str, tuple[tuple[int, ...], int]] = {
    "babyai": ((6, 13, 20), 100),
    "textcraft": ((10, 20, 30), 100),
    "sciworld": ((10, 20, 30), 100),
    "deep_search": ((5, 8, 10), 100),
    "webarena": ((8, 12, 15), 80),
}


def schedule_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The `schedule` config section: turn limits per stage, and steps per (non-final) stage."""
  return section("schedule", dict(turn_limits=(6, 13, 20), steps_per_stage=100), overrides)


@dataclasses.dataclass(frozen=True)
class ScalingInterSchedule:
  turn_limits: tuple[int, ...]
  steps_per_stage: int | tuple[int, ...]

  def __post_init__(self):
    limits = tuple(self.turn_limits)
    if not limits or any(not isinstance(t, int) or isinstance(t, bool) or t < 1 for t in limits):
      raise ValueError(f"turn_limits must be a non-empty list of integers >= 1, got {self.turn_limits!r}.")
    if any(a > b for a, b in zip(limits, limits[1:])):  # the horizon comparison reads the first as short, last as long
      raise ValueError(f"turn_limits must not decrease from one stage to the next (ScalingInter raises the turn "
                       f"limit in stages), got {self.turn_limits!r}.")
    object.__setattr__(self, "turn_limits", limits)
    lengths = self.steps_per_stage
    if isinstance(lengths, int) and not isinstance(lengths, bool):
      lengths = (lengths,) * (len(limits) - 1)
    else:
      lengths = tuple(lengths)
      if len(lengths) != len(limits) - 1:
        raise ValueError(f"steps_per_stage lists {len(lengths)} stage lengths for {len(limits)} turn limits; give "
                         f"one per stage except the last ({len(limits) - 1}), or one integer for all.")
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in lengths):
      raise ValueError(f"steps_per_stage must be integers >= 1, got {self.steps_per_stage!r}.")
    object.__setattr__(self, "_boundaries", tuple(itertools.accumulate(lengths)))

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "ScalingInterSchedule":
    lengths = config.steps_per_stage
    return cls(tuple(config.turn_limits), lengths if isinstance(lengths, int) else tuple(lengths))

  @property
  def boundaries(self) -> tuple[int, ...]:
    """The first training step of each stage after the first."""
    return self._boundaries

  def stage(self, step: int) -> int:
    """The stage (0-based) that training step `step` (0-based) falls in."""
    if step < 0:
      raise ValueError(f"training steps count from 0, got {step}.")
    return bisect.bisect_right(self._boundaries, step)

  def turn_limit(self, step: int) -> int:
    """The most interaction turns a rollout may take at training step `step`."""
    return self.turn_limits[self.stage(step)]


def turn_limit(step: int, turn_limits: Sequence[int], steps_per_stage: int | Sequence[int]) -> int:
  """The turn limit at `step` under a ScalingInter schedule (see ScalingInterSchedule)."""
  return ScalingInterSchedule(tuple(turn_limits), steps_per_stage if isinstance(steps_per_stage, int)
                              else tuple(steps_per_stage)).turn_limit(step)
