"""WordNet 3.0 synsets, pointers and sense counts from the Princeton database files (Debian `wordnet-base`).

Reads `/usr/share/wordnet/data.<pos>` and `index.<pos>` (format: wndb(5WN)); nothing is downloaded.

  data.<pos>:  "offset lex_filenum ss_type w_cnt(hex) word lex_id ... p_cnt (symbol offset pos src/tgt)* | gloss"
  index.<pos>: "lemma pos synset_cnt p_cnt symbol... sense_cnt tagsense_cnt offset..." (offsets in sense order)

A pointer's `src/tgt` is two hex bytes: 0000 for a semantic pointer between whole synsets, else the word numbers
(1-based) of a lexical pointer such as an antonym ("!"), which links one word to one word. Pointer symbols used by
knowledge probes: "@" hypernym, "@i" instance hypernym, "#m"/"#s"/"#p" member/substance/part holonym, "!" antonym.
`tagsense_cnt` (how many of a lemma's senses are tagged in semantic concordances) is a usable familiarity signal.
Adjective words may carry a syntactic marker such as "galore(ip)"; it is stripped.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Iterator, NamedTuple

DEFAULT_WORDNET_DIR = "/usr/share/wordnet"
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
_MARKER = re.compile(r"\([a-z]+\)$")


# Tuples, not frozen dataclasses: the noun files alone hold 82k synsets, 117k lemmas and 269k pointers, and
# named tuples build several times faster in less memory.
class Pointer(NamedTuple):
  symbol: str  # "@", "#p", "!", ...
  offset: int  # target synset
  pos: str  # target part of speech: n v a r (s = adjective satellite)
  source: int  # word number in this synset, 0 = the whole synset
  target: int  # word number in the target synset, 0 = the whole synset


class WordNetSynset(NamedTuple):
  offset: int
  pos: str  # ss_type: n v a s r
  lemmas: tuple[str, ...]  # underscores turned into spaces, markers stripped
  definition: str
  pointers: tuple[Pointer, ...]


class IndexEntry(NamedTuple):
  lemma: str  # as in the index: lower case, underscores turned into spaces
  offsets: tuple[int, ...]  # synsets in sense order (most frequent first)
  tagsense_count: int


def definition_of(gloss: str) -> str:
  """The gloss without its quoted examples (they follow the definition as '; "an example"')."""
  return gloss.split('; "')[0].strip().strip(";").strip()


def wordnet_folder(wordnet_dir: str = "", pos: str = "n") -> str:
  folder = os.path.expanduser(wordnet_dir) if wordnet_dir else DEFAULT_WORDNET_DIR
  for kind in ("data", "index"):
    path = os.path.join(folder, f"{kind}.{POS_FILES[pos]}")
    if not os.path.isfile(path):
      from core.data import errors
      fix = ("Point wordnet_dir at a folder holding WordNet 3.0's data.* and index.* files" if wordnet_dir else
             f"Install the database with: {errors.apt_install_hint('wordnet-base')} (or pass the folder holding "
             "the data.* and index.* files)")
      raise errors.DataSourceMissingError(f"WordNet file {path} is missing. {fix}.")
  return os.path.abspath(folder)


def _check_pos(pos: str) -> None:
  if pos not in POS_FILES:
    raise ValueError(f"unknown WordNet part of speech {pos!r}; valid: {', '.join(POS_FILES)}.")


def load_synsets(pos: str = "n", wordnet_dir: str = "") -> dict[int, WordNetSynset]:
  """Every synset of one part of speech ('n', 'v', 'a', 'r'), keyed by offset, with every pointer. Cached per
  process."""
  _check_pos(pos)
  return _synsets(wordnet_folder(wordnet_dir, pos), pos)


def load_index(pos: str = "n", wordnet_dir: str = "") -> dict[str, IndexEntry]:
  """Every lemma of one part of speech with its synsets in sense order. Cached per process."""
  _check_pos(pos)
  return _index(wordnet_folder(wordnet_dir, pos), pos)


def iter_synsets(pos: str = "n", wordnet_dir: str = "",
                 pointer_symbols: frozenset[str] | None = None) -> Iterator[WordNetSynset]:
  """The synsets of `load_synsets` one at a time, in file order, read afresh (nothing kept), with only the pointers
  whose symbol is in `pointer_symbols` (None: all). For a user that builds its own view once: the 82k noun
  synsets' 269k pointers alone take ~100 MB and most of the read time."""
  _check_pos(pos)
  return _read_synsets(wordnet_folder(wordnet_dir, pos), pos, pointer_symbols)


def iter_index(pos: str = "n", wordnet_dir: str = "") -> Iterator[IndexEntry]:
  """The entries of `load_index` one at a time, in file order, read afresh (nothing kept)."""
  _check_pos(pos)
  return _read_index(wordnet_folder(wordnet_dir, pos), pos)


@functools.lru_cache(maxsize=8)
def _synsets(folder: str, pos: str) -> dict[int, WordNetSynset]:
  return {synset.offset: synset for synset in _read_synsets(folder, pos, None)}


@functools.lru_cache(maxsize=8)
def _index(folder: str, pos: str) -> dict[str, IndexEntry]:
  return {entry.lemma: entry for entry in _read_index(folder, pos)}


def _clean_word(word: str) -> str:
  return (_MARKER.sub("", word) if word.endswith(")") else word).replace("_", " ")


def _read_synsets(folder: str, pos: str, pointer_symbols: frozenset[str] | None) -> Iterator[WordNetSynset]:
  with open(os.path.join(folder, f"data.{POS_FILES[pos]}"), encoding="latin-1") as f:
    for line in f:
      if line.startswith(" "):
        continue  # licence header
      head, _, gloss = line.partition(" | ")
      fields = head.split()
      offset, ss_type, word_count = int(fields[0]), fields[2], int(fields[3], 16)
      at = 4 + 2 * word_count
      words = tuple(_clean_word(w) for w in fields[4:at:2])
      p = fields[at + 1: at + 1 + 4 * int(fields[at])]  # (symbol, offset, pos, source/target) per pointer
      pointers = tuple(Pointer(p[i], int(p[i + 1]), p[i + 2], int(p[i + 3][:2], 16), int(p[i + 3][2:], 16))
                       for i in range(0, len(p), 4) if pointer_symbols is None or p[i] in pointer_symbols)
      yield WordNetSynset(offset, ss_type, words, definition_of(gloss), pointers)


def _read_index(folder: str, pos: str) -> Iterator[IndexEntry]:
  with open(os.path.join(folder, f"index.{POS_FILES[pos]}"), encoding="latin-1") as f:
    for line in f:
      if line.startswith(" "):
        continue
      fields = line.split()
      lemma, synset_count, pointer_count = fields[0], int(fields[2]), int(fields[3])
      tagsense = int(fields[5 + pointer_count])
      offsets = tuple(int(o) for o in fields[-synset_count:])
      yield IndexEntry(lemma.replace("_", " "), offsets, tagsense)
