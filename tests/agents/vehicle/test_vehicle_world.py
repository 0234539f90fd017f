"""VehicleWorld schema and device logic (arXiv 2509.06736, Sec. 3): size, determinism, every API's effect and
its argument errors, requirements and cascades, and the SFC patch validation (Sec. 4)."""

import json
import random

import pytest

from agents.vehicle import tasks
from agents.vehicle.catalog import load_schema
from agents.vehicle.schema import bounds, coerce
from agents.vehicle.world import (ArgumentError, RequirementError, UnknownApiError, VehicleWorld, WorldError, diff,
                                  net_changes)

SCHEMA = load_schema()
ACTION_APIS = sorted(name for name, api in SCHEMA.apis.items() if not api.query)


def test_catalog_is_as_large_as_the_papers():
  counts = SCHEMA.counts()
  assert counts["modules"] >= 30 and counts["apis"] >= 250 and counts["properties"] >= 680
  assert counts["action_apis"] >= 250  # without the per-module status getters too
  for prop in SCHEMA.props.values():
    assert prop.description and prop.kind in ("bool", "int", "float", "enum", "text")
    if prop.kind in ("int", "float"):
      assert prop.low < prop.high
  for module in SCHEMA.modules.values():
    assert module.split in ("multimedia", "touch_control", "car_control", "lights")
  for api in SCHEMA.apis.values():
    assert api.doc and (api.query or api.say)


def test_state_is_a_json_tree_and_the_default_state_is_consistent():
  world = VehicleWorld()
  tree = world.tree()
  assert json.loads(json.dumps(tree)) == tree
  assert tree["seat"]["heater_level"]["driver"] == 0 and tree["environment"]["volume"] == 40
  assert world.violations() == []


def _run_random_calls(seed: int, n: int) -> VehicleWorld:
  rng = random.Random(seed)
  world = VehicleWorld()
  for _ in range(n):
    api = SCHEMA.apis[rng.choice(ACTION_APIS)]
    call = tasks._sample_intent(rng, world, api, tasks.tasks_config())
    try:
      world.call(call.name, call.arguments)
    except WorldError:  # refusals are part of the run; any other exception is a bug and fails the test
      pass
  return world


def test_world_is_deterministic_and_keeps_its_invariants():
  a, b = _run_random_calls(7, 300), _run_random_calls(7, 300)
  assert a.state == b.state
  assert _run_random_calls(8, 300).state != a.state
  assert a.violations() == [] and b.violations() == []


def _prepared(name: str):
  """A world in which `name` can run and changes something, and the call (prerequisites already made)."""
  api = SCHEMA.apis[name]
  rng = random.Random(name)
  fallback = None
  for _ in range(60):
    world = tasks.initial_world(rng, SCHEMA, tasks.tasks_config())
    if name == "phone_answer":  # an incoming call is not something a user can cause
      world.state["environment.sound_channel"] = "phone"
      world.state["phone.call_state"] = "ringing"
    intent = tasks._sample_intent(rng, world, api, tasks.tasks_config())
    result = tasks._execute_with_prerequisites(world, intent, rng)
    if result is None:  # e.g. closing a closed door: first run another API on the same property (open it)
      props = {t.rsplit(".", 1)[0] if t.count(".") == 2 else t for t, _ in api.writes}
      others = [a for a in ACTION_APIS if a != name and props & {t.rsplit(".", 1)[0] if t.count(".") == 2 else t
                                                                  for t, _ in SCHEMA.apis[a].writes}]
      if not others:
        continue
      setup = tasks._sample_intent(rng, world, SCHEMA.apis[rng.choice(others)], tasks.tasks_config())
      first = tasks._execute_with_prerequisites(world, setup, rng)
      if first is None:
        continue
      world = first[0]
      result = tasks._execute_with_prerequisites(world, intent, rng)
      if result is None:
        continue
    for call in result[1][:-1]:
      world.call(call.name, call.arguments)
    if _at_a_bound(world, api, intent):  # keep looking for a state where the move's direction can be seen
      fallback = fallback or (world, intent)
      continue
    return world, intent
  if fallback:
    return fallback
  pytest.fail(f"no state found in which {name} changes anything")


def _at_a_bound(world, api, intent) -> bool:
  """Whether a property that `intent` changes by an amount starts at one of its bounds."""
  for template, expr in api.writes:
    if isinstance(expr, tuple) and expr[0] == "add":
      for path in world._expand_path(template, intent.arguments):
        low, high = bounds(SCHEMA.leaves[path].prop, world.temperature_unit)
        if world.state[path] in (low, high):
          return True
  return False


def _expected_ok(world, before, api, args, path, expr) -> bool:
  value = world.state[path]
  if isinstance(expr, str) and expr.startswith("{"):
    return value == args[expr[1:-1]]
  if isinstance(expr, str) and expr.startswith("-{"):
    return False  # only used inside ("add", ...)
  if isinstance(expr, str) and expr.startswith("@"):
    ref = expr[1:]
    for k, v in args.items():
      ref = ref.replace("{" + k + "}", str(v))
    return value == world.state[ref]
  if isinstance(expr, tuple):
    old = before[path]
    if expr[0] == "toggle":
      return value == (not old)
    if expr[0] == "next":
      return value != old
    delta = world._evaluate(expr[1], args, path, None)  # "{arg}" or "-{arg}"
    low, high = bounds(SCHEMA.leaves[path].prop, world.temperature_unit)  # in the unit the value is stored in
    if (delta > 0 and old >= high) or (delta < 0 and old <= low):  # already at the bound it moves towards
      return value == old
    # moves the declared way, and no further than its bound
    return ((value - old) * delta > 0 and low <= value <= high
            and (abs(value - (old + delta)) < 1e-9 or value in (low, high)))
  return value == expr


@pytest.mark.parametrize("name", ACTION_APIS)
def test_every_api_changes_state_by_its_declaration_and_refuses_bad_arguments(name):
  api = SCHEMA.apis[name]
  world, intent = _prepared(name)
  before = dict(world.state)
  result = world.call(intent.name, intent.arguments)
  changed = diff(before, world.state)
  assert changed, f"{name}{intent.arguments} changed nothing"
  assert {c.path for c in net_changes(result.changes)} == set(changed)  # the report says what happened
  for template, expr in api.writes:
    for path in world._expand_path(template, intent.arguments):
      assert _expected_ok(world, before, api, intent.arguments, path, expr), (name, path, world.state[path])
      prop = SCHEMA.leaves[path].prop
      if prop.is_active(world.state[path]):  # side effects of an active value hold afterwards
        for target, value in prop.implies:
          target = target.replace("{zone}", SCHEMA.leaves[path].zone or "")
          if not any(t == target for t, _ in api.writes):
            assert world.state[target] == value, (name, path, target)
  assert world.violations() == []

  # every argument with a value it cannot take: refused, state unchanged, the argument named
  state = dict(world.state)
  for p in api.params:
    bad_values = ["no_such_value"] if p.kind in ("zone", "enum") else ["yes"] if p.kind == "bool" else []
    if p.kind in ("int", "float"):
      high = SCHEMA.props[p.ref].high if p.ref else p.high
      bad_values = [high * 2 + 200, "ten"]
    if p.kind == "bool" or (p.ref and SCHEMA.props[p.ref].kind == "bool"):
      bad_values = ["yes", 1]
    for bad in bad_values:
      with pytest.raises(ArgumentError, match=p.name):
        world.call(name, {**intent.arguments, p.name: bad})
      assert world.state == state
  with pytest.raises(ArgumentError, match="unknown argument"):
    world.call(name, {**intent.arguments, "bogus": 1})
  if api.params:
    with pytest.raises(ArgumentError, match="missing argument"):
      world.call(name, {})
  assert world.state == state


def test_requirements_cascades_and_shared_environment():
  world = VehicleWorld()
  world.call("seat_set_heater", {"seat": "driver", "level": 2})
  world.call("seat_set_ventilation", {"seat": "driver", "level": 1})  # heater and ventilation exclude each other
  assert world.state["seat.heater_level.driver"] == 0 and world.state["seat.ventilation_level.driver"] == 1
  world.call("air_conditioner_set_temperature", {"zone": "driver", "temperature": 24})
  assert world.state["air_conditioner.power"] is True  # setting a temperature turns the climate on
  world.call("vehicle_stop_engine")  # engine off: everything that needs it turns off
  assert world.state["seat.ventilation_level.driver"] == 0 and world.state["air_conditioner.power"] is False
  state = dict(world.state)
  with pytest.raises(RequirementError, match="vehicle.engine_on = true"):
    world.call("seat_set_heater", {"seat": "driver", "level": 2})
  with pytest.raises(RequirementError, match="air_conditioner.power"):
    world.call("air_conditioner_set_fan_speed", {"speed": 5})
  assert world.state == state  # a refused call changes nothing
  # the sound channel: one source at a time
  world.call("music_play")
  world.call("radio_play")
  assert world.state["music.playing"] is False and world.state["environment.sound_channel"] == "radio"
  world.call("phone_set_call_volume", {"volume": 12})
  assert world.state["radio.playing"] is False and world.state["environment.volume"] == 12
  # the temperature unit converts every temperature and changes what is valid
  world.call("vehicle_start_engine")
  world.call("air_conditioner_set_temperature", {"zone": "all", "temperature": 22})
  world.call("environment_set_temperature_unit", {"unit": "fahrenheit"})
  assert world.state["air_conditioner.temperature.second_row"] == 72
  with pytest.raises(ArgumentError, match="61..90"):
    world.call("air_conditioner_set_temperature", {"zone": "driver", "temperature": 22})
  with pytest.raises(UnknownApiError, match="seat_set_heater"):
    world.call("seat_set_heaters", {})


def test_status_apis_return_the_module_state():
  world = VehicleWorld()
  out = world.call("seat_get_status")
  assert out.output == world.tree(["seat"])["seat"] and out.changes == []


# ---- SFC: the patch is validated data, never code ---------------------------------------------------------

def test_patch_rejects_bad_types_ranges_unknown_paths_and_read_only_with_clear_messages():
  world = VehicleWorld()
  state = dict(world.state)
  result = world.apply_patch({
      "seat": {"heater_level": {"driver": "high", "passenger": 7, "pilot": 1}, "occupied": {"driver": False}},
      "music.playing": "yes", "air_conditioner.mode": "arctic", "sunroof": {"open": 1}, "spaceship.warp": 9,
      "window.open_percent": 50})
  text = "\n".join(result.errors)
  assert "seat.heater_level.driver: expected an integer, got 'high'; it takes 0..3" in text
  assert "seat.heater_level.passenger: 7 is out of range" in text
  assert "unknown key 'pilot' of seat.heater_level" in text
  assert "seat.occupied.driver is read-only" in text
  assert "music.playing: expected true or false" in text
  assert "'arctic' is not one of" in text
  assert "Did you mean sunroof.open_percent?" in text
  assert "unknown module 'spaceship'" in text
  assert "window.open_percent has one value per key" in text
  assert len(result.errors) == 9 and world.state == state and result.applied == []
  assert "not selected" in world.apply_patch({"seat.heater_level.driver": 1}, modules=["hud"]).errors[0]
  assert world.apply_patch("turn it on").errors and world.apply_patch([{"op": "remove", "path": "/x"}]).errors


def test_numbers_no_float_holds_and_deep_patches_are_refused_not_crashes():
  """Review finding: a 400-digit integer for a float property (radio.frequency) or argument (radio_tune) raised
  OverflowError from math.isfinite; 1e308 with a step overflowed in round()."""
  big = int("9" * 400)
  for value in (big, -big, 1e308, float("inf"), float("nan")):
    with pytest.raises(ValueError, match=r"is out of range \(too large for a number\)|expected a finite number"):
      coerce("float", value, step=0.1)
  world = VehicleWorld()
  state = dict(world.state)
  for value, shown in ((big, "an integer of 400 digits"), (1e308, "1e+308")):
    result = world.apply_patch({"radio.frequency": value, "air_conditioner.temperature.driver": value})
    assert len(result.errors) == 2 and all("is out of range" in e for e in result.errors)
    assert f"radio.frequency: {shown} is out of range" in result.errors[0]
  with pytest.raises(ArgumentError, match="frequency: an integer of 400 digits is out of range"):
    world.call("radio_tune", {"frequency": big})
  deep = 1
  for _ in range(5000):  # deeper than Python's recursion limit: refused as an unknown path
    deep = {"a": deep}
  assert "unknown module 'a'" in world.apply_patch(deep).errors[0]
  assert world.state == state


def test_patch_is_a_target_state_with_the_same_device_logic():
  world = VehicleWorld()
  world.call("vehicle_stop_engine")
  # order does not matter: the heater waits for the engine named later in the same patch
  result = world.apply_patch({"seat": {"heater_level": {"driver": 3}}, "vehicle": {"engine_on": True}})
  assert result.errors == [] and world.state["seat.heater_level.driver"] == 3
  # a requirement nobody meets is reported, the rest applies
  result = world.apply_patch({"trunk.open": True, "vehicle.gear": "drive", "hud.power": True})
  assert world.state["hud.power"] is True and world.state["vehicle.gear"] == "drive"
  assert world.state["trunk.open"] is False and "vehicle.gear = 'park'" in result.errors[0]
  # units are read first; side effects do not overwrite named values; other shapes are accepted
  result = world.apply_patch([{"op": "replace", "path": "/environment/temperature_unit", "value": "fahrenheit"},
                              {"op": "replace", "path": "/fridge/temperature", "value": 40}])
  assert result.errors == [] and world.state["fridge.temperature"] == 40 and world.state["fridge.power"] is True
  result = world.apply_patch({"air_conditioner.temperature.driver": {"value": 70}, "air_conditioner.power": False})
  assert result.errors == [] and world.state["air_conditioner.power"] is False
  assert world.state["air_conditioner.temperature.driver"] == 70
  assert world.violations() == []


def test_patch_reaches_what_the_api_calls_reach():
  """For 300 generated turns, the oracle's patch of gold values reproduces the gold state exactly."""
  config = tasks.tasks_config()
  for task_id in range(0, 600, 2):
    task = tasks.make_task(task_id, config)
    for i, turn in enumerate(task.turns):
      world = VehicleWorld(task.state_before(i))
      for call in turn.calls:
        world.call(call.name, call.arguments)
      assert world.state == task.state_after(i)
      world = VehicleWorld(task.state_before(i))
      assert world.apply_patch(turn.patch, modules=turn.patch_modules).errors == []
      assert world.state == task.state_after(i)
