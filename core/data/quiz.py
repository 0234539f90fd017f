"""The BSD `quiz(6)` fact files, and their answer pattern language.

Source: the Debian package `bsdgames`, folder `/usr/share/games/bsdgames/quiz/` (DATA.md): about
30 files of colon-separated records (capitals by continent, US presidents, states, chemical
elements, Latin, Shakespeare, ...) and an `index` whose lines name each file's fields.

File syntax, as read by quiz.c (`get_file`, `next_cat`):
  - a line ending in a backslash continues on the next line: the backslash is removed and the next
    line appended directly (no space or newline in between);
  - fields are separated by unescaped colons; a backslash makes the next character literal, so
    `\\:` is a colon inside a field;
  - an index line is `path:field:field...`; each field is itself a pattern for the category names a
    player may type (`cap{ital}`).

Pattern language (quiz(6) and rxp.c), used for answers and category names:
  - `a|b`       alternatives; at the top level they span the whole field;
  - `[a|b]`     a group of alternatives inside a longer text, e.g. `strain['|e]d`;
  - `{a}`       an optional part, the same as `[a|]`; `{a|b}` is `[a|b|]`;
  - `\\c`        the character c itself (escapes `| { } [ ] : \\`).
As in quiz.c's parser, `{` and `[` both open a group and it is the closing bracket that decides:
a group closed by `}` is optional, one closed by `]` is not.  One real record relies on it
(seq-hard: `[Squares|n[**|^]2} base 8|octal squares`).
Accents are written for a printing terminal, as overstrikes: letter, backspace, accent or the reverse
(`Bogot['\\ba|a\\b'|a]`); `load_quiz` turns each into the accented letter ("Bogotá"), so no pattern it
returns holds a control character.
A pattern is matched against the whole answer, ignoring upper/lower case.  quiz.c's matcher tries
alternatives in order and commits to the first that fits, so it wrongly rejects a few answers
(`{a}ab` against "ab"); `answer_matches` accepts exactly the strings the pattern describes.
When quiz shows a field as a question it prints the pattern with the first alternative of every
group taken (`canonical_text`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import re
import unicodedata

from core.data import errors

QUIZ_DIR = "/usr/share/games/bsdgames/quiz"
# Expanding a pattern enumerates every accepted answer; the real files stay far below this.
MAX_EXPANSIONS = 100_000


@dataclasses.dataclass(frozen=True)
class _Group:
  """Alternatives; each alternative is a sequence of parts (str literals or nested groups)."""
  alternatives: tuple[tuple[str | _Group, ...], ...]


def _parse(pattern: str) -> _Group:
  position = 0

  def alternatives(nested: bool) -> tuple[list[tuple[str | _Group, ...]], str | None]:
    """Parses up to the closer of the current group; returns the alternatives and that closer."""
    nonlocal position
    result: list[list[str | _Group]] = [[]]
    while position < len(pattern):
      char = pattern[position]
      position += 1
      if char == "\\":
        if position == len(pattern):
          raise ValueError(f"Pattern {pattern!r} ends with an escaping backslash.")
        _append_literal(result[-1], pattern[position])
        position += 1
      elif char in "{[":
        inner, closed_by = alternatives(nested=True)
        if closed_by == "}":
          inner.append(())
        result[-1].append(_Group(tuple(inner)))
      elif char == "|":
        result.append([])
      elif char in "}]":
        if not nested:
          raise ValueError(f"Pattern {pattern!r} has an unmatched {char!r} at position {position - 1}.")
        return [tuple(parts) for parts in result], char
      elif char == ":":
        raise ValueError(f"Pattern {pattern!r} holds an unescaped ':' (a field separator); "
                         "split records with `split_fields` first.")
      else:
        _append_literal(result[-1], char)
    if nested:
      raise ValueError(f"Pattern {pattern!r} has an unclosed group.")
    return [tuple(parts) for parts in result], None

  return _Group(tuple(alternatives(nested=False)[0]))


def _append_literal(parts: list[str | _Group], char: str) -> None:
  # Runs of literal characters are kept as one string, so expansion multiplies groups, not letters.
  if parts and isinstance(parts[-1], str):
    parts[-1] += char
  else:
    parts.append(char)


def _count(node: str | _Group) -> int:
  if isinstance(node, str):
    return 1
  return sum(math.prod(_count(part) for part in alternative) for alternative in node.alternatives)


def _expand(node: str | _Group) -> list[str]:
  if isinstance(node, str):
    return [node]
  out = []
  for alternative in node.alternatives:
    out.extend("".join(parts) for parts in itertools.product(*(_expand(part) for part in alternative)))
  return out


@functools.lru_cache(maxsize=4096)
def expand_pattern(pattern: str) -> tuple[str, ...]:
  """Every answer `pattern` accepts, exactly as written (case kept), without duplicates.

  The first is `canonical_text(pattern)`; the rest follow in the order the alternatives are
  written.  E.g. `expand_pattern("{the }Congo|Zaire") == ("the Congo", "Congo", "Zaire")`.
  Raises ValueError on a malformed pattern or one with more than MAX_EXPANSIONS answers.
  """
  tree = _parse(pattern)
  if _count(tree) > MAX_EXPANSIONS:
    raise ValueError(f"Pattern {pattern!r} describes more than {MAX_EXPANSIONS} answers.")
  return tuple(dict.fromkeys(_expand(tree)))


def canonical_text(pattern: str) -> str:
  """The text quiz prints for `pattern`: the first alternative of every group, optional parts
  included (quiz.c's `rxp_expand`): "George Washington" for `{G{eorge} }Washington`."""
  return expand_pattern(pattern)[0]


def top_level_alternatives(pattern: str) -> tuple[str, ...]:
  """The canonical text of each top-level alternative of `pattern`, the separate things a field names: "Netherlands|
  Holland" names two, "{H|h}uns" one ("Huns"; its group only spells it two ways)."""
  return tuple(dict.fromkeys(_canonical(_Group((alternative,))) for alternative in _parse(pattern).alternatives))


def _canonical(node: str | _Group) -> str:
  if isinstance(node, str):
    return node
  return "".join(_canonical(part) for part in node.alternatives[0])


def normalize_answer(text: str) -> str:
  """Lower case, whitespace runs collapsed to one space, no leading or trailing whitespace."""
  return " ".join(text.lower().split())


@functools.lru_cache(maxsize=4096)
def _accepted(pattern: str) -> frozenset[str]:
  return frozenset(normalize_answer(answer) for answer in expand_pattern(pattern))


def answer_matches(pattern: str, text: str) -> bool:
  """Whether `text` is an answer `pattern` accepts, ignoring case and differences in whitespace
  (both sides are compared after `normalize_answer`)."""
  return normalize_answer(text) in _accepted(pattern)


def split_fields(line: str) -> list[str]:
  """Splits a record at its unescaped colons; escapes stay in the fields (they are pattern
  syntax), so `split_fields("a\\:b:c") == ["a\\:b", "c"]`."""
  fields, current, escaped = [], [], False
  for char in line:
    if char == ":" and not escaped:
      fields.append("".join(current))
      current = []
      continue
    current.append(char)
    escaped = char == "\\" and not escaped
  fields.append("".join(current))
  return fields


def join_continuations(text: str) -> list[str]:
  """The logical lines of a quiz file: a line ending in a backslash loses it and absorbs the next
  line (repeatedly), as quiz.c's `get_file` does."""
  lines: list[str] = []
  continuing = False
  for line in text.split("\n"):
    if continuing:
      lines[-1] = lines[-1][:-1] + line
    else:
      lines.append(line)
    continuing = lines[-1].endswith("\\")
  if lines and lines[-1] == "":
    lines.pop()  # the file's final newline
  return lines


# Overstrike accent -> combining mark; "/" has no combining form that composes (ø has no decomposition).
_COMBINING = {"'": "\u0301", "`": "\u0300", "^": "\u0302", "~": "\u0303", '"': "\u0308", ":": "\u0308",
              ",": "\u0327", "°": "\u030a"}
_STROKED = {"o": "ø", "O": "Ø"}
_MARKS = re.escape("".join(_COMBINING) + "/")
_OVERSTRIKE = re.compile(rf"([A-Za-z])\x08([{_MARKS}])|([{_MARKS}])\x08([A-Za-z])")


def _accent(match: re.Match) -> str:
  letter, mark = (match[1], match[2]) if match[1] else (match[4], match[3])
  if mark == "/":
    return _STROKED.get(letter, letter)
  return unicodedata.normalize("NFC", letter + _COMBINING[mark])


def resolve_overstrikes(text: str) -> str:
  """Overstruck accents as accented letters: "Asunci'\\bon" and "Asuncio\\b'n" -> "Asunción". Any other
  backspace keeps what a terminal would show, the character typed over: "x\\by" -> "y"."""
  return re.sub(".?\x08", "", _OVERSTRIKE.sub(_accent, text))


def _read_text(path: str) -> str:
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError:
    text = raw.decode("latin-1")
  return resolve_overstrikes(text)


def _quiz_dir(quiz_dir: str | os.PathLike | None) -> str:
  folder = QUIZ_DIR if quiz_dir is None else os.path.expanduser(os.fspath(quiz_dir))
  if not os.path.isfile(os.path.join(folder, "index")):
    fix = (f"Install it with: {errors.apt_install_hint('bsdgames')}" if quiz_dir is None
           else "Point quiz_dir at a folder holding an `index` and the quiz files it names")
    raise errors.DataSourceMissingError(f"The quiz index {os.path.join(folder, 'index')} is missing. {fix}.")
  return folder


def quiz_index(quiz_dir: str | os.PathLike | None = None) -> dict[str, dict[str, str]]:
  """The subjects listed in the quiz `index`, in its order.

  Returns {quiz name: {field name: category pattern}}.  The quiz name is the data file's base
  name (the index holds absolute paths; the file is looked up in `quiz_dir`, default QUIZ_DIR).
  A field name is `canonical_text` of its category pattern, lower-cased: for
  `/usr/.../africa:Africa{n}:cap{ital}` the fields are {"african": "Africa{n}", "capital": "cap{ital}"};
  `answer_matches(pattern, "cap")` tells which field a typed category names, as quiz does.
  """
  return {name: dict(fields) for name, fields in _index(_quiz_dir(quiz_dir)).items()}


@functools.lru_cache(maxsize=None)
def _index(folder: str) -> dict[str, tuple[tuple[str, str], ...]]:
  index = {}
  for line in join_continuations(_read_text(os.path.join(folder, "index"))):
    if not line.strip():
      continue
    path, *patterns = split_fields(line)
    names = [canonical_text(p).lower() for p in patterns]
    if len(set(names)) != len(names):
      raise ValueError(f"Quiz index line {line!r} names two fields the same.")
    index[os.path.basename(path)] = tuple(zip(names, patterns))
  return index


def load_quiz(name: str, quiz_dir: str | os.PathLike | None = None) -> tuple[dict[str, str], ...]:
  """The records of one quiz file, in file order (cached).

  Each record maps every field name of `quiz_index()[name]` to that field's answer pattern as
  written in the file (continuations joined, escapes kept): e.g. for "africa",
  {"african": "Algeria", "capital": "Algiers"}; for "pres",
  {"president": "{G{eorge} }Washington", "term": "1789-{17}97", ...}.  A field the line leaves out
  is "" (quiz never asks an empty field); fields beyond the index's are dropped, as quiz ignores
  them; blank lines are skipped.  Show a field with `canonical_text`, check an answer with
  `answer_matches`.
  """
  folder = _quiz_dir(quiz_dir)
  return tuple(dict(record) for record in _records(folder, name))


@functools.lru_cache(maxsize=None)
def _records(folder: str, name: str) -> tuple[tuple[tuple[str, str], ...], ...]:
  index = _index(folder)
  if name not in index:
    raise ValueError(f"Unknown quiz {name!r}; the index in {folder} lists {sorted(index)}.")
  path = os.path.join(folder, name)
  if not os.path.isfile(path):
    fix = ("Reinstall it with: sudo apt-get install --reinstall -y bsdgames" if folder == QUIZ_DIR else
           f"Put it in {folder}, or drop its line from that folder's index")
    raise errors.DataSourceMissingError(f"Quiz file {path} (listed in the index) is missing. {fix}.")
  names = [field for field, _ in index[name]]
  records = []
  for line in join_continuations(_read_text(path)):
    values = split_fields(line)[:len(names)]
    values += [""] * (len(names) - len(values))
    if any(values):
      records.append(tuple(zip(names, values)))
  return tuple(records)


def load_quizzes(quiz_dir: str | os.PathLike | None = None) -> dict[str, tuple[dict[str, str], ...]]:
  """Every quiz in the index: {quiz name: `load_quiz(name)`}."""
  return {name: load_quiz(name, quiz_dir) for name in quiz_index(quiz_dir)}
