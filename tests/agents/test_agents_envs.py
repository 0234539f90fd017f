"""The text environments (gridworld, textcraft, search, sciworld): deterministic tasks, oracles that always
succeed, bad actions, partial progress, the laboratory's physics, and the BM25 retriever and WordNet reader against
hand-checked values."""

import math

import pytest

from agents.envs import (EnvProtocolError, Gridworld, SciWorld, TextCraft, WordNetSearch, gridworld_config,
                         make_env, sciworld_config, search_config, textcraft_config)
from agents.envs import bm25, sciworld, textcraft, wordnet
from agents.envs.gridworld import generate_task
from agents.envs.search import normalize_answer


@pytest.fixture(scope="module")
def envs():
  return {"gridworld": Gridworld(gridworld_config()), "textcraft": TextCraft(textcraft_config()),
          "search": WordNetSearch(search_config()), "sciworld": SciWorld(sciworld_config())}


def run_oracle(env, task_id, raw=False):
  """The oracle's episode: its last result and the progress after each step: as reported (`info["progress"]`,
  kept at its best so far and 1 on success) or, with `raw`, as the environment's own `_progress()` measures it."""
  result = env.reset(task_id)
  oracle = env.oracle(task_id)
  progress = [env._progress() if raw else result.info["progress"]]
  while not result.done:
    result = env.step(oracle.act(result.observation))
    progress.append(env._progress() if raw else result.info["progress"])
  return result, progress


@pytest.mark.parametrize("name,num_tasks", [("gridworld", 400), ("textcraft", 400), ("search", 200),
                                                    ("sciworld", 600)])
def test_oracle_solves_every_task_with_monotone_progress(envs, name, num_tasks):
  env = envs[name]
  steps = []
  for task_id in range(num_tasks):
    result, progress = run_oracle(env, task_id, raw=True)
    assert result.info["success"] and result.reward == 1.0, (name, task_id, result.observation)
    assert result.info["progress"] == 1.0
    # the environment's own measure, not the reported one (which `TextEnv` keeps monotone whatever it measures):
    # the oracle never undoes a sub-goal
    assert all(a <= b for a, b in zip(progress, progress[1:])), progress
    steps.append(result.info["steps"])
  assert max(steps) >= 2 * min(steps)  # the task set mixes short and long horizons


@pytest.mark.parametrize("name", ["gridworld", "textcraft", "search", "sciworld"])
def test_tasks_are_a_function_of_the_id(envs, name):
  env = envs[name]
  first = env.reset(11).observation
  other = make_env(name)  # a fresh instance, as on another server
  assert other.reset(11).observation == first
  assert env.reset(12).observation != first


@pytest.mark.parametrize("name", ["gridworld", "textcraft", "search", "sciworld"])
@pytest.mark.parametrize("action", ["", "   ", "dance wildly", "go to", "craft 3 using", "search[", "\x00\n\t",
                                    "pick up purple unicorn", "get -1 oak log", "answer[]", "x" * 5000])
def test_bad_actions_are_observations_not_crashes(envs, name, action):
  env = envs[name]
  first = env.reset(3).observation
  result = env.step(action)
  assert result.observation.startswith("Invalid action:"), result.observation
  assert result.reward == 0.0 and not result.done and result.info["invalid"]
  # and the episode goes on from the unchanged state: the oracle's first action is still valid
  result = env.step(env.oracle(3).act(first))
  assert not result.info["invalid"], result.observation


def test_protocol_misuse_and_the_end_of_an_episode(envs):
  fresh = Gridworld(gridworld_config())
  with pytest.raises(EnvProtocolError, match="before reset"):
    fresh.step("turn left")
  with pytest.raises(EnvProtocolError, match="task id"):
    fresh.reset(-1)
  env = envs["gridworld"]
  result, _ = run_oracle(env, 0)
  after = env.step("turn left")
  assert after.done and after.reward == 0.0 and "episode is over" in after.observation
  budget = Gridworld(gridworld_config(max_steps=3))
  budget.reset(0)
  results = [budget.step("turn left") for _ in range(3)]
  assert [r.done for r in results] == [False, False, True] and "all 3 steps" in results[-1].observation


def test_gridworld_tasks_do_not_depend_on_the_step_budget():
  for task_id in range(20):
    assert generate_task(task_id, gridworld_config(max_steps=1)) == generate_task(task_id, gridworld_config())


def test_gridworld_locked_door_needs_its_key_and_progress_is_partial(envs):
  env = envs["gridworld"]
  task_id = next(t for t in range(200) if env.reset(t).info["task"]["locked_doors"] >= 1)
  env.reset(task_id)
  plan = env.oracle(task_id)._plan
  door_index = next(i for i, a in enumerate(plan) if a.startswith("open "))
  color = plan[door_index].split()[1]
  assert plan[:door_index].count(f"pick up {color} key") == 1
  # Walk to the door without the key: opening it is refused.
  env.reset(task_id)
  env.step(f"go to {color} door")
  refused = env.step(f"open {color} door")
  assert refused.info["invalid"] and "locked" in refused.observation
  result = env.reset(task_id)
  oracle = env.oracle(task_id)
  for _ in range(door_index + 1):
    result = env.step(oracle.act(result.observation))
  assert 0.0 < result.info["progress"] < 1.0 and not result.done
  assert f"a {color} door (open)" in result.observation


def test_textcraft_recipe_graph_depth_and_crafting_rules(envs):
  assert textcraft.depth("hopper minecart") == 4 and textcraft.depth("cake") == 4
  assert textcraft.depth("oak planks") == 1 and textcraft.depth("oak log") == 0
  assert textcraft.recipe_tree("wooden pickaxe") == {"wooden pickaxe", "oak planks", "stick"}
  env = envs["textcraft"]
  env.reset(0)
  env.target = "wooden pickaxe"  # a known goal for the hand-written episode below
  env.tree = textcraft.recipe_tree("wooden pickaxe")
  assert env.step("get 2 oak log").observation == "Got 2 oak log."
  assert "not a base material" in env.step("get 1 stick").observation
  assert "valid recipe" in env.step("craft 3 oak planks using 1 oak log").observation  # not a multiple of 4
  assert env.step("craft 8 oak planks using 2 oak log").observation == "Crafted 8 oak planks."
  assert math.isclose(env.step("inventory").info["progress"], 1 / 3)
  assert "valid recipe" in env.step("craft 8 stick using 4 oak planks, 1 oak log").observation  # extra ingredient
  assert env.step("craft 4 stick using 2 oak planks").observation == "Crafted 4 stick."
  result = env.step("craft 1 wooden pickaxe using 2 stick, 3 oak planks")  # ingredients in any order
  assert result.reward == 1.0 and result.done and result.info["progress"] == 1.0
  env.reset(0)
  env.target, env.tree = "stick", textcraft.recipe_tree("stick")
  short = env.step("craft 4 stick using 2 oak planks")
  assert short.info["invalid"] and "enough items" in short.observation



def test_textcraft_counts_of_thousands_of_digits_are_bad_actions(envs):
  env = envs["textcraft"]
  env.reset(0)
  for action in ("get " + "1" * 4400 + " oak log", "craft " + "4" * 4400 + " stick using 2 oak planks",
                 "craft 4 stick using " + "2" * 4400 + " oak planks"):
    result = env.step(action)  # int() of over 4,300 digits raises ValueError: it must not be reached
    assert result.observation.startswith("Invalid action:") and result.info["invalid"], result.observation


def test_gridworld_rooms_too_full_and_doorways(envs):
  packed = gridworld_config(room_size=2, min_rooms=1, max_rooms=1, num_distractors=8)
  with pytest.raises(RuntimeError, match="no free cell left.*Fix"):
    generate_task(0, packed)
  # Standing in a doorway is not entering the room beyond: the progress counts that room one step later.
  env = envs["gridworld"]
  task_id = next(t for t in range(200) if env.reset(t).info["task"]["locked_doors"] == 0
                 and any(a.startswith("open ") for a in env.oracle(t)._plan))
  result = env.reset(task_id)
  for action in env.oracle(task_id)._plan:
    result = env.step(action)
    if action.startswith("open "):
      break
  opened = result.info["progress"]
  result = env.step("move forward")
  assert "doorway" in result.observation and result.info["progress"] == opened
  result = env.step("move forward")
  assert result.info["progress"] > opened


def test_search_hops_past_the_corpus_chains_are_a_clear_error(envs):
  from agents.envs.search import generate_task as search_task
  with pytest.raises(ValueError, match=r"no 21-hop question.*Fix: lower search.max_hops"):
    search_task(10, envs["search"].corpus, search_config(max_hops=25))

def test_bm25_scores_by_hand():
  docs = ["the cat sat", "the dog sat down", "cat cat dog"]
  index = bm25.BM25Index(docs, k1=1.2, b=0.75)
  n, avgdl = 3, (3 + 4 + 3) / 3

  def term(tf, dl, df):
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf * tf * 2.2 / (tf + 1.2 * (1 - 0.75 + 0.75 * dl / avgdl))

  expected = [term(1, 3, 2), 0.0, term(2, 3, 2)]  # query "cat": df 2
  assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(index.scores("Cat"), expected))
  both = index.scores("cat dog dog")  # a repeated query term counts once
  assert math.isclose(both[2], term(2, 3, 2) + term(1, 3, 2), rel_tol=1e-12)
  assert math.isclose(both[1], term(1, 4, 2), rel_tol=1e-12)
  assert index.search("cat dog", 2) == [(2, both[2]), (0, index.scores("cat dog")[0])]
  assert index.search("unknown words", 3) == []
  tied = bm25.BM25Index(["a b", "a b", "a b"], 1.2, 0.75)
  assert [d for d, _ in tied.search("a", 2)] == [0, 1]  # ties go to the lower index


def test_wordnet_reader_matches_known_entries():
  synsets = wordnet.load_wordnet_nouns()
  assert len(synsets) == 82115
  by_name = {s.name: s for s in synsets}
  dog = by_name["dog.n.01"]
  assert dog.lemmas == ("dog", "domestic dog", "Canis familiaris")
  assert dog.definition.startswith("a member of the genus Canis")
  assert '"' not in dog.definition  # the quoted example is cut off
  by_offset = {s.offset: s for s in synsets}
  assert sorted(by_offset[h].name for h in dog.hypernyms) == ["canine.n.02", "domestic_animal.n.01"]
  assert by_name["entity.n.01"].hypernyms == ()


def test_search_env_answers_are_exact_match_and_end_the_episode(envs):
  env = envs["search"]
  assert normalize_answer("  The  Canis_Familiaris! ") == "canis familiaris"
  result = env.reset(5)
  assert "Question:" in result.observation
  hits = env.step("search[dog.n.01]")  # an entry name opens that entry first
  assert hits.observation.startswith("[1] dog.n.01 | dog, domestic dog, Canis familiaris |")
  wrong = env.step("answer[definitely not it]")
  assert wrong.done and wrong.reward == 0.0 and not wrong.info["success"]
  env.reset(5)
  right = sorted(env.task.answers)[0]
  assert env.step(f"answer[{right.upper()}]").reward == 1.0


def test_search_answers_that_normalise_to_nothing_never_score(envs):
  env = envs["search"]
  env.reset(15668)  # the blood group whose lemmas are "A", "type A", "group A"
  assert env.task.answers == {"type", "group"}
  wrong = env.step("answer[the]")  # normalises to "", as "A" does
  assert wrong.done and wrong.reward == 0.0 and not wrong.info["success"]
  result, _ = run_oracle(env, 15668)
  assert result.info["success"]


def sciworld_task(env, **fields):
  """The first task id whose task has these field values, and the env reset to it."""
  task_id = next(t for t in range(500) if all(getattr(sciworld.generate_task(t, env.config), k) == v
                                              for k, v in fields.items()))
  env.reset(task_id)
  return task_id


def walk(env, room):
  for step in sciworld.route(env.room, room):
    assert not env.step(f"go to {step}").info["invalid"]


def test_sciworld_routes_are_shortest_and_follow_doorways():
  assert sciworld.route("bedroom", "workshop") == ["hallway", "workshop"]
  for start in sciworld.ROOMS:
    for end in sciworld.ROOMS:
      path = sciworld.route(start, end)
      assert all(b in sciworld.DOORWAYS[a] for a, b in zip([start] + path, path))
  assert len(sciworld.route("bedroom", "outside")) == 3  # bedroom-hallway-(kitchen|greenhouse)-outside
  # doorways are two-way
  assert all(a in sciworld.DOORWAYS[b] for a in sciworld.ROOMS for b in sciworld.DOORWAYS[a])


def test_sciworld_states_follow_real_melting_and_boiling_points(envs):
  env = envs["sciworld"]
  sciworld_task(env, kind="boil", substance="water")
  for temperature, state in ((-0.5, "solid"), (0.0, "liquid"), (99.9, "liquid"), (100.0, "gas")):
    env.temperature["water"] = temperature
    assert env._state("water") == state
  env.temperature["water"] = 20.0
  walk(env, env.where["pot"])
  env.step("pick up pot")
  assert env.step("pick up water").info["invalid"]  # a substance travels in its container
  walk(env, "kitchen")
  env.step("put pot in stove")
  assert env.temperature["water"] == 20.0  # the stove is off
  result = env.step("activate stove")  # this tick: 20 + 40
  assert env.temperature["water"] == 60.0 and not result.done and result.info["progress"] == 0.75
  result = env.step("wait")  # 60 + 40 = 100: it boils
  assert result.done and result.reward == 1.0 and "turns into steam" in result.observation


def test_sciworld_lead_melts_in_the_furnace_not_on_the_stove(envs):
  env = envs["sciworld"]
  sciworld_task(env, kind="melt", substance="lead")
  walk(env, env.where["crucible"])
  env.step("pick up crucible")
  walk(env, "kitchen")
  env.step("put crucible in stove")
  env.step("activate stove")
  for _ in range(8):
    assert not env.step("wait").done
  assert env.temperature["lead"] == 250.0 and env._state("lead") == "solid"  # the stove tops out at 250 C < 327.5
  env.step("pick up crucible")
  walk(env, "workshop")
  env.step("put crucible in furnace")
  result = env.step("activate furnace")  # 250 + 150 = 400 > 327.5: it melts on that very tick
  assert env.temperature["lead"] == 400.0 and env._state("lead") == "liquid"
  assert result.done and result.reward == 1.0 and "turns into liquid lead" in result.observation


def test_sciworld_invalid_actions_take_no_time(envs):
  env = envs["sciworld"]
  sciworld_task(env, kind="freeze")
  walk(env, env.where["cup"])
  env.step("pick up cup")
  walk(env, "kitchen")
  env.step("put cup in freezer")
  before = env.temperature["water"]
  assert before == 10.0  # the freezer is on from the start: 20 - 10
  for action in ("pick up stove", "activate freezer", "go to bedroom", "use thermometer on water", "dance"):
    assert env.step(action).info["invalid"]
  assert env.temperature["water"] == before


def test_sciworld_conductivity_uses_real_materials_and_a_wrong_box_fails(envs):
  env = envs["sciworld"]
  assert sciworld.CONDUCTORS["copper wire"] and sciworld.CONDUCTORS["graphite rod"]
  assert not sciworld.CONDUCTORS["plastic fork"] and not sciworld.CONDUCTORS["rubber band"]
  for subject, bulb in (("copper wire", "turns on"), ("plastic fork", "stays dark")):
    task_id = sciworld_task(env, kind="conductivity", subject=subject)
    walk(env, env.where[subject])
    env.step(f"pick up {subject}")
    walk(env, "workshop")
    env.step(f"put {subject} in circuit tester")
    result = env.step("activate circuit tester")
    assert bulb in result.observation and result.info["progress"] == 2 / 3
    env.step(f"pick up {subject}")
    walk(env, env.task.box_room)
    wrong = "green box" if sciworld.CONDUCTORS[subject] else "red box"
    result = env.step(f"put {subject} in {wrong}")
    assert result.done and result.reward == 0.0 and not result.info["success"] and "wrong box" in result.observation
    assert env.step("look around").done  # the episode is over
    result, _ = run_oracle(env, task_id)
    assert result.reward == 1.0


def test_sciworld_measuring_decides_the_box_and_a_wrong_focus_fails(envs):
  env = envs["sciworld"]
  task_id = sciworld_task(env, kind="measure")
  substance = env.task.subject
  walk(env, env.task.thermometer_room)
  assert env.step(f"use thermometer on {substance}").info["invalid"]  # not carried yet
  env.step("pick up thermometer")
  walk(env, env._room_of(substance))
  reading = env.step(f"use thermometer on {substance.lower()}").observation
  temperature = env.temperature[substance]
  assert reading == f"The thermometer reads {round(temperature)} degrees Celsius."
  walk(env, env.task.box_room)
  wrong = "green box" if temperature > env.task.threshold else "red box"
  result = env.step(f"focus on {wrong}")
  assert result.done and result.reward == 0.0 and "wrong box" in result.observation
  result, _ = run_oracle(env, task_id)
  assert result.reward == 1.0


def test_sciworld_only_a_living_thing_may_go_in_the_red_box(envs):
  env = envs["sciworld"]
  sciworld_task(env, kind="living")
  distractor = next(name for name, _ in env.task.placements if name in sciworld.NON_LIVING)
  walk(env, env.where[distractor])
  env.step(f"pick up {distractor}")
  walk(env, env.task.box_room)
  assert not env.step(f"put {distractor} in green box").done  # the green box is no answer here
  env.step(f"pick up {distractor}")
  result = env.step(f"put {distractor} in red box")
  assert result.done and result.reward == 0.0 and "not a living thing" in result.observation


def test_sciworld_oracle_finds_things_by_looking_not_from_hidden_placements(envs):
  """The oracle gets the task without where things are, how warm they are or where the thermometer lies: it must
  explore and read its instruments, and still solves every task."""
  import dataclasses
  env = envs["sciworld"]
  explored = 0
  for task_id in range(150):
    result = env.reset(task_id)
    blind = dataclasses.replace(env.task, placements=(), temperatures=(), thermometer_room="")
    oracle = sciworld._ScriptOracle(blind)
    while not result.done:
      result = env.step(oracle.act(result.observation))
    assert result.info["success"], (task_id, result.observation)
    explored += len(oracle._views) > 2
  assert explored > 50  # most tasks need rooms beyond the start and the next


def test_sciworld_progress_counts_sub_goals_of_the_task(envs):
  env = envs["sciworld"]
  assert env.reset(sciworld_task(env, kind="freeze")).info["progress"] == 0.0  # the freezer is on, the cup is not in it
  walk(env, env.where["cup"])
  assert env.step("pick up cup").info["progress"] == 0.25
  walk(env, "kitchen")
  assert env.step("put cup in freezer").info["progress"] == 0.75  # in the device, and the device is on


@pytest.mark.parametrize("name,overrides,message", [
    # 8 rooms need 7 door colours of the 6: about one reset in eight failed, the rest ran
    ("gridworld", dict(max_rooms=8), r"max_rooms <= 7 .*got 1 and 8"),
    ("gridworld", dict(min_rooms=3, max_rooms=2), r"min_rooms <= max_rooms"),
    ("gridworld", dict(locked_probability=1.5), r"locked_probability must lie in \[0, 1\]"),
    ("textcraft", dict(min_depth=5, max_depth=6), r"min_depth <= 4 \(the deepest recipe\)"),
    ("textcraft", dict(num_distractors=-1), r"num_distractors must be an integer >= 0"),
    ("sciworld", dict(task_kinds=("melt", "cook")), r"task_kinds must be distinct kinds among"),
    ("search", dict(top_k=0), r"top_k must be an integer >= 1"),  # no search could ever show an entry
    ("gridworld", dict(room_size=1), r"room_size must be an integer >= 2"),
    # rooms too small for their objects: 117 of 200 resets failed; found by drawing the first tasks (in validation,
    # not in the constructor, which the draws themselves use)
    ("gridworld", dict(room_size=2), r"task 0 cannot be drawn: room 0 has no free cell left"),
])
def test_settings_that_would_fail_resets_are_refused_up_front(name, overrides, message):
  from agents.envs import SETTINGS_CHECKS, env_config, validate_env_config
  from core import config as config_lib
  section = env_config(name, **overrides)
  with pytest.raises(ValueError, match=message):
    SETTINGS_CHECKS[name](section)
  if name != "search" and "drawn" not in message:  # the search env loads its corpus first; same check
    with pytest.raises(ValueError, match=message):
      make_env(name, section)
  config = config_lib.load_config(f"configs/agents/serve.py:{name}", [])
  config.env_config = section
  with pytest.raises(config_lib.ConfigError, match=rf"bad {name} env_config: .*{message}.*Fix"):
    validate_env_config(config, "")
  SETTINGS_CHECKS[name](env_config(name))  # the defaults pass


def test_search_progress_reaches_one_only_with_the_right_answer(envs):
  env = envs["search"]
  for task_id in range(40):
    result, progress = run_oracle(env, task_id)
    assert result.info["success"] and progress[-1] == 1.0 and max(progress[:-1]) < 1.0
    env.reset(task_id)
    for entry in env.task.chain:  # every entry of the chain seen, then a wrong answer
      env.step(f"search[{env.corpus.synsets[entry].name}]")
    failed = env.step("answer[certainly not this]")
    assert failed.done and not failed.info["success"]
    assert failed.info["progress"] == pytest.approx(len(env.task.chain) / (len(env.task.chain) + 1))
