"""The VehicleWorld task set (arXiv 2509.06736, Sec. 5 "Experiments": tasks in four splits, Multimedia, Touch
control, Car control and Lights, single- and multi-turn; gold final states come from executing reference calls).

A task is built from its id alone: the split is `SPLITS[task_id % 4]`, everything else comes from
`random.Random(f"vehicle-{seed}-{task_id}")`. Building one:
1. a random but consistent initial car (engine, gear, who is speaking, units, playing source, readings, and a few
   dozen settings changed through the world's own writes, so every requirement holds);
2. per turn, 1-3 user intents: an action API of the split with arguments that change something, rendered
   from the API's request template ("set my seat heater to level 2"). When the car refuses the call because a
   requirement is unmet (the heater needs the engine), the calls that meet it are planned from the catalog and
   put first in the gold sequence: the user does not say them, as in the paper's implicit dependencies;
3. the gold state after each turn, by executing the gold calls;
4. the oracle's SFC patch (the gold values of the properties the gold calls write) and its module selection,
   checked by applying the patch to the turn's start state: a turn is kept only if the patch reaches the gold
   state and needs at most `max_modules` modules, so a perfect SFC agent can solve every task.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from typing import Any, Iterable, Sequence

import ml_collections

from agents.vehicle import logic
from agents.vehicle.catalog import load_schema
from agents.vehicle.catalog.keys import SEATS, phrase
from agents.vehicle.schema import SPLITS, Api, Cond, Param, Schema, bounds
from agents.vehicle.world import RequirementError, VehicleWorld, WorldError, _Txn, diff
from core.config import section


@dataclasses.dataclass(frozen=True)
class Call:
  name: str
  arguments: dict[str, Any]

  def to_json(self) -> dict[str, Any]:
    return {"name": self.name, "arguments": dict(self.arguments)}


@dataclasses.dataclass
class Turn:
  instruction: str
  calls: list[Call]  # gold sequence, prerequisites included
  said: list[Call]  # the calls the user asked for (no prerequisites)
  changes: dict[str, Any]  # path -> gold value after the turn, for every leaf that changed in it
  patch: dict[str, Any]  # the oracle's SFC patch (path -> value)
  patch_modules: list[str]  # modules the SFC oracle selects
  api_modules: list[str]  # modules whose APIs the gold calls use (FC+SFC oracle selection)
  # path -> (move, low, high) for each property the user asked to change *by* an amount ("up by 10"), with the
  # bounds it stops at: from another start than the gold one, such a request's target is start + move, clamped
  relative: dict[str, tuple[float, float, float]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Task:
  task_id: int
  split: str
  initial: dict[str, Any]
  turns: list[Turn]

  def state_before(self, turn: int) -> dict[str, Any]:
    state = dict(self.initial)
    for t in self.turns[:turn]:
      state.update(t.changes)
    return state

  def state_after(self, turn: int) -> dict[str, Any]:
    return self.state_before(turn + 1)

  @property
  def multi_turn(self) -> bool:
    return len(self.turns) > 1


def tasks_config(**overrides: Any) -> ml_collections.ConfigDict:
  """Numbers of the task generator."""
  return section("tasks", dict(seed=0, multi_turn_prob=0.35, max_turns=3, max_intents=3, max_modules=6,
                               random_settings=40, all_keys_prob=0.15, my_seat_prob=0.5), overrides)


class GenerationError(RuntimeError):
  """A task could not be built within the attempt budget (a catalog without feasible intents for a split)."""


def split_of(task_id: int) -> str:
  return SPLITS[task_id % len(SPLITS)]


@functools.lru_cache(maxsize=256)
def _cached_task(task_id: int, frozen_config: tuple) -> Task:
  return _build_task(task_id, ml_collections.ConfigDict(dict(frozen_config)))


def make_task(task_id: int, config: ml_collections.ConfigDict | None = None) -> Task:
  """Task `task_id` (deterministic given the config)."""
  config = config or tasks_config()
  return _cached_task(int(task_id), tuple(sorted(config.to_dict().items())))


def statistics(task_ids: Iterable[int], config: ml_collections.ConfigDict | None = None) -> dict[str, int]:
  """Size of a task set (the figures agents/vehicle/README.md quotes for ids 0-999): tasks, multi-turn tasks,
  turns, gold calls, turns whose gold calls include prerequisites the user did not say, gold property changes."""
  built = [_build_task(int(i), config or tasks_config()) for i in task_ids]
  turns = [turn for task in built for turn in task.turns]
  return {"tasks": len(built), "multi_turn_tasks": sum(t.multi_turn for t in built), "turns": len(turns),
          "gold_calls": sum(len(t.calls) for t in turns),
          "turns_with_unsaid_prerequisites": sum(len(t.calls) > len(t.said) for t in turns),
          "gold_changes": sum(len(t.changes) for t in turns)}


def _build_task(task_id: int, config: ml_collections.ConfigDict) -> Task:
  rng = random.Random(f"vehicle-{config.seed}-{task_id}")
  schema = load_schema()
  split = split_of(task_id)
  world = initial_world(rng, schema, config)
  initial = dict(world.state)
  num_turns = rng.randint(2, config.max_turns) if rng.random() < config.multi_turn_prob else 1
  turns = []
  for _ in range(num_turns):
    max_intents = config.max_intents if num_turns == 1 else min(2, config.max_intents)
    turn = _make_turn(rng, world, schema, split, rng.randint(1, max_intents), config)
    turns.append(turn)
    world.state.update(turn.changes)
  return Task(task_id, split, initial, turns)


# ---------------------------------------------------------------------------------------------------------------
# Initial state


def initial_world(rng: random.Random, schema: Schema, config: ml_collections.ConfigDict) -> VehicleWorld:
  """A random car in a consistent state: readings set directly, settings through the device logic."""
  world = VehicleWorld(schema=schema)
  txn = _Txn()
  s = world.state
  world.set_raw("environment.speaker", rng.choice(("driver",) * 4 + SEATS), txn, "init")
  world.set_raw("environment.outside_temperature", rng.randint(-10, 35), txn, "init")
  world.set_raw("vehicle.fuel_level", rng.randint(8, 100), txn, "init")
  world.set_raw("vehicle.battery_level", rng.randint(10, 100), txn, "init")
  world.set_raw("vehicle.odometer", rng.randint(500, 150000), txn, "init")
  world.set_raw("environment.time", f"{rng.randint(5, 23):02d}:{rng.choice((0, 15, 30, 45)):02d}", txn, "init")
  for seat in SEATS:
    occupied = seat == "driver" or seat == s["environment.speaker"] or rng.random() < 0.3
    world.set_raw(f"seat.occupied.{seat}", occupied, txn, "init")
    world.set_raw(f"seat.belt_fastened.{seat}", occupied and rng.random() < 0.9, txn, "init")
  for path, leaf in schema.leaves.items():
    if leaf.prop.readonly and leaf.prop.module in ("diagnostics", "vehicle") and leaf.prop.kind in ("int", "float"):
      if path.startswith("vehicle.tire_pressure."):
        world.set_raw(path, round(rng.uniform(2.0, 2.8), 1), txn, "init")
      elif path.startswith("vehicle.tire_temperature.") or path.startswith("diagnostics.coolant"):
        continue
      elif path.startswith(("diagnostics.fluid_level.", "diagnostics.oil_life")):
        world.set_raw(path, rng.randint(15, 100), txn, "init")
  for name in ("engine", "abs", "airbag", "brakes", "battery", "tire_pressure", "lamp_failure"):
    world.set_raw(f"diagnostics.warning.{name}", rng.random() < 0.05, txn, "init")

  def attempt(path: str, value: Any) -> None:
    snapshot = dict(world.state)
    try:
      world.write(path, value, _Txn(), "init")
    except WorldError:
      world.state = snapshot

  attempt("vehicle.engine_on", rng.random() < 0.8)
  if world.state["vehicle.engine_on"]:
    gear = rng.choice(("park",) * 6 + ("drive",) * 3 + ("reverse", "neutral"))
    attempt("vehicle.gear", gear)
    if gear == "drive":
      world.set_raw("vehicle.speed", rng.randint(20, 120), txn, "init")
  if rng.random() < 0.2:
    attempt("environment.temperature_unit", "fahrenheit")
  if rng.random() < 0.25:
    attempt("environment.distance_unit", "mile")
  attempt("environment.language", rng.choice(("english",) * 6 + ("chinese", "german", "french", "spanish",
                                                                   "japanese")))
  attempt("environment.volume", rng.randint(10, 80))
  source = rng.choice(("none", "music", "music", "radio", "navigation", "video"))
  if source in ("music", "radio", "video"):
    attempt(f"{source}.playing", True)
  elif source == "navigation":
    attempt("navigation.destination", rng.choice(schema.props["navigation.destination"].choices[1:]))
    attempt("navigation.guidance_active", True)
    attempt("environment.sound_channel", "navigation")
  writable = [p for p, leaf in schema.leaves.items() if not leaf.prop.readonly]
  for path in rng.sample(writable, config.random_settings):
    attempt(path, random_value(rng, world, path))
  logic.derive(world, txn)
  return world


def random_value(rng: random.Random, world: VehicleWorld, path: str) -> Any:
  prop = world.schema.leaves[path].prop
  if prop.kind == "bool":
    return rng.random() < 0.5
  if prop.kind == "enum":
    return rng.choice(prop.choices)
  low, high = bounds(prop, world.temperature_unit)
  if prop.kind == "int":
    return rng.randint(int(low), int(high))
  steps = int(round((high - low) / prop.step))
  return round(low + rng.randint(0, steps) * prop.step, 3)


# ---------------------------------------------------------------------------------------------------------------
# Turns


def _split_apis(schema: Schema, split: str) -> dict[str, list[Api]]:
  out: dict[str, list[Api]] = {}
  for module in schema.modules.values():
    if module.split == split:
      apis = [a for a in module.apis if not a.query]
      if apis:
        out[module.name] = apis
  return out


def relative_requests(schema: Schema, world: VehicleWorld, said: list[Call], changes: dict[str, Any]
                      ) -> dict[str, tuple[float, float, float]]:
  """{path: (move, low, high)} of the properties that the user's requests change by an amount (an API write
  `("add", "{arg}")` or `("add", "-{arg}")`), among those the turn changed; bounds in the unit `world` stores."""
  out = {}
  for call in said:
    for template, expr in schema.apis[call.name].writes:
      if not (isinstance(expr, tuple) and expr[0] == "add"):
        continue
      for path in world._expand_path(template, call.arguments):
        if path in changes:
          move = world._evaluate(expr[1], call.arguments, path, None)  # "{arg}" or "-{arg}": no transaction
          low, high = bounds(schema.leaves[path].prop, world.temperature_unit)
          out[path] = (float(move), float(low), float(high))
  return out


def targets_from(schema: Schema, turn: Turn, start: dict[str, Any]) -> dict[str, Any] | None:
  """What the turn's requests mean from the agent's own start: the turn's gold calls (prerequisites included)
  run on `start`, read at the properties the turn changes. From the gold start this is the gold state after the
  turn; from another start a request keeps its kind ("skip to the next song" is the song after the agent's, "turn
  the volume up by 10" adds 10 to the agent's volume, "set it to 50" is 50). None when the car refuses a call from
  that start (a prerequisite the gold start had): the caller then falls back to `Turn.relative` and gold values."""
  world = VehicleWorld(start, schema)
  try:
    for call in turn.calls:
      world.call(call.name, call.arguments)
  except WorldError:
    return None
  return {path: world.state[path] for path in turn.changes}


def _make_turn(rng: random.Random, world: VehicleWorld, schema: Schema, split: str, num_intents: int,
               config: ml_collections.ConfigDict) -> Turn:
  by_module = _split_apis(schema, split)
  modules = sorted(by_module)
  for _ in range(60):
    trial = world.copy()
    before = dict(trial.state)
    calls: list[Call] = []
    said: list[Call] = []
    phrases: list[str] = []
    touched: set[str] = set()
    for _ in range(num_intents):
      for _ in range(30):
        api = rng.choice(by_module[rng.choice(modules)])
        intent = _sample_intent(rng, trial, api, config)
        if intent is None:
          continue
        result = _execute_with_prerequisites(trial, intent, rng)
        if result is None:
          continue
        new_world, sequence, changed = result
        own = set(direct_paths(schema, intent)) & set(diff(trial.state, new_world.state))
        if not own or set(changed) & touched:
          continue
        trial = new_world
        calls.extend(sequence)
        said.append(intent)
        touched |= set(changed)
        phrases.append(render_request(api, intent.arguments, trial_speaker(before), rng, config))
        break
    if not said:
      continue
    changes = {p: v for p, (_, v) in diff(before, trial.state).items()}
    patch, patch_modules = _oracle_patch(schema, before, trial.state, calls)
    if patch is None:  # a catalog inconsistency (FC reaches a state SFC cannot), never a task to skip quietly
      raise GenerationError(f"no SFC patch reproduces the gold state of the calls {[c.name for c in calls]} "
                            f"({sorted(changes)}): the catalog's APIs and its patch rules disagree.")
    if len(patch_modules) > config.max_modules:
      continue
    api_modules = sorted({schema.apis[c.name].module for c in calls} - {"environment"})
    if len(api_modules) > config.max_modules:
      continue
    return Turn(_join(phrases, rng), calls, said, changes, patch, patch_modules, api_modules,
                relative_requests(schema, trial, said, changes))
  raise GenerationError(f"no feasible turn found for split {split!r} after 60 tries.")


def trial_speaker(state: dict[str, Any]) -> str:
  return state["environment.speaker"]


def _sample_intent(rng: random.Random, world: VehicleWorld, api: Api, config) -> Call | None:
  args: dict[str, Any] = {}
  for p in api.params:
    args[p.name] = _sample_argument(rng, world, api, p, args, config)
  return Call(api.name, args)


def _sample_argument(rng: random.Random, world: VehicleWorld, api: Api, p: Param, args: dict[str, Any],
                     config) -> Any:
  if p.kind == "zone":
    if p.allow_all and rng.random() < config.all_keys_prob:
      return "all"
    speaker = world.state["environment.speaker"]
    if speaker in p.choices and rng.random() < config.my_seat_prob:
      return speaker
    return rng.choice(p.choices)
  if p.kind == "bool":
    return rng.random() < 0.5
  if p.ref is not None:
    prop = world.schema.props[p.ref]
    target = _target_path(api, p, args)
    current = world.state.get(target) if target else None
    if prop.kind == "enum":
      options = [c for c in prop.choices if c != current] or list(prop.choices)
      return rng.choice(options)
    low, high = bounds(prop, world.temperature_unit)
    if prop.kind == "int":
      span = int(high - low)
      grid = 5 if span >= 40 else 1  # people ask for round numbers on wide scales
      values = [v for v in range(int(low), int(high) + 1) if (v - int(low)) % grid == 0 or v == high]
      options = [v for v in values if v != current] or values
      return rng.choice(options)
    steps = int(round((high - low) / prop.step))
    return round(low + rng.randint(0, steps) * prop.step, 3)
  if p.kind == "int":
    high = int(p.high)
    if high >= 20:
      return rng.choice([v for v in (5, 10, 15, 20) if v <= high])
    return rng.randint(int(p.low), min(high, int(p.low) + 3))
  if p.kind == "float":
    return round(rng.uniform(p.low, p.high), 1)
  return rng.choice(p.choices)


def _target_path(api: Api, p: Param, args: dict[str, Any]) -> str | None:
  """The leaf an argument is written to, when that is known yet (to pick a value that changes it)."""
  for template, expr in api.writes:
    if expr == "{" + p.name + "}":
      parts = template.split(".")
      if len(parts) == 3 and parts[2].startswith("{"):
        key = args.get(parts[2][1:-1])
        if key is None or key == "all":
          return None
        return f"{parts[0]}.{parts[1]}.{key}"
      return template
  return None


def _execute_with_prerequisites(world: VehicleWorld, intent: Call, rng: random.Random,
                                depth: int = 0) -> tuple[VehicleWorld, list[Call], list[str]] | None:
  """Runs `intent` on a copy; if a requirement blocks it, plans the calls that meet it first (recursively).
  Returns (world after, gold calls, changed paths) or None when infeasible or a no-op."""
  trial = world.copy()
  try:
    trial.call(intent.name, intent.arguments)
  except RequirementError as e:
    if depth >= 3 or e.cond is None:
      return None
    fix = _fixer(world, e.cond)
    if fix is None:
      return None
    first = _execute_with_prerequisites(world, fix, rng, depth + 1)
    if first is None:
      return None
    rest = _execute_with_prerequisites(first[0], intent, rng, depth + 1)
    if rest is None:
      return None
    changed = sorted(set(diff(world.state, rest[0].state)))
    return rest[0], first[1] + rest[1], changed
  except WorldError:
    return None
  changed = sorted(diff(world.state, trial.state))
  if not changed:
    return None
  return trial, [intent], changed


def _fixer(world: VehicleWorld, cond: Cond) -> Call | None:
  """An API call whose direct write makes `cond` hold: fewest writes first, then by name (deterministic)."""
  best: tuple[int, str, Call] | None = None
  prop_path = ".".join(cond.path.split(".")[:2])
  key = cond.path.split(".")[2] if cond.path.count(".") == 2 else None
  for api in world.schema.apis.values():
    if api.query:
      continue
    for template, expr in api.writes:
      parts = template.split(".")
      if ".".join(parts[:2]) != prop_path:
        continue
      args: dict[str, Any] = {}
      if len(parts) == 3:
        if parts[2].startswith("{"):
          args[parts[2][1:-1]] = key
        elif parts[2] != key:
          continue
      value = _satisfying_value(world, api, expr, cond, args)
      if value is None:
        continue
      args.update(value)
      if any(p.name not in args for p in api.params):
        continue
      candidate = (len(api.writes), api.name, Call(api.name, args))
      if best is None or candidate[:2] < best[:2]:
        best = candidate
  return best[2] if best else None


def _satisfying_value(world: VehicleWorld, api: Api, expr: Any, cond: Cond, args: dict[str, Any]
                      ) -> dict[str, Any] | None:
  if isinstance(expr, str) and expr.startswith("{") and expr.endswith("}"):
    name = expr[1:-1]
    param = next(p for p in api.params if p.name == name)
    if param.kind == "bool":
      domain: Sequence[Any] = (True, False)
    elif param.ref is not None and world.schema.props[param.ref].kind in ("enum", "bool"):
      prop = world.schema.props[param.ref]
      domain = prop.choices if prop.kind == "enum" else (True, False)
    elif param.kind in ("enum", "zone"):
      domain = param.choices
    else:
      return None
    for v in domain:
      if cond.holds(v):
        return {name: v}
    return None
  if isinstance(expr, (bool, int, float, str)) and not (isinstance(expr, str) and expr[:1] in "{@-"):
    return {} if cond.holds(expr) else None
  return None


def _oracle_patch(schema: Schema, before: dict[str, Any], after: dict[str, Any], calls: list[Call]
                  ) -> tuple[dict[str, Any] | None, list[str]]:
  """The gold values of the leaves the gold calls write directly; falls back to every changed writable leaf;
  None if neither reaches the gold state (a catalog inconsistency between FC and SFC: generation stops on it)."""
  direct = [p for call in calls for p in direct_paths(schema, call)]
  changed = diff(before, after)
  candidates = [
      {p: after[p] for p in dict.fromkeys(direct) if p in changed},
      {p: v for p, (_, v) in changed.items() if not schema.leaves[p].prop.readonly},
  ]
  for patch in candidates:
    world = VehicleWorld(before, schema)
    world.apply_patch(dict(patch))
    if world.state == after:
      modules = sorted({schema.leaves[p].prop.module for p in patch} - {"environment"})
      return patch, modules
  return None, []


def direct_paths(schema: Schema, call: Call) -> list[str]:
  """The leaves a call writes itself (not through side effects)."""
  api = schema.apis[call.name]
  out: list[str] = []
  for template, _ in api.writes:
    parts = template.split(".")
    if len(parts) == 3 and parts[2].startswith("{"):
      key = call.arguments[parts[2][1:-1]]
      out.extend(schema.props[f"{parts[0]}.{parts[1]}"].leaf_paths() if key == "all" else
                 [f"{parts[0]}.{parts[1]}.{key}"])
    else:
      out.append(template)
  if api.compute in ("radio_next_station", "radio_previous_station"):
    out.append("radio.frequency")
  return out


# ---------------------------------------------------------------------------------------------------------------
# Requests in words

_PLACEHOLDER = re.compile(r"\{(\w+)(?:\|([^|}]*)\|([^}]*))?\}")
_OPENERS = ("", "", "", "please ", "could you ", "can you ", "I'd like you to ", "hey, ")


def render_request(api: Api, args: dict[str, Any], speaker: str, rng: random.Random, config=None) -> str:
  """The user's words for one call, from the API's `say` template; a seat that is the speaker's own becomes
  "my" ("set my seat heater to level 2")."""
  template = api.say
  for p in api.params:
    if p.kind == "zone" and f"the {{{p.name}}}" in template:
      if args.get(p.name) == "all":
        template = template.replace(f"the {{{p.name}}}", "every", 1)
      elif args.get(p.name) == speaker and speaker in SEATS:
        template = template.replace(f"the {{{p.name}}}", "my", 1)

  def fill(m: re.Match) -> str:
    name, yes, no = m.group(1), m.group(2), m.group(3)
    value = args[name]
    if yes is not None:
      return yes if value else no
    if isinstance(value, bool):
      return "on" if value else "off"
    if isinstance(value, float):
      return f"{value:g}"
    if isinstance(value, str):
      return phrase(value)
    return str(value)

  return _PLACEHOLDER.sub(fill, template)


def _join(phrases: list[str], rng: random.Random) -> str:
  opener = rng.choice(_OPENERS)
  if len(phrases) == 1:
    text = opener + phrases[0]
  elif len(phrases) == 2:
    text = opener + f"{phrases[0]} and {phrases[1]}"
  else:
    text = opener + ", ".join(phrases[:-1]) + f", and {phrases[-1]}"
  text = text[0].upper() + text[1:]
  return text + ("?" if opener.startswith(("could", "can")) else ".")
