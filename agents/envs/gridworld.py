"""A BabyAI-style gridworld with keys and locked doors, in text (Chevalier-Boisvert et al. 2019, "BabyAI", the
KeyCorridor / UnlockToUnlock levels; AgentGym's text wrapper with high-level actions, used by AgentGym-RL).

Layout: `num_rooms` square rooms in a row, `room_size` x `room_size` cells each, separated by walls with one door
per wall. A door is closed or locked; a locked door opens only while the agent carries the key of its colour, and
that key lies in a room before the door. The goal object (a ball or a box) is in the last room, so every door
must be passed. Other objects are distractors. Tasks are drawn from `task_id` alone (`random.Random`), so a task
is the same on every machine.

The agent sees the objects of the room it stands in (and the doors in that room's walls), described relative to
where it faces: "2 steps forward and 1 step left". Actions (text, case-insensitive):
  turn left | turn right | move forward
  go to <color> <object>          walk next to a visible object, facing it (shortest path)
  pick up <color> <object>        the object in front (not doors); the agent can carry several
  drop <color> <object>           onto the empty cell in front
  open <color> door               the door in front; a locked one needs its key
  go through <color> door         walk through a visible open door into the next room
  check available actions | look
Partial progress (`info["progress"]`): the share of sub-goals reached (each needed key picked up, each door
opened, each room entered, the goal).
"""

from __future__ import annotations

import collections
import dataclasses
import random
import re
from typing import Any

import ml_collections

from agents.envs.base import InvalidAction, PlanOracle, TextEnv, check_settings, int_at_least, integers_at_least
from core.config import section

COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
OBJECT_TYPES = ("ball", "box", "key")
GOAL_TYPES = ("ball", "box")
# Facing directions clockwise from east; y grows downwards, as in BabyAI.
DIRECTIONS = ((1, 0), (0, 1), (-1, 0), (0, -1))
DIRECTION_NAMES = ("east", "south", "west", "north")


def gridworld_config(**overrides: Any) -> ml_collections.ConfigDict:
  """Every number of the gridworld: sizes, how often doors are locked, distractors, the step budget."""
  return section("gridworld", dict(room_size=4, min_rooms=1, max_rooms=3, locked_probability=0.6,
                                   num_distractors=3, max_steps=40), overrides)


CHECKED_DRAWS = 20


def validate_gridworld_config(config: ml_collections.ConfigDict) -> None:
  rooms_ok = (int_at_least(config.min_rooms, 1) and int_at_least(config.max_rooms, 1)
              and config.min_rooms <= config.max_rooms <= len(COLORS) + 1)
  check_settings("gridworld", [
      # a room of 1 cell cannot hold the agent and the goal
      *integers_at_least(config, {"room_size": 2, "num_distractors": 0, "max_steps": 1}),
      (rooms_ok, f"1 <= min_rooms <= max_rooms <= {len(COLORS) + 1} (one door colour of {len(COLORS)} between each "
                 f"two rooms), got {config.min_rooms!r} and {config.max_rooms!r}"),
      (isinstance(config.locked_probability, (int, float)) and 0 <= config.locked_probability <= 1,
       f"locked_probability must lie in [0, 1], got {config.locked_probability!r}")])


def check_gridworld_config(config: ml_collections.ConfigDict) -> None:
  """`validate_gridworld_config`, then whether the rooms hold their objects, which depends on the draws: the first
  tasks are drawn (a config that fails a reset only now and then is likely, not certain, to be caught)."""
  validate_gridworld_config(config)
  for task_id in range(CHECKED_DRAWS):
    try:
      generate_task(task_id, config)
    except RuntimeError as e:
      raise ValueError(f"bad gridworld env_config: task {task_id} cannot be drawn: {e}") from None


@dataclasses.dataclass
class Door:
  color: str
  locked: bool
  open: bool = False


@dataclasses.dataclass(frozen=True)
class Task:
  """A whole gridworld task: everything needed to rebuild the initial state, and its plan."""
  width: int
  height: int
  room_size: int
  num_rooms: int
  objects: dict[tuple[int, int], tuple[str, str]]  # position -> (color, type)
  doors: dict[tuple[int, int], tuple[str, bool]]  # position -> (color, locked), ordered left to right
  agent: tuple[int, int]
  direction: int
  goal_kind: str  # "go to" or "pick up"
  goal: tuple[str, str]

  @property
  def mission(self) -> str:
    return f"{self.goal_kind} the {self.goal[0]} {self.goal[1]}"


def _wall_x(room: int, room_size: int) -> int:
  return room * (room_size + 1)


def generate_task(task_id: int, config: ml_collections.ConfigDict) -> Task:
  """The task for `task_id`: a fixed function of the id and the config.

  Random placement can wall a key or a doorway in with objects; such a draw is replaced by the next one (the
  scripted plan is run on it), so every task is solvable and still a function of the id alone. `max_steps`
  plays no part: the plan runs to its end whatever the episode's step budget.
  """
  for attempt in range(100):
    task = _draw_task(random.Random(f"gridworld-{task_id}-{attempt}"), config)
    plan = oracle_plan(task)
    env = Gridworld(config)
    env.max_steps = len(plan)  # solvability is a property of the layout, not of the step budget
    env.load(task)
    for action in plan:
      if env.step(action).info["success"]:
        return task
  raise RuntimeError(f"no solvable gridworld layout for task {task_id} in 100 draws; the config "
                     f"{dict(config)} packs too many objects into its rooms.")


def _draw_task(rng: random.Random, config: ml_collections.ConfigDict) -> Task:
  size = config.room_size
  num_rooms = rng.randint(config.min_rooms, config.max_rooms)
  width, height = num_rooms * (size + 1) + 1, size + 2
  door_colors = rng.sample(COLORS, num_rooms - 1)
  doors, keep_free = {}, set()
  for d, color in enumerate(door_colors):
    x, y = _wall_x(d + 1, size), rng.randint(1, size)
    doors[(x, y)] = (color, rng.random() < config.locked_probability)
    keep_free |= {(x - 1, y), (x + 1, y)}  # both sides of a door stay walkable

  def taken(cell: tuple[int, int]) -> bool:
    return cell in objects or cell in keep_free or cell == agent

  def free_cell(room: int) -> tuple[int, int]:
    x0 = _wall_x(room, size)
    if all(taken((x0 + dx, y)) for dx in range(1, size + 1) for y in range(1, size + 1)):
      raise RuntimeError(f"room {room} has no free cell left: the config {dict(config)} packs more objects "
                         "into its rooms than they hold. Fix: raise room_size or lower num_distractors.")
    while True:  # terminates: a free cell exists (the check above draws nothing, so tasks stay as they were)
      cell = (x0 + rng.randint(1, size), rng.randint(1, size))
      if not taken(cell):
        return cell

  objects: dict[tuple[int, int], tuple[str, str]] = {}
  agent = (-1, -1)
  agent = free_cell(0)
  used = set()
  for (x, _), (color, locked) in doors.items():
    if locked:  # its key lies in some room the agent reaches before this door
      objects[free_cell(rng.randint(0, x // (size + 1) - 1))] = (color, "key")
      used.add((color, "key"))
  goal = (rng.choice(COLORS), rng.choice(GOAL_TYPES))
  used.add(goal)
  objects[free_cell(num_rooms - 1)] = goal
  for _ in range(config.num_distractors):
    kind = (rng.choice(COLORS), rng.choice(OBJECT_TYPES))
    if kind in used or (kind[1] == "key" and kind[0] in door_colors):
      continue  # object names stay unique, and no spare key fits a door
    used.add(kind)
    objects[free_cell(rng.randrange(num_rooms))] = kind
  return Task(width=width, height=height, room_size=size, num_rooms=num_rooms, objects=objects, doors=doors,
              agent=agent, direction=rng.randrange(4), goal_kind=rng.choice(("go to", "pick up")), goal=goal)


def oracle_plan(task: Task) -> list[str]:
  """The scripted solution: in each room pick up the keys later doors need, then open and pass its door."""
  plan: list[str] = []
  size = task.room_size
  keys_needed = {color for color, locked in task.doors.values() if locked}
  for room in range(task.num_rooms):
    for (x, _), (color, kind) in sorted(task.objects.items()):
      if kind == "key" and color in keys_needed and x // (size + 1) == room:
        plan += [f"go to {color} key", f"pick up {color} key"]
    door = [(pos, d) for pos, d in task.doors.items() if pos[0] == _wall_x(room + 1, size)]
    if door:
      color = door[0][1][0]
      plan += [f"go to {color} door", f"open {color} door", f"go through {color} door"]
  plan.append(f"go to {task.goal[0]} {task.goal[1]}")
  if task.goal_kind == "pick up":
    plan.append(f"pick up {task.goal[0]} {task.goal[1]}")
  return plan


_OBJECT = re.compile(r"^(?:the |a )?(" + "|".join(COLORS) + r") (ball|box|key|door)$")


class Gridworld(TextEnv):
  name = "gridworld"

  def __init__(self, config: ml_collections.ConfigDict):
    validate_gridworld_config(config)
    super().__init__(config.max_steps)
    self.config = config

  def instructions(self) -> str:
    return ("You are an agent in a grid of rooms. Reach the goal given in the mission. Answer with exactly one "
            "action per turn, one of: turn left; turn right; move forward; go to <color> <object>; "
            "pick up <color> <object>; drop <color> <object>; open <color> door; go through <color> door; "
            "check available actions. Objects are balls, boxes, keys and doors. A locked door opens only while "
            "you carry the key of its color.")

  def oracle(self, task_id: int) -> PlanOracle:
    return PlanOracle(oracle_plan(generate_task(task_id, self.config)))

  # -- state -----------------------------------------------------------------------------------------------------
  def _reset(self, task_id: int) -> tuple[str, dict[str, Any]]:
    task = generate_task(task_id, self.config)
    self._load(task)
    info = {"mission": task.mission, "num_rooms": task.num_rooms,
            "locked_doors": sum(locked for _, locked in task.doors.values())}
    return f"{self.instructions()}\nMission: {task.mission}.\n{self._describe()}", info

  def load(self, task: Task) -> None:
    """Starts an episode on a given task (generate_task uses it to check a draw is solvable)."""
    self.task_id = -1
    self._steps, self._done, self._success, self._best_progress = 0, False, False, 0.0
    self._load(task)

  def _load(self, task: Task) -> None:
    self.task = task
    self.objects = dict(task.objects)
    self.doors = {pos: Door(color, locked) for pos, (color, locked) in task.doors.items()}
    self.agent, self.direction = task.agent, task.direction
    self.carrying: list[tuple[str, str]] = []
    self._rooms_entered = {0}
    self._subgoals_total = (sum(locked for _, locked in task.doors.values()) + 2 * len(task.doors) + 1)

  def _progress(self) -> float:
    keys = {color for color, locked in self.task.doors.values() if locked}
    reached = sum(1 for c in keys if (c, "key") in self.carrying or self._door_by_color(c)[1].open)
    reached += sum(d.open for d in self.doors.values()) + len(self._rooms_entered) - 1
    return reached / self._subgoals_total

  def _room_of(self, pos: tuple[int, int]) -> set[int]:
    x, _ = pos
    span = self.task.room_size + 1
    if x % span == 0:  # on a door cell: both rooms are in view
      return {x // span - 1, x // span}
    return {x // span}

  def _in_room(self, pos: tuple[int, int], rooms: set[int]) -> bool:
    span = self.task.room_size + 1
    if pos in self.doors:
      return bool({pos[0] // span - 1, pos[0] // span} & rooms)
    return pos[0] // span in rooms

  def _passable(self, pos: tuple[int, int]) -> bool:
    x, y = pos
    if not (0 < x < self.task.width - 1 and 0 < y < self.task.height - 1):
      return False
    if pos in self.doors:
      return self.doors[pos].open
    return x % (self.task.room_size + 1) != 0 and pos not in self.objects

  def _front(self) -> tuple[int, int]:
    dx, dy = DIRECTIONS[self.direction]
    return self.agent[0] + dx, self.agent[1] + dy

  def _visible(self) -> dict[tuple[str, str], tuple[int, int]]:
    rooms = self._room_of(self.agent)
    seen = {kind: pos for pos, kind in self.objects.items() if self._in_room(pos, rooms)}
    seen.update({(d.color, "door"): pos for pos, d in self.doors.items() if self._in_room(pos, rooms)})
    return seen

  def _door_by_color(self, color: str) -> tuple[tuple[int, int], Door]:
    for pos, door in self.doors.items():
      if door.color == color:
        return pos, door
    raise KeyError(color)

  # -- text ------------------------------------------------------------------------------------------------------
  def _relative(self, pos: tuple[int, int]) -> str:
    dx, dy = pos[0] - self.agent[0], pos[1] - self.agent[1]
    fx, fy = DIRECTIONS[self.direction]
    forward = dx * fx + dy * fy
    right = dx * (-fy) + dy * fx  # the facing vector turned clockwise, with y pointing down
    if forward == 1 and right == 0:
      return "right in front of you"
    parts = []
    if forward:
      parts.append(f"{abs(forward)} step{'s' * (abs(forward) != 1)} {'forward' if forward > 0 else 'behind'}")
    if right:
      parts.append(f"{abs(right)} step{'s' * (abs(right) != 1)} {'right' if right > 0 else 'left'}")
    return " and ".join(parts)

  def _describe(self) -> str:
    rooms = sorted(self._room_of(self.agent))
    where = (f"room {rooms[0] + 1} of {self.task.num_rooms}" if len(rooms) == 1
             else f"the doorway between rooms {rooms[0] + 1} and {rooms[1] + 1}")
    lines = [f"You are in {where}, facing {DIRECTION_NAMES[self.direction]}."]
    carrying = ", ".join(f"a {c} {t}" for c, t in self.carrying) or "nothing"
    lines.append(f"You carry {carrying}.")
    seen = self._visible()
    if seen:
      lines.append("You see:")
      for (color, kind), pos in sorted(seen.items(), key=lambda kv: (abs(kv[1][0] - self.agent[0]) +
                                                                       abs(kv[1][1] - self.agent[1]), kv[0])):
        state = ""
        if kind == "door":
          door = self.doors[pos]
          state = " (open)" if door.open else " (locked)" if door.locked else " (closed)"
        lines.append(f"- a {color} {kind}{state}, {self._relative(pos)}")
    else:
      lines.append("You see no objects.")
    front = self._front()
    if front in self.objects:
      ahead = "the {} {}".format(*self.objects[front])
    elif front in self.doors:
      ahead = f"the {self.doors[front].color} door"
    elif not self._passable(front):
      ahead = "a wall"
    else:
      ahead = "an empty cell"
    lines.append(f"In front of you is {ahead}.")
    return "\n".join(lines)

  def _available(self) -> list[str]:
    actions = ["turn left", "turn right"]
    if self._passable(self._front()):
      actions.append("move forward")
    for (color, kind), pos in sorted(self._visible().items()):
      if kind == "door":
        door = self.doors[pos]
        actions.append(f"go through {color} door" if door.open else f"go to {color} door")
        if not door.open and self._front() == pos:
          actions.append(f"open {color} door")
      else:
        actions.append(f"go to {color} {kind}")
        if self._front() == pos:
          actions.append(f"pick up {color} {kind}")
    actions += [f"drop {c} {t}" for c, t in self.carrying]
    return actions

  # -- actions ---------------------------------------------------------------------------------------------------
  def _object(self, text: str) -> tuple[str, str]:
    match = _OBJECT.match(text)
    if match is None:
      raise InvalidAction(f"{text!r} is not an object. Name one as <color> <object>, e.g. 'red key'; colors: "
                          f"{', '.join(COLORS)}; objects: ball, box, key, door.")
    return match.group(1), match.group(2)

  def _step(self, action: str) -> tuple[str, bool]:
    if action in ("turn left", "left"):
      self.direction = (self.direction - 1) % 4
      message = "You turn left."
    elif action in ("turn right", "right"):
      self.direction = (self.direction + 1) % 4
      message = "You turn right."
    elif action in ("move forward", "forward", "go forward"):
      if not self._passable(self._front()):
        raise InvalidAction("something blocks the way forward.")
      self.agent = self._front()
      message = "You move forward."
    elif action in ("check available actions", "look"):
      message = "Available actions: " + "; ".join(self._available()) + "."
    elif action.startswith("go through "):
      message = self._go_through(self._object(action[len("go through "):]))
    elif action.startswith("go to "):
      message = self._go_to(self._object(action[len("go to "):]))
    elif action.startswith(("pick up ", "pickup ")):
      message = self._pick_up(self._object(action.split(" ", 2)[-1] if action.startswith("pick up ")
                                           else action[len("pickup "):]))
    elif action.startswith("drop "):
      message = self._drop(self._object(action[len("drop "):]))
    elif action.startswith(("open ", "toggle ", "unlock ")):
      message = self._open(self._object(action.split(" ", 1)[1]))
    elif action == "toggle":
      front = self._front()
      if front not in self.doors:
        raise InvalidAction("there is no door in front of you to toggle.")
      message = self._open((self.doors[front].color, "door"))
    else:
      raise InvalidAction(f"unknown command {action[:80]!r}. Say 'check available actions' to list them.")
    if self.agent not in self.doors:  # in a doorway the agent has not yet entered the room beyond
      self._rooms_entered |= self._room_of(self.agent)
    return f"{message}\n{self._describe()}", self._achieved()

  def _achieved(self) -> bool:
    if self.task.goal_kind == "pick up":
      return self.task.goal in self.carrying
    return self.objects.get(self._front()) == self.task.goal

  def _path_to_any(self, targets: set[tuple[int, int]]) -> list[tuple[int, int]] | None:
    """Breadth-first shortest path over walkable cells from the agent to any cell of `targets`."""
    previous = {self.agent: None}
    queue = collections.deque([self.agent])
    while queue:
      cell = queue.popleft()
      if cell in targets:
        path = []
        while cell is not None:
          path.append(cell)
          cell = previous[cell]
        return path[::-1]
      for dx, dy in DIRECTIONS:
        nxt = (cell[0] + dx, cell[1] + dy)
        if nxt not in previous and self._passable(nxt):
          previous[nxt] = cell
          queue.append(nxt)
    return None

  def _go_to(self, obj: tuple[str, str]) -> str:
    seen = self._visible()
    if obj not in seen:
      raise InvalidAction(f"you see no {obj[0]} {obj[1]} here.")
    target = seen[obj]
    next_to = {(target[0] + dx, target[1] + dy) for dx, dy in DIRECTIONS}
    path = self._path_to_any(next_to)
    if path is None:
      raise InvalidAction(f"you cannot reach the {obj[0]} {obj[1]}.")
    self.agent = path[-1]
    self.direction = DIRECTIONS.index((target[0] - self.agent[0], target[1] - self.agent[1]))
    return f"You go to the {obj[0]} {obj[1]}."

  def _go_through(self, obj: tuple[str, str]) -> str:
    if obj[1] != "door":
      raise InvalidAction(f"you can only go through doors, not a {obj[1]}.")
    seen = self._visible()
    if obj not in seen:
      raise InvalidAction(f"you see no {obj[0]} door here.")
    pos = seen[obj]
    if not self.doors[pos].open:
      raise InvalidAction(f"the {obj[0]} door is closed; open it first.")
    if self._path_to_any({pos}) is None:
      raise InvalidAction(f"you cannot reach the {obj[0]} door.")
    # Walk onto the door, then one cell further, away from the side the agent came from (standing in the
    # doorway, the way it faces).
    if self.agent == pos:
      side = DIRECTIONS[self.direction][0] or 1
    else:
      side = 1 if self.agent[0] < pos[0] else -1
    beyond = (pos[0] + side, pos[1])
    if not self._passable(beyond):
      raise InvalidAction(f"something blocks the way behind the {obj[0]} door.")
    self.agent, self.direction = beyond, 0 if side == 1 else 2
    return f"You go through the {obj[0]} door."

  def _pick_up(self, obj: tuple[str, str]) -> str:
    if obj[1] == "door":
      raise InvalidAction("doors cannot be picked up.")
    if self.objects.get(self._front()) != obj:
      raise InvalidAction(f"the {obj[0]} {obj[1]} is not in front of you; go to it first.")
    del self.objects[self._front()]
    self.carrying.append(obj)
    return f"You pick up the {obj[0]} {obj[1]}."

  def _drop(self, obj: tuple[str, str]) -> str:
    if obj not in self.carrying:
      raise InvalidAction(f"you do not carry a {obj[0]} {obj[1]}.")
    front = self._front()
    if front in self.doors or not self._passable(front):
      raise InvalidAction("there is no empty cell in front of you to drop it on.")
    self.carrying.remove(obj)
    self.objects[front] = obj
    return f"You drop the {obj[0]} {obj[1]}."

  def _open(self, obj: tuple[str, str]) -> str:
    if obj[1] != "door":
      raise InvalidAction(f"a {obj[1]} cannot be opened; only doors can.")
    door = self.doors.get(self._front())
    if door is None or door.color != obj[0]:
      raise InvalidAction(f"the {obj[0]} door is not in front of you; go to it first.")
    if door.open:
      return f"The {obj[0]} door is already open."
    if door.locked:
      if (obj[0], "key") not in self.carrying:
        raise InvalidAction(f"the {obj[0]} door is locked and you do not carry the {obj[0]} key.")
      door.locked = False
    door.open = True
    return f"You open the {obj[0]} door."
