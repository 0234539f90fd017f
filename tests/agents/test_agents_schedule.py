"""ScalingInter-RL turn-limit schedule: stage boundaries, fixed horizons, uneven stages, bad input."""

import pytest

from agents.schedule import PAPER_SCHEDULES, ScalingInterSchedule, schedule_config, turn_limit


def test_paper_babyai_schedule_boundaries():
  schedule = ScalingInterSchedule(*PAPER_SCHEDULES["babyai"])
  assert schedule.boundaries == (100, 200)
  expected = {0: 6, 1: 6, 99: 6, 100: 13, 101: 13, 199: 13, 200: 20, 201: 20, 10**7: 20}
  assert {step: schedule.turn_limit(step) for step in expected} == expected
  assert [schedule.stage(s) for s in (0, 99, 100, 199, 200)] == [0, 0, 1, 1, 2]


def test_every_paper_schedule_rises_at_its_stage_length():
  for name, (limits, length) in PAPER_SCHEDULES.items():
    schedule = ScalingInterSchedule(limits, length)
    for stage, limit in enumerate(limits):
      assert schedule.turn_limit(stage * length) == limit, name
      if stage:
        assert schedule.turn_limit(stage * length - 1) == limits[stage - 1], name
  assert turn_limit(159, *PAPER_SCHEDULES["webarena"]) == 12 and turn_limit(160, *PAPER_SCHEDULES["webarena"]) == 15


def test_fixed_horizon_and_uneven_stages():
  fixed = ScalingInterSchedule((10,), 100)
  assert fixed.boundaries == () and {fixed.turn_limit(s) for s in (0, 100, 10**6)} == {10}
  uneven = ScalingInterSchedule((2, 4, 8), (50, 150))
  assert uneven.boundaries == (50, 200)
  assert [uneven.turn_limit(s) for s in (49, 50, 199, 200)] == [2, 4, 4, 8]
  assert turn_limit(50, [2, 4, 8], [50, 150]) == 4


def test_from_config():
  config = schedule_config(turn_limits=(5, 8, 10), steps_per_stage=100)
  assert ScalingInterSchedule.from_config(config).turn_limit(250) == 10


@pytest.mark.parametrize("limits,lengths,match", [
    ((), 100, "non-empty"), ((6, 0), 100, ">= 1"), ((6, 13), 0, "steps_per_stage"),
    ((6, 13, 20), (100,), "one per stage"), ((6.5,), 100, "integers"),
    ((8, 4, 2), 100, "must not decrease"),  # the horizon comparison would call 8 turns "short" and 2 "long"
])
def test_bad_schedules_are_refused(limits, lengths, match):
  with pytest.raises(ValueError, match=match):
    ScalingInterSchedule(limits, lengths)


def test_negative_step_is_refused():
  with pytest.raises(ValueError, match="from 0"):
    ScalingInterSchedule((6, 13), 100).turn_limit(-1)
