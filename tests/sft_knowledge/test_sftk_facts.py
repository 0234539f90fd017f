"""Knowledge set: templates, answer normalisation (aliases, case, articles), facts from the quizzes and WordNet,
splits, and the mastery level edges."""

import numpy as np
import pytest

from sft_knowledge import facts, probing
from sft_knowledge.templates import RELATIONS


def test_every_relation_has_eight_distinct_templates_with_the_subject():
  assert len(RELATIONS) >= 8
  for relation in RELATIONS.values():
    assert len(set(relation.templates)) == 8, relation.name
    for i in range(8):
      text = facts.render(relation, "Zanzibar", i)
      assert "Zanzibar" in text and "{" not in text


def test_render_rejects_a_missing_template():
  with pytest.raises(ValueError, match="templates"):
    facts.render(RELATIONS["antonym"], "hot", 8)


@pytest.mark.parametrize("reply, aliases, expected", [
    ("The capital of France is Paris.", ("Paris",), True),
    ("PARIS", ("Paris",), True),
    ("paris", ("Paris",), True),
    ("It is the Congo.", ("the Congo", "Congo", "Zaire"), True),  # article dropped on both sides
    ("Zaire", ("the Congo", "Congo", "Zaire"), True),
    ("a Bogota", ("Bogotá",), True),  # accents and articles
    ("Parisian food", ("Paris",), False),  # whole words only
    ("Lyon\nParis", ("Paris",), False),  # the first line counts
    ("", ("Paris",), False),
    ("The symbol is Fe.", ("Fe",), True),
])
def test_is_correct(reply, aliases, expected):
  assert facts.is_correct(reply, aliases) is expected


def test_normalize():
  assert facts.normalize("  The  Congo! ") == "congo"
  assert facts.normalize("San José") == "san jose"
  assert facts.normalize("An apple a day") == "apple day"


def test_quiz_facts_carry_pattern_aliases():
  built = facts.build_facts(["country_capital", "president_successor", "baby_animal", "element_symbol"])
  by_subject = {(f.relation, f.subject): f for f in built}
  assert by_subject[("country_capital", "France")].answer == "Paris"
  washington = by_subject[("president_successor", "George Washington")]
  assert {"John Adams", "Adams"} <= set(washington.aliases)
  # "cub:lion|tiger|bear" splits into one fact per adult animal
  assert by_subject[("baby_animal", "lion")].answer == "cub"
  assert by_subject[("baby_animal", "bear")].answer == "cub"
  assert by_subject[("element_symbol", "Iron")].answer == "Fe"
  assert len({f.id for f in built}) == len(built)


def test_wordnet_facts():
  built = facts.build_facts(["antonym", "hypernym"], min_tagsense=1)
  by_subject = {(f.relation, f.subject): f for f in built}
  assert "cold" in by_subject[("antonym", "hot")].aliases
  assert by_subject[("hypernym", "dog")].aliases  # dog.n.01 -> canine / domestic animal
  assert sum(f.relation == "hypernym" for f in built) > 1000


def test_splits_are_disjoint_and_out_of_domain_never_in_the_pool():
  built = facts.build_facts(["country_capital", "element_symbol", "state_abbreviation"], max_per_relation=30)
  splits = facts.split_facts(built, ["country_capital", "element_symbol"], ["state_abbreviation"], few_shot=2,
                             test_per_relation=5, seed=0)
  shots = [i for ids in splits["shots"].values() for i in ids]
  groups = [set(shots), set(splits["pool"]), set(splits["test_id"]), set(splits["test_ood"])]
  assert sum(map(len, groups)) == len(set().union(*groups))
  assert len(splits["pool"]) == 2 * (30 - 2 - 5)
  assert all(i.startswith("state_abbreviation/") for i in splits["test_ood"])
  with pytest.raises(ValueError, match="both in- and out-of-domain"):
    facts.split_facts(built, ["element_symbol"], ["element_symbol"], few_shot=0, test_per_relation=1, seed=0)


def test_mastery_level_edges():
  edges = (0.0, 0.25, 0.5, 0.75)
  mastery = [0.0, 1e-9, 0.25, 0.2500001, 0.5, 0.75, 0.7500001, 1.0]
  np.testing.assert_array_equal(probing.mastery_level(mastery, edges), [0, 1, 1, 2, 2, 3, 4, 4])
  with pytest.raises(ValueError, match="strictly increasing"):
    probing.mastery_level([0.5], (0.0, 0.5, 0.5, 0.75))
