"""The King James Bible as plain text, and a deterministic character vocabulary for it.

Source: the Debian package `bible-kjv`, read through its `bible` command (DATA.md).
`bible -f "Gen1:1-Rev22:21"` prints the whole Authorized Version, one verse per line, each line a
reference, one space, then the verse: "Ge1:1 In the beginning God created the heaven and the
earth."  (Book abbreviations are the program's: Ge, Exo, ..., 1Sm, ..., SSol, ..., Rev.)  With
`-f` the lines are not wrapped whatever the terminal width, so the verse text is exactly what
follows the reference.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shutil
import subprocess
from typing import NamedTuple

import numpy as np

from core.data import errors

BIBLE_COMMAND = "bible"
KJV_RANGE = "Gen1:1-Rev22:21"
# A reference: an optional book number, the book abbreviation, chapter:verse, then one space.
_VERSE_LINE = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")


class Verse(NamedTuple):
  book: str  # the `bible` program's abbreviation, e.g. "Ge", "1Sm", "Rev"
  chapter: int
  verse: int
  text: str


def load_kjv_verses() -> tuple[Verse, ...]:
  """All 31,102 verses of the King James Bible, Genesis 1:1 to Revelation 22:21, in order.

  Each `Verse` holds the book abbreviation printed by `bible`, chapter and verse numbers, and the
  verse text without its reference.  Cached for the process.
  """
  return _kjv_verses(_bible_command())


def _bible_command() -> str:
  command = shutil.which(BIBLE_COMMAND)
  if command is None:
    raise errors.DataSourceMissingError(
        f"The King James Bible needs the {BIBLE_COMMAND!r} command, which is not on PATH. "
        f"Install it with: {errors.apt_install_hint('bible-kjv')}")
  return command


@functools.lru_cache(maxsize=None)
def _kjv_verses(command: str) -> tuple[Verse, ...]:
  result = subprocess.run([command, "-f", KJV_RANGE], capture_output=True, text=True, check=False)
  if result.returncode != 0 or not result.stdout:
    raise errors.DataSourceMissingError(
        f"`{BIBLE_COMMAND} -f {KJV_RANGE}` failed (exit {result.returncode}): {result.stderr.strip()}. "
        f"Reinstall it with: sudo apt-get install --reinstall -y bible-kjv")
  verses = []
  for line in result.stdout.splitlines():
    match = _VERSE_LINE.match(line)
    if match is None:
      raise ValueError(f"Unexpected line from `{BIBLE_COMMAND} -f`: {line!r}")
    book, chapter, verse, text = match.groups()
    verses.append(Verse(book, int(chapter), int(verse), text))
  return tuple(verses)


def load_kjv_text() -> str:
  """The King James Bible as one string: every verse's text (references stripped), one verse per
  line, each line ending in "\\n".  About 4.3 million ASCII characters."""
  return _kjv_text(_bible_command())


@functools.lru_cache(maxsize=None)
def _kjv_text(command: str) -> str:
  return "".join(v.text + "\n" for v in _kjv_verses(command))


@dataclasses.dataclass(frozen=True)
class CharVocab:
  """A character vocabulary: id i is `chars[i]`; `chars` is sorted by code point.

  `encode` maps a string to int32 ids and raises ValueError on characters outside the vocabulary;
  `decode` maps ids back to the string.
  """
  chars: str

  @property
  def size(self) -> int:
    return len(self.chars)

  @functools.cached_property
  def _code_points(self) -> np.ndarray:
    return _code_points(self.chars)

  def encode(self, text: str) -> np.ndarray:
    """int32 [len(text)] ids."""
    points = _code_points(text)
    ids = np.searchsorted(self._code_points, points)
    unknown = (ids >= self.size) | (self._code_points[np.minimum(ids, self.size - 1)] != points)
    if np.any(unknown):
      bad = sorted(set(chr(p) for p in points[unknown]))
      raise ValueError(f"Characters not in the vocabulary: {bad!r}.")
    return ids.astype(np.int32)

  def decode(self, ids) -> str:
    return "".join(self.chars[i] for i in np.asarray(ids).reshape(-1))


def _code_points(text: str) -> np.ndarray:
  # One uint32 per character, vectorised: 4.3 MB of text encodes in milliseconds.
  return np.frombuffer(text.encode("utf-32-le"), np.uint32)


def char_vocab(text: str) -> CharVocab:
  """The vocabulary of the distinct characters in `text`, sorted by code point (deterministic:
  the same text always gives the same ids)."""
  if not text:
    raise ValueError("char_vocab needs a non-empty text.")
  return CharVocab("".join(chr(p) for p in np.unique(_code_points(text))))
