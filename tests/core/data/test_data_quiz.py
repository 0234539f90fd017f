"""The bsdgames quiz files and the quiz(6) answer pattern language."""

import unicodedata

import pytest

from core import data
from core.data import quiz


@pytest.mark.parametrize("pattern,expected", [
    ("Algiers", ("Algiers",)),
    ("{the }Congo|Zaire", ("the Congo", "Congo", "Zaire")),
    ("strain['|e]d", ("strain'd", "strained")),
    ("{a|b}c", ("ac", "bc", "c")),
    ("M[iddle{-}Earth|E]", ("Middle-Earth", "MiddleEarth", "ME")),
    ("1801-{{18}0}9", ("1801-1809", "1801-09", "1801-9")),
    ("forget{-| }me{-| }not", ("forget-me-not", "forget-me not", "forget-menot", "forget me-not",
                               "forget me not", "forget menot", "forgetme-not", "forgetme not",
                               "forgetmenot")),
    (r"a\:b\|c\\", ("a:b|c\\",)),
    ("{a}{a}", ("aa", "a", "")),  # duplicates listed once
    # quiz.c: the closing bracket decides; `}` makes a group optional whatever opened it.
    ("[Squares|n[**|^]2} base 8|octal squares",
     ("Squares base 8", "n**2 base 8", "n^2 base 8", " base 8", "octal squares")),
    ("{a]b", ("ab",)),
])
def test_expand_pattern(pattern, expected):
  assert quiz.expand_pattern(pattern) == expected
  assert quiz.canonical_text(pattern) == expected[0]


@pytest.mark.parametrize("pattern,expected", [
    ("{H|h}uns", ("Huns",)),  # a group spells one thing two ways
    ("Netherlands|Holland", ("Netherlands", "Holland")),
    ("{the }Congo|Zaire", ("the Congo", "Zaire")),
    (r"a\|b|c", ("a|b", "c")),  # an escaped bar separates nothing
    ("[a|b]c|d", ("ac", "d")),
])
def test_top_level_alternatives(pattern, expected):
  assert quiz.top_level_alternatives(pattern) == expected


@pytest.mark.parametrize("pattern", ["{a", "a}", "[a|b", "a:b", "a\\", "{a}" * 20])
def test_malformed_or_huge_patterns(pattern):
  with pytest.raises(ValueError, match="Pattern"):
    quiz.expand_pattern(pattern)


def test_answer_matches_normalises_case_and_whitespace():
  pattern = "{G{eorge} }Washington"
  for answer in ["George Washington", "george washington", "  G   WASHINGTON ", "washington"]:
    assert data.answer_matches(pattern, answer), answer
  for answer in ["g. washington", "washington george", "georgewashington", ""]:
    assert not data.answer_matches(pattern, answer), answer
  # quiz.c's first-fit matcher rejects this; the pattern language accepts it.
  assert data.answer_matches("{a}ab", "ab")
  assert data.answer_matches("x { y} z", "X Z")


def test_file_syntax_helpers():
  assert quiz.split_fields(r"a\:b:c\\:d") == ["a\\:b", "c\\\\", "d"]
  assert quiz.split_fields("only") == ["only"]
  assert quiz.join_continuations("a:\\\nb\nc\\\n\\\nd\n") == ["a:b", "cd"]


def test_index_names_fields():
  index = data.quiz_index()
  assert len(index) == 32
  assert index["africa"] == {"african": "Africa{n}", "capital": "cap{ital}"}
  assert list(index["pres"]) == ["president", "term", "vice", "successor"]
  assert list(index["elements"]) == ["symbol", "number", "weight", "element"]
  assert data.answer_matches(index["africa"]["capital"], "cap")  # how quiz resolves typed categories
  assert data.answer_matches(index["midearth"]["middle-earth"], "ME")


def test_quiz_records():
  quizzes = data.load_quizzes()
  assert set(quizzes) == set(data.quiz_index())
  assert sum(len(records) for records in quizzes.values()) == 1608
  assert data.load_quiz("africa")[0] == {"african": "Algeria", "capital": "Algiers"}
  assert data.load_quiz("pres")[0] == {"president": "{G{eorge} }Washington", "term": "1789-{17}97",
                                       "vice": "{J{ohn} }Adams", "successor": "{J{ohn} }Adams"}
  # A record continued over four lines with trailing backslashes.
  assert data.load_quiz("bard")[0] == {
      "shakespeare-lines": "The quality of mercy is not strain['|e]d",
      "next": "It droppeth as the gentle rain from heaven",
      "work": "{The }Merchant{ of Venice{ IV-i}}", "character": "Portia"}
  hydrogen = data.load_quiz("elements")[0]
  assert (hydrogen["symbol"], hydrogen["number"], hydrogen["element"]) == ("H", "1", "Hydrogen")
  # ucc's `3-201:transfer: right to indorsement` has an unescaped colon; quiz reads the extra field
  # as a third one and ignores it.
  assert {"section": "3-201", "uniform-criminal-code": "transfer"} in data.load_quiz("ucc")
  for name, records in quizzes.items():
    fields = list(data.quiz_index()[name])
    for record in records:
      assert list(record) == fields and any(record.values())
      for pattern in record.values():
        if pattern:
          assert data.answer_matches(pattern, data.canonical_text(pattern)), (name, pattern)


def test_overstruck_accents_become_accented_letters():
  # The files write accents for a printing terminal: letter, backspace, accent (or accent first).
  assert (quiz.resolve_overstrikes("Asunci'\bon Asuncio\b'n C^\bote K[o\b/|/\bo]")
          == "Asunción Asunción Côte K[ø|ø]")
  assert quiz.resolve_overstrikes("x\by") == "y"  # anything else: what a terminal shows, no backspace left
  capitals = {r["american"]: r["capital"] for r in data.load_quiz("america")}
  assert data.expand_pattern(capitals["Colombia"]) == ("Bogotá", "Bogota")
  assert data.expand_pattern(capitals["Paraguay"]) == ("Asunción", "Asuncion")
  capitals = {r["european"]: r["capital"] for r in data.load_quiz("europe")}
  assert data.expand_pattern(capitals["Iceland"]) == ("Reykjavík", "Reykjavik")
  for name, records in data.load_quizzes().items():
    for record in records:
      for text in list(record) + list(record.values()):
        assert not any(unicodedata.category(c) == "Cc" for c in text), (name, text)


def test_quiz_from_own_folder_and_missing_package(tmp_path, monkeypatch):
  (tmp_path / "index").write_text("/somewhere/else/planets:planet{s}:moon{s}\n")
  (tmp_path / "planets").write_text("Earth:{the }Moon|Luna\nMars:Phobos|Deimos\n\n")
  assert data.quiz_index(tmp_path) == {"planets": {"planets": "planet{s}", "moons": "moon{s}"}}
  records = data.load_quiz("planets", quiz_dir=tmp_path)
  assert records == ({"planets": "Earth", "moons": "{the }Moon|Luna"},
                     {"planets": "Mars", "moons": "Phobos|Deimos"})
  assert data.answer_matches(records[0]["moons"], "the moon")
  with pytest.raises(ValueError, match="Unknown quiz"):
    data.load_quiz("africa", quiz_dir=tmp_path)
  partial = tmp_path / "partial"  # the user's own folder, a file missing: no reinstall of bsdgames would help
  partial.mkdir()
  (partial / "index").write_text("/x/comets:comet{s}:period{s}\n")
  with pytest.raises(data.DataSourceMissingError, match=r"comets \(listed in the index\) is missing. Put it in"):
    data.load_quiz("comets", quiz_dir=partial)
  monkeypatch.setenv("HOME", str(tmp_path.parent))
  assert data.load_quiz("planets", quiz_dir=f"~/{tmp_path.name}") == records  # "~" as the config check reads it
  monkeypatch.setattr(quiz, "QUIZ_DIR", str(tmp_path / "absent"))
  with pytest.raises(data.DataSourceMissingError, match="sudo apt-get install -y bsdgames"):
    data.load_quiz("africa")
