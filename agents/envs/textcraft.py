"""A TextCraft-style crafting world (Prasad et al. 2024, "ADaPT": TextCraft; used by AgentGym-RL): craft
a Minecraft item from base materials by following crafting commands.

The recipe graph below is written out here from Minecraft's crafting and smelting recipes (smelting is written as
a recipe that also takes one coal): 51 recipes over 19 base materials, with chains up to four crafts deep as in
TextCraft, e.g. oak log -> oak planks -> chest -> hopper -> hopper minecart, or iron ore -> iron ingot -> bucket
-> milk bucket -> cake. A task asks for one item; the first observation lists the crafting commands of every item
in its recipe tree plus a few distractors, shuffled, as in TextCraft. Tasks are drawn from `task_id` alone.

Actions: `get <n> <item>` (base materials only), `craft <n> <item> using <n> <item>, <n> <item>, ...` (any whole
multiple of a recipe, ingredients in any order), `inventory`. Partial progress: the share of the distinct items of
the target's recipe tree (intermediates and the target) crafted so far.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

import ml_collections

from agents.envs.base import InvalidAction, PlanOracle, TextEnv, check_settings, int_at_least, integers_at_least
from core.config import section

# item -> (how many one craft makes, {ingredient: count}). Items that appear only as ingredients are base
# materials the agent can `get`.
RECIPES: dict[str, tuple[int, dict[str, int]]] = {
    "oak planks": (4, {"oak log": 1}),
    "stick": (4, {"oak planks": 2}),
    "crafting table": (1, {"oak planks": 4}),
    "chest": (1, {"oak planks": 8}),
    "wooden pickaxe": (1, {"oak planks": 3, "stick": 2}),
    "wooden sword": (1, {"oak planks": 2, "stick": 1}),
    "oak fence": (3, {"oak planks": 4, "stick": 2}),
    "ladder": (3, {"stick": 7}),
    "bowl": (4, {"oak planks": 3}),
    "stone": (1, {"cobblestone": 1, "coal": 1}),
    "stone pickaxe": (1, {"cobblestone": 3, "stick": 2}),
    "furnace": (1, {"cobblestone": 8}),
    "iron ingot": (1, {"iron ore": 1, "coal": 1}),
    "gold ingot": (1, {"gold ore": 1, "coal": 1}),
    "iron nugget": (9, {"iron ingot": 1}),
    "iron pickaxe": (1, {"iron ingot": 3, "stick": 2}),
    "iron sword": (1, {"iron ingot": 2, "stick": 1}),
    "bucket": (1, {"iron ingot": 3}),
    "milk bucket": (1, {"bucket": 1, "milk": 1}),
    "shears": (1, {"iron ingot": 2}),
    "iron block": (1, {"iron ingot": 9}),
    "anvil": (1, {"iron block": 3, "iron ingot": 4}),
    "minecart": (1, {"iron ingot": 5}),
    "hopper": (1, {"iron ingot": 5, "chest": 1}),
    "hopper minecart": (1, {"hopper": 1, "minecart": 1}),
    "chest minecart": (1, {"chest": 1, "minecart": 1}),
    "rail": (16, {"iron ingot": 6, "stick": 1}),
    "powered rail": (6, {"gold ingot": 6, "stick": 1, "redstone": 1}),
    "compass": (1, {"iron ingot": 4, "redstone": 1}),
    "clock": (1, {"gold ingot": 4, "redstone": 1}),
    "paper": (3, {"sugar cane": 3}),
    "sugar": (1, {"sugar cane": 1}),
    "map": (1, {"paper": 8, "compass": 1}),
    "book": (1, {"paper": 3, "leather": 1}),
    "bookshelf": (1, {"oak planks": 6, "book": 3}),
    "enchanting table": (1, {"book": 1, "diamond": 2, "obsidian": 4}),
    "torch": (4, {"coal": 1, "stick": 1}),
    "lantern": (1, {"torch": 1, "iron nugget": 8}),
    "redstone torch": (1, {"redstone": 1, "stick": 1}),
    "repeater": (1, {"redstone torch": 2, "redstone": 1, "stone": 3}),
    "comparator": (1, {"redstone torch": 3, "quartz": 1, "stone": 3}),
    "piston": (1, {"oak planks": 3, "cobblestone": 4, "iron ingot": 1, "redstone": 1}),
    "sticky piston": (1, {"piston": 1, "slime ball": 1}),
    "bow": (1, {"stick": 3, "string": 3}),
    "arrow": (4, {"flint": 1, "stick": 1, "feather": 1}),
    "dispenser": (1, {"cobblestone": 7, "bow": 1, "redstone": 1}),
    "glass": (1, {"sand": 1, "coal": 1}),
    "glass bottle": (3, {"glass": 3}),
    "glass pane": (16, {"glass": 6}),
    "cake": (1, {"milk bucket": 3, "sugar": 2, "egg": 1, "wheat": 3}),
    "bread": (1, {"wheat": 3}),
}
BASE_ITEMS = tuple(sorted({i for _, ings in RECIPES.values() for i in ings} - set(RECIPES)))
MAX_STACK = 64  # the most one `get` or `craft` may produce, as a Minecraft stack


def depth(item: str) -> int:
  """Crafts on the longest chain from base materials to `item` (0 for a base material)."""
  if item not in RECIPES:
    return 0
  return 1 + max(depth(i) for i in RECIPES[item][1])


def recipe_tree(item: str) -> set[str]:
  """Every craftable item needed to make `item`, `item` included."""
  if item not in RECIPES:
    return set()
  return {item}.union(*(recipe_tree(i) for i in RECIPES[item][1]))


def craft_command(item: str, batches: int = 1) -> str:
  out, ingredients = RECIPES[item]
  parts = ", ".join(f"{n * batches} {name}" for name, n in ingredients.items())
  return f"craft {out * batches} {item} using {parts}"


def textcraft_config(**overrides: Any) -> ml_collections.ConfigDict:
  """Every number of the crafting world: target depth range, distractor commands, step budget."""
  return section("textcraft", dict(min_depth=1, max_depth=4, num_distractors=4, max_steps=40), overrides)


def validate_textcraft_config(config: ml_collections.ConfigDict) -> None:
  deepest = max(depth(item) for item in RECIPES)
  check_settings("textcraft", [
      (int_at_least(config.min_depth, 1) and int_at_least(config.max_depth, 1) and config.min_depth <= config.max_depth
       and config.min_depth <= deepest, f"1 <= min_depth <= max_depth with min_depth <= {deepest} (the deepest "
       f"recipe), got {config.min_depth!r} and {config.max_depth!r}"),
      *integers_at_least(config, {"num_distractors": 0, "max_steps": 1})])


def generate_task(task_id: int, config: ml_collections.ConfigDict) -> tuple[str, list[str]]:
  """(target item, crafting commands shown) for `task_id`: depth uniform in the range, then an item of it."""
  rng = random.Random(f"textcraft-{task_id}")
  by_depth: dict[int, list[str]] = {}
  for item in sorted(RECIPES):
    by_depth.setdefault(depth(item), []).append(item)
  depths = [d for d in range(config.min_depth, config.max_depth + 1) if d in by_depth]
  if not depths:
    raise ValueError(f"no recipe has depth in [{config.min_depth}, {config.max_depth}]; the deepest is "
                     f"{max(by_depth)}.")
  target = rng.choice(by_depth[rng.choice(depths)])
  tree = sorted(recipe_tree(target))
  others = sorted(set(RECIPES) - set(tree))
  shown = tree + rng.sample(others, min(config.num_distractors, len(others)))
  rng.shuffle(shown)
  return target, [craft_command(item) for item in shown]


def oracle_plan(target: str) -> list[str]:
  """A scripted solution: make each ingredient (recursively), then craft; repeat until all are there at once
  (making a later ingredient can use up an earlier one, e.g. sticks are made from planks)."""
  inventory: dict[str, int] = {}
  plan: list[str] = []

  def need(item: str, count: int) -> None:
    missing = count - inventory.get(item, 0)
    if missing <= 0:
      return
    if item not in RECIPES:
      plan.append(f"get {missing} {item}")
      inventory[item] = count
      return
    out, ingredients = RECIPES[item]
    batches = math.ceil(missing / out)
    while any(inventory.get(i, 0) < n * batches for i, n in ingredients.items()):
      for i, n in ingredients.items():
        need(i, n * batches)
    for i, n in ingredients.items():
      inventory[i] -= n * batches
    inventory[item] = inventory.get(item, 0) + out * batches
    plan.append(craft_command(item, batches))

  need(target, 1)
  return plan


_GET = re.compile(r"^get (\d{1,6}) ([a-z ]+)$")
_CRAFT = re.compile(r"^craft (\d{1,6}) ([a-z ]+?) using (.+)$")
_INGREDIENT = re.compile(r"^(\d{1,6}) ([a-z ]+)$")


class TextCraft(TextEnv):
  name = "textcraft"

  def __init__(self, config: ml_collections.ConfigDict):
    validate_textcraft_config(config)
    super().__init__(config.max_steps)
    self.config = config

  def instructions(self) -> str:
    return ("You are in a Minecraft-like crafting world. Craft the goal item. Answer with exactly one action per "
            "turn: 'get <count> <item>' for a base material, 'craft <count> <item> using <count> <item>, "
            "<count> <item>, ...' following a crafting command (any whole multiple of it), or 'inventory'.")

  def oracle(self, task_id: int) -> PlanOracle:
    return PlanOracle(oracle_plan(generate_task(task_id, self.config)[0]))

  def _reset(self, task_id: int) -> tuple[str, dict[str, Any]]:
    self.target, commands = generate_task(task_id, self.config)
    self.inventory: dict[str, int] = {}
    self.crafted: set[str] = set()
    self.tree = recipe_tree(self.target)
    observation = (f"{self.instructions()}\nCrafting commands:\n" + "\n".join(commands) +
                   f"\nGoal: craft {self.target}.")
    return observation, {"target": self.target, "depth": depth(self.target), "tree_size": len(self.tree)}

  def _progress(self) -> float:
    return len(self.crafted & self.tree) / len(self.tree)

  def _inventory_text(self) -> str:
    items = [f"[{name}] ({count})" for name, count in sorted(self.inventory.items()) if count > 0]
    return "Inventory: " + (" ".join(items) if items else "You are not carrying anything.")

  def _step(self, action: str) -> tuple[str, bool]:
    if action in ("inventory", "check inventory"):
      return self._inventory_text(), False
    if action.startswith("get "):
      match = _GET.match(action)
      if match is None:
        raise InvalidAction("write it as 'get <count> <item>', e.g. 'get 2 oak log'.")
      count, item = int(match.group(1)), match.group(2).strip()
      if not 1 <= count <= MAX_STACK:
        raise InvalidAction(f"you can get between 1 and {MAX_STACK} items at a time, not {count}.")
      if item in RECIPES:
        raise InvalidAction(f"{item} is not a base material; craft it.")
      if item not in BASE_ITEMS:
        raise InvalidAction(f"could not find {item}.")
      self.inventory[item] = self.inventory.get(item, 0) + count
      return f"Got {count} {item}.", False
    if action.startswith("craft "):
      return self._craft(action)
    raise InvalidAction(f"unknown command {action[:80]!r}. Use 'get', 'craft' or 'inventory'.")

  def _craft(self, action: str) -> tuple[str, bool]:
    match = _CRAFT.match(action)
    if match is None:
      raise InvalidAction("write it as 'craft <count> <item> using <count> <item>, <count> <item>'.")
    count, item = int(match.group(1)), match.group(2).strip()
    given: dict[str, int] = {}
    for part in match.group(3).split(","):
      ing = _INGREDIENT.match(part.strip())
      if ing is None:
        raise InvalidAction(f"cannot read the ingredient {part.strip()[:60]!r}; write '<count> <item>'.")
      given[ing.group(2).strip()] = given.get(ing.group(2).strip(), 0) + int(ing.group(1))
    if item not in RECIPES:
      raise InvalidAction(f"there is no recipe for {item}.")
    out, ingredients = RECIPES[item]
    batches = count // out
    if (count % out or batches < 1 or count > MAX_STACK
        or given != {name: n * batches for name, n in ingredients.items()}):
      raise InvalidAction(f"could not find a valid recipe for {count} {item} from those ingredients.")
    short = [name for name, n in given.items() if self.inventory.get(name, 0) < n]
    if short:
      raise InvalidAction(f"could not find enough items to craft {item}: missing {', '.join(short)}.")
    for name, n in given.items():
      self.inventory[name] -= n
    self.inventory[item] = self.inventory.get(item, 0) + count
    self.crafted.add(item)
    return f"Crafted {count} {item}.", self.inventory.get(self.target, 0) >= 1
