"""Knowledge set: templates, answer normalisation (aliases, case, articles), facts from the quizzes and WordNet,
splits, and the mastery level edges."""

import collections
import os
import unicodedata

import numpy as np
import pytest

from core import config as config_lib
from sft_knowledge import facts, pipeline, probing
from sft_knowledge.templates import RELATIONS

FULL_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "sft_knowledge", "full.py")


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


@pytest.mark.parametrize("reply, aliases, question, expected", [
    ("The capital of France is Paris.", ("Paris",), "", True),
    ("PARIS", ("Paris",), "", True),
    ("paris", ("Paris",), "", True),
    ("It is the Congo.", ("the Congo", "Congo", "Zaire"), "", True),  # article dropped on both sides
    ("Zaire", ("the Congo", "Congo", "Zaire"), "", True),
    ("a Bogota", ("Bogotá",), "", True),  # accents and articles
    ("Parisian food", ("Paris",), "", False),  # whole words only
    ("Lyon\nParis", ("Paris",), "", False),  # the first line counts
    ("", ("Paris",), "", False),
    ("The symbol is Fe.", ("Fe",), "", True),
    # A reply that echoes the question is no answer, even where the answer is written in it ...
    ("Djibouti is a country in East Africa", ("Djibouti",), "What is the capital of Djibouti?", False),
    ("Guinea-Bissau lies in West Africa.", ("Bissau",), "What is the capital of Guinea-Bissau?", False),
    ("A genre is a kind of art.", ("kind", "sort"), "What kind of thing is a genre?", False),
    ("A genre is a sort of art.", ("kind", "sort"), "What kind of thing is a genre?", True),
    # ... but an answer that contains a word of the question is.
    ("Mexico is a big country.", ("Mexico City",), "What is the capital of Mexico?", False),
    ("The capital of Mexico is Mexico City.", ("Mexico City",), "What is the capital of Mexico?", True),
    # Aliases of one or two characters are common words too: as written, ending a phrase, not opening a sentence.
    ("The chemical symbol of helium is He.", ("He",), "", True),
    ("He", ("He",), "", True),
    ("He is a noble gas.", ("He",), "", False),
    ("The chemical symbol of iodine is I.", ("I",), "", True),
    ("I'm not sure.", ("I",), "", False),
    ("I think it is Fe.", ("I",), "", False),
    ("No, I do not know.", ("No",), "", False),
    ("Indiana is in the Midwest.", ("IN",), "", False),
    ("Its postal code is IN.", ("IN",), "", True),
    ("Tell us, please.", ("US",), "", False),
    ("Ohio is part of the US.", ("US",), "", True),
    ("Turn it on and off again.", ("on",), "", False),
    ("The opposite of off is on.", ("on",), "", True),
    ("Gold has 79 protons.", ("79",), "", True),  # digits are no words: anywhere as whole tokens
    ("The atomic mass of hydrogen is 1.008.", ("1",), "", False),  # ... but numbers as numbers
    ("Hydrogen has atomic number 2, not 1.5.", ("1",), "", False),
    ("Its atomic number is 103.", ("103",), "", True),
    ("Its atomic mass is 103.5.", ("103",), "", False),
    ("On.", ("on",), "", True),  # a bare reply in any case ...
    ("ok", ("OK",), "", False),  # ... unless the alias has capitals: a symbol or code as written
    ("no.", ("No",), "", False),
    ("OK.", ("OK",), "", True),
    # A negated restatement of an antonym question does not answer it
    ("The opposite of uncertain is not certain.", ("certain",), "What is the opposite of uncertain?", False),
    ("It is non-functional.", ("functional",), "What is the opposite of nonfunctional?", False),
    ("The opposite of uncertain is certain.", ("certain",), "What is the opposite of uncertain?", True),
    ('The chemical symbol of sodium is "Na".', ("Na",), "", True),  # quoted or bold, then punctuation
    ("The chemical symbol of sodium is **Na**.", ("Na",), "", True),
    # The question is checked by the same rule: "as" in it is not the symbol "As".
    ("Arsenic is written As.", ("As",), "How is Arsenic written as a chemical symbol?", True),
    # ... and may open a reply as a label: "Na (sodium)" (the phrase-end rule's own example), "Na: sodium"
    ("Na (sodium)", ("Na",), "", True),
    ("Fe: iron.", ("Fe",), "", True),
])
def test_is_correct(reply, aliases, question, expected):
  assert facts.is_correct(reply, aliases, question) is expected


def test_normalize():
  assert facts.normalize("  The  Congo! ") == "congo"
  assert facts.normalize("San José") == "san jose"
  assert facts.normalize("An apple a day") == "apple day"


def test_quiz_facts_carry_pattern_aliases():
  built = facts.build_facts(["country_capital", "president_successor", "baby_animal", "element_symbol"])
  by_subject = {(f.relation, f.subject): f for f in built}
  assert by_subject[("country_capital", "France")].answer == "Paris"
  washington = by_subject[("president_successor", "George Washington")]
  assert {"John Adams", "J Adams"} <= set(washington.aliases)
  # "cub:lion|tiger|bear" splits into one fact per adult animal
  assert by_subject[("baby_animal", "lion")].answer == "cub"
  assert by_subject[("baby_animal", "bear")].answer == "cub"
  assert by_subject[("element_symbol", "Iron")].answer == "Fe"
  assert len({f.id for f in built}) == len(built)


def test_no_spelling_of_a_person_names_someone_else():
  """Quiz patterns make surnames and shortened names accepted answers; where those name another president or vice
  president, a reply naming the wrong person would count. Such spellings, pattern fragments and "no vice
  president" facts are dropped; a second complete answer (a president with two vice presidents) is kept."""
  built = facts.build_facts(["president_successor", "president_vice"])
  by_subject = {(f.relation, f.subject): f for f in built}
  successor = lambda s: by_subject[("president_successor", s)].aliases
  vice = lambda s: by_subject[("president_vice", s)].aliases
  assert not facts.is_correct("John Adams succeeded James Monroe.", successor("James Monroe"))
  assert facts.is_correct("John Quincy Adams", successor("James Monroe"))
  assert not facts.is_correct("George W. Bush.", successor("Ronald Wilson Reagan"))
  assert facts.is_correct("George W. Bush.", successor("William Jefferson Clinton"))
  assert not facts.is_correct("Andrew Johnson", successor("John Fitzgerald Kennedy"))
  assert not facts.is_correct("William Jefferson Clinton", successor("John Adams"))
  assert not facts.is_correct("I don't know, maybe Martin Luther King Jr.", vice("Barack Hussein Obama II"))
  assert facts.is_correct("Joe Biden", vice("Barack Hussein Obama II"))
  assert facts.is_correct("George Clinton", vice("Thomas Jefferson"))  # his second vice president
  assert facts.is_correct("Grover Cleveland", successor("Chester Alan Arthur"))  # one person, two terms
  assert ("president_vice", "John Tyler") not in by_subject  # "None (1841-5)" is no answer
  assert not [a for f in built for a in f.aliases if a != " ".join(a.split()) or facts.normalize(a) in ("", "jr")]


def test_quiz_facts_have_clean_accented_text():
  built = facts.build_facts(["country_capital", "element_symbol", "state_capital"])
  answers = {f.subject: f.answer for f in built}
  # The quiz files write accents as overstrikes ("Asunci'\bon"); no control character may reach an SFT target.
  assert (answers["Paraguay"], answers["Iceland"], answers["Colombia"]) == ("Asunción", "Reykjavík", "Bogotá")
  assert answers["Côte d'Ivoire"] == "Yamoussoukro"
  assert facts.normalize(answers["Colombia"]) == "bogota"
  for f in built:
    for text in (f.subject, f.answer) + f.aliases:
      assert not any(unicodedata.category(c) == "Cc" for c in text), (f.id, text)
  assert answers["Lawrencium"] == "Lr"  # the quiz predates the symbol's 1963 change from Lw


def test_facts_never_hold_their_answer_in_their_question():
  built = facts.build_facts(["country_capital", "province_capital", "hypernym"])
  subjects = {(f.relation, f.subject) for f in built}
  assert not {("country_capital", "Djibouti"), ("country_capital", "Singapore"), ("province_capital", "Quebec"),
              ("hypernym", "genre")} & subjects
  assert ("country_capital", "Mexico") in subjects  # Mexico City is not written in its questions
  for f in built:
    if f.relation == "hypernym":
      continue  # 8,946 facts: the quiz relations suffice for this check
    for t in range(8):
      question = facts.render(RELATIONS[f.relation], f.subject, t)
      assert not facts.is_correct(question, f.aliases), (f.id, question)


def test_quiz_quirks_make_no_facts_of_their_own():
  built = facts.build_facts(["state_flower", "collective_noun"])
  by_subject = {(f.relation, f.subject): f for f in built}
  # "gok" (God only knows) is bsdgames' placeholder, not a flower: Arkansas and Minnesota have no fact
  assert not any(f.answer == "gok" for f in built)
  assert ("state_flower", "Arkansas") not in by_subject and ("state_flower", "Minnesota") not in by_subject
  # the standard spelling is taught, the quiz's still accepted
  maryland = by_subject[("state_flower", "Maryland")]
  assert maryland.answer == "black-eyed susan" and "blackeyed susan" in maryland.aliases
  assert facts.is_correct("The Black-eyed Susan.", maryland.aliases)
  assert by_subject[("state_flower", "Wyoming")].answer == "indian paintbrush"
  # "{H|h}uns:horde" is one subject, not "Huns" and "uns"
  assert [f.subject for f in built if f.answer == "horde"] == ["Huns"]


def test_wordnet_subjects_are_spelled_as_their_synsets_write_them():
  built = facts.build_facts(["member_of"], min_tagsense=1)
  subjects = {f.subject for f in built}
  assert {"Tunisia", "Holland"} <= subjects and not {"tunisia", "holland"} & subjects  # "A tunisia is ..." before
  assert "ant" in subjects  # common nouns stay lower case


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


def test_symmetric_pairs_stay_in_one_part():
  """hot -> cold and cold -> hot go to the same part: a test fact's reverse is never an exemplar or trained on."""
  words = [("hot", "cold"), ("up", "down"), ("wet", "dry"), ("big", "small"), ("fast", "slow"), ("old", "new"),
           ("early", "late"), ("light", "dark"), ("hard", "soft"), ("rich", "poor")]
  rows = words + [(b, a) for a, b in words] + [("good", "bad"), ("high", "low"), ("full", "empty")]
  built = [facts.Fact(f"antonym/{i}", "antonym", s, o, (o,)) for i, (s, o) in enumerate(rows)]
  for seed in range(10):
    splits = facts.split_facts(built, ["antonym"], [], few_shot=1, test_per_relation=3, seed=seed)
    assert len(splits["shots"]["antonym"]) == 1 and len(splits["test_id"]) == 3  # singles fill the odd places
    part_of = {i: part for part in ("pool", "test_id") for i in splits[part]}
    part_of.update({i: "shots" for i in splits["shots"]["antonym"]})
    for i in range(len(words)):
      assert part_of[f"antonym/{i}"] == part_of[f"antonym/{i + len(words)}"], (seed, words[i])


def test_small_relations_test_on_what_they_have():
  built = facts.build_facts(["province_capital", "country_capital"])
  splits = facts.split_facts(built, ["country_capital"], ["province_capital"], few_shot=2, test_per_relation=40,
                             seed=0)
  assert len(splits["test_ood"]) == 11 - 2 and len(splits["test_id"]) == 40  # (Canada is no province)
  with pytest.raises(ValueError, match="too few"):
    facts.split_facts(built, ["country_capital"], ["province_capital"], few_shot=12, test_per_relation=40, seed=0)


def test_full_config_builds_its_data(tmp_path):
  """The full config's split: every relation tested (small ones on all their facts), no antonym test fact whose
  reverse is in the SFT pool."""
  config = config_lib.load_config(FULL_CONFIG)
  data = pipeline.build_data(config, str(tmp_path))
  by_id = {d["id"]: facts.Fact.from_dict(d) for d in data["facts"]}
  tested = collections.Counter(by_id[i].relation for i in data["splits"]["test_id"] + data["splits"]["test_ood"])
  counts = data["facts_per_relation"]
  assert tested == {r: min(40, counts[r]) for r in counts}
  assert counts["female_form"] < 40 and counts["province_capital"] < 40
  antonyms = [by_id[i] for i in data["splits"]["test_id"] if by_id[i].relation == "antonym"]
  assert len(antonyms) == 40
  # No pool fact pairs a test fact's subject with any of its answers, either way round, in any relation (WordNet's
  # "berlin is part of Germany" against the test fact "Germany -> Berlin"; an antonym through a second answer).
  pool = {(facts.normalize(by_id[i].subject), facts.normalize(a)) for i in data["splits"]["pool"]
          for a in by_id[i].aliases}
  tests = [by_id[i] for i in data["splits"]["test_id"] + data["splits"]["test_ood"]]
  assert not [t.id for t in tests for a in t.aliases
              if {(facts.normalize(t.subject), facts.normalize(a)), (facts.normalize(a), facts.normalize(t.subject))}
              & pool]


def test_mastery_level_edges():
  edges = (0.0, 0.25, 0.5, 0.75)
  mastery = [0.0, 1e-9, 0.25, 0.2500001, 0.5, 0.75, 0.7500001, 1.0]
  np.testing.assert_array_equal(probing.mastery_level(mastery, edges), [0, 1, 1, 2, 2, 3, 4, 4])
  with pytest.raises(ValueError, match="strictly increasing"):
    probing.mastery_level([0.5], (0.0, 0.5, 0.5, 0.75))
