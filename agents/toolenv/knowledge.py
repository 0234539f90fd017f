"""The offline knowledge the generated tool environments answer from (arXiv 2508.08791, Sec. 3.1: environments
are built around facts a tool can return, so every answer is checkable): relations read from the bsdgames quiz
files (`core.data.load_quizzes`, Debian `bsdgames`; shared/DATA.md).

A relation maps an entity (a key) to an attribute value: the capital of a country, the chemical symbol of an
element, the successor of a US president. Keys and values keep quiz(6)'s answer patterns, so a tool accepts
every spelling the quiz accepts ("Washington", "George Washington") and an answer matches any accepted form.
Relations of one family (all about US states) can be merged into one tool; chains (a state's abbreviation ->
the state -> its capital) make multi-hop questions.
"""

from __future__ import annotations

import dataclasses
import functools
import os

from core.data import load_quizzes
from core.data.quiz import QUIZ_DIR, answer_matches, canonical_text, expand_pattern, normalize_answer


@dataclasses.dataclass(frozen=True)
class Relation:
  name: str
  quizzes: tuple[tuple[str, str, str], ...]  # (quiz, key field, value field)
  family: str  # entity family: relations of one family may merge into one tool
  attribute: str  # what the value is ("capital", "symbol", ...); "reverse" relations look a key up by value
  key_kind: str  # what the input is: "name" for forward relations, else e.g. "abbreviation"
  ref: str  # how a question names the key entity: "{x}" -> "US president John Adams"
  question: str  # the question about one entity, "{x}" its reference
  phrase: str = ""  # how a question names this relation's value, for chains: "the successor of {x}"
  tool: str = ""  # the tool document generation writes for it
  doc: str = ""  # that tool's description


def _r(name, quizzes, family, attribute, key_kind, ref, question, phrase, tool, doc) -> Relation:
  return Relation(name, tuple(quizzes), family, attribute, key_kind, ref, question, phrase, tool, doc)


RELATIONS: tuple[Relation, ...] = (
    _r("african_capital", [("africa", "african", "capital")], "country", "capital", "name", "{x}",
       "What is the capital of {x}?", "", "get_capital_of_african_country",
       "Capital city of an African country."),
    _r("asian_capital", [("asia", "asian", "capital")], "country", "capital", "name", "{x}",
       "What is the capital of {x}?", "", "get_capital_of_asian_country", "Capital city of an Asian country."),
    _r("european_capital", [("europe", "european", "capital")], "country", "capital", "name", "{x}",
       "What is the capital of {x}?", "", "get_capital_of_european_country", "Capital city of a European country."),
    _r("american_capital", [("america", "american", "capital")], "country", "capital", "name", "{x}",
       "What is the capital of {x}?", "", "get_capital_of_american_country",
       "Capital city of a country of the Americas."),
    _r("state_capital", [("state", "state", "capital")], "us_state", "capital", "name", "the US state {x}",
       "What is the capital of {x}?", "", "get_state_capital", "Capital city of a US state."),
    _r("state_abbreviation", [("state", "state", "abbreviation")], "us_state", "abbreviation", "name",
       "the US state {x}", "What is the postal abbreviation of {x}?", "", "get_state_abbreviation",
       "Two-letter postal abbreviation of a US state."),
    _r("state_flower", [("state", "state", "flower")], "us_state", "flower", "name", "the US state {x}",
       "What is the state flower of {x}?", "", "get_state_flower", "Official flower of a US state."),
    _r("state_by_abbreviation", [("state", "abbreviation", "state")], "us_state", "name", "abbreviation",
       "{x}", "Which US state has the postal abbreviation {x}?", "the US state with postal abbreviation {x}",
       "find_state_by_abbreviation", "The US state that has a given postal abbreviation."),
    _r("province_capital", [("province", "province", "capital")], "province", "capital", "name",
       "the Canadian province {x}", "What is the capital of {x}?", "", "get_province_capital",
       "Capital city of a Canadian province."),
    _r("element_symbol", [("elements", "element", "symbol")], "element", "symbol", "name", "the element {x}",
       "What is the chemical symbol of {x}?", "", "get_element_symbol", "Chemical symbol of an element."),
    _r("element_number", [("elements", "element", "number")], "element", "atomic number", "name",
       "the element {x}", "What is the atomic number of {x}?", "", "get_atomic_number",
       "Atomic number of a chemical element."),
    _r("element_weight", [("elements", "element", "weight")], "element", "atomic weight", "name",
       "the element {x}", "What is the atomic weight of {x}?", "", "get_atomic_weight",
       "Standard atomic weight of a chemical element."),
    _r("element_by_symbol", [("elements", "symbol", "element")], "element", "name", "symbol", "{x}",
       "Which element has the chemical symbol {x}?", "the element with chemical symbol {x}",
       "find_element_by_symbol", "The chemical element that has a given symbol."),
    _r("element_by_number", [("elements", "number", "element")], "element", "name", "atomic number", "{x}",
       "Which element has atomic number {x}?", "the element with atomic number {x}", "find_element_by_number",
       "The chemical element that has a given atomic number."),
    _r("president_successor", [("pres", "president", "successor")], "president", "successor", "name",
       "US president {x}", "Who was the successor of {x}?", "the successor of {x}", "get_president_successor",
       "The US president who followed a given president."),
    _r("president_vice", [("pres", "president", "vice")], "president", "vice president", "name",
       "US president {x}", "Who was the vice president of {x}?", "", "get_vice_president",
       "Vice president(s) under a US president."),
    _r("president_term", [("pres", "president", "term")], "president", "term", "name", "US president {x}",
       "In which years did {x} serve?", "", "get_president_term", "Years in office of a US president."),
    _r("sovereign_successor", [("sov", "sovereign", "successor")], "sovereign", "successor", "name",
       "English sovereign {x}", "Who was the successor of {x}?", "the successor of {x}",
       "get_sovereign_successor", "The English or British sovereign who followed a given one."),
    _r("sovereign_century", [("sov", "sovereign", "century")], "sovereign", "century", "name",
       "English sovereign {x}", "In which century did {x} come to the throne?", "", "get_sovereign_century",
       "Century in which a sovereign's reign began."),
    _r("inca_successor", [("inca", "inca", "successor")], "inca", "successor", "name", "Inca ruler {x}",
       "Who was the successor of {x}?", "the successor of {x}", "get_inca_successor",
       "The Inca ruler who followed a given ruler."),
    _r("zodiac_next", [("chinese", "chinese-year", "next")], "zodiac", "next year", "name", "the year of the {x}",
       "Which Chinese zodiac year follows {x}?", "the zodiac year after {x}", "get_next_zodiac_year",
       "The Chinese zodiac animal of the following year."),
    _r("midearth_capital", [("midearth", "middle-earth", "capital")], "midearth", "capital", "name",
       "the Middle-earth realm {x}", "What is the capital of {x}?", "", "get_realm_capital",
       "Capital of a realm of Middle-earth."),
    _r("baby_adult", [("babies", "baby", "adult")], "animal", "adult", "name", "a {x}",
       "What animal's young is called {x}?", "", "get_adult_animal", "The adult animal whose young has a given name."),
    _r("female_form", [("sexes", "male", "female")], "word", "female form", "name", "'{x}'",
       "What is the female form of {x}?", "", "get_female_form", "Female counterpart of a male noun."),
    _r("collective_noun", [("collectives", "individuals", "collective")], "word", "collective noun", "name",
       "{x}", "What is the collective noun for {x}?", "", "get_collective_noun",
       "Collective noun for a group of animals or people."),
    _r("flower_meaning", [("flowers", "flowers", "meaning")], "flower", "meaning", "name", "the {x}",
       "What does {x} mean in the language of flowers?", "", "get_flower_meaning",
       "Meaning of a flower in the Victorian language of flowers."),
    _r("morse_code", [("morse", "clear", "morse")], "morse", "morse code", "name", "the character {x}",
       "What is the Morse code for {x}?", "", "encode_morse", "Morse code of a letter or digit."),
)
BY_NAME = {r.name: r for r in RELATIONS}


@dataclasses.dataclass(frozen=True)
class Fact:
  key: str  # canonical text of the key pattern (how questions name it)
  key_pattern: str
  value: str  # canonical text of the value pattern (what tools return)
  value_pattern: str


# Quiz files write "gok" (god only knows) for unknown values, and a few accents as overstrikes (backspaces).
_UNKNOWN = {"", "gok", "?", "unknown", "none"}


class KnowledgeBase:
  """Facts per relation, keyed by every accepted spelling of the key."""

  def __init__(self, quizzes: dict[str, tuple[dict[str, str], ...]]):
    self.facts: dict[str, tuple[Fact, ...]] = {}
    self._index: dict[str, dict[str, Fact]] = {}
    for rel in RELATIONS:
      facts, index = [], {}
      for quiz, key_field, value_field in rel.quizzes:
        for record in quizzes.get(quiz, ()):
          key_pattern, value_pattern = record.get(key_field, ""), record.get(value_field, "")
          if not key_pattern.strip() or not value_pattern.strip():
            continue
          try:
            fact = Fact(canonical_text(key_pattern), key_pattern, canonical_text(value_pattern), value_pattern)
            spellings = {normalize_answer(s) for s in expand_pattern(key_pattern)}
          except ValueError:
            continue  # a malformed pattern in the quiz file: skip that record
          if (normalize_answer(fact.value) in _UNKNOWN or any(ord(c) < 32 for c in key_pattern + value_pattern)
              or not fact.key.strip() or any(s in index for s in spellings)):
            continue  # ambiguous keys would make a tool's answer depend on record order
          facts.append(fact)
          for s in spellings:
            index[s] = fact
      self.facts[rel.name] = tuple(facts)
      self._index[rel.name] = index

  def lookup(self, relation: str, key: str) -> Fact | None:
    return self._index[relation].get(normalize_answer(key))

  def reverse(self, relation: str, value: str) -> Fact | None:
    """The fact whose value `value` matches (a tool's reverse mode, added by functional generalisation)."""
    for fact in self.facts[relation]:
      if answer_matches(fact.value_pattern, value):
        return fact
    return None

  def spellings(self, relation: str) -> list[str]:
    return sorted(self._index[relation])


def load_knowledge(quiz_dir: str | None = None) -> KnowledgeBase:
  """The knowledge base of the quiz files in `quiz_dir` (default: the system's, `core.data.quiz.QUIZ_DIR`; raises
  DataSourceMissingError naming the fix when they are missing). One per folder, cached."""
  return _load_knowledge(os.path.abspath(quiz_dir or QUIZ_DIR))


@functools.lru_cache(maxsize=4)
def _load_knowledge(quiz_dir: str) -> KnowledgeBase:
  # the system folder goes in as None so that a missing one is reported with its install command
  return KnowledgeBase(load_quizzes(None if quiz_dir == os.path.abspath(QUIZ_DIR) else quiz_dir))


def chains(kb: KnowledgeBase | None = None) -> list[tuple[str, str]]:
  """(first, second) relation pairs where the first one's value is the second one's key entity: the multi-hop
  questions. Pairs are kept only if at least 5 facts chain in `kb` (default: the system's quiz files)."""
  return list(_chains(kb if kb is not None else load_knowledge()))


@functools.lru_cache(maxsize=4)
def _chains(kb: KnowledgeBase) -> tuple[tuple[str, str], ...]:
  out = []
  for first in RELATIONS:
    if not first.phrase:
      continue
    for second in RELATIONS:
      if second.family != first.family or second.key_kind != "name" or second.attribute == first.key_kind:
        continue  # (a second hop that only gives back the first hop's input is no question)
      linked = sum(1 for f in kb.facts[first.name] if kb.lookup(second.name, f.value) is not None)
      if linked >= 5:
        out.append((first.name, second.name))
  return tuple(out)
