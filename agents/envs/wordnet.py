"""WordNet 3.0 noun synsets read from the Princeton database files that Debian's `wordnet-base` ships in
/usr/share/wordnet (DATA.md). Nothing is downloaded.

`data.noun` holds one synset per line: "offset lex_filenum n w_cnt(hex) word lex_id ... p_cnt (symbol offset pos
src/tgt)* | gloss" (wndb(5WN)). Hypernym pointers are "@" (class) and "@i" (instance). `index.noun` lists each
lemma's synsets in sense order, which gives NLTK-style names: the first lemma of the synset, ".n.", and that
lemma's two-digit sense number ("dog.n.01").
"""

from __future__ import annotations

import dataclasses
import functools
import os

DEFAULT_WORDNET_DIR = "/usr/share/wordnet"


@dataclasses.dataclass(frozen=True)
class Synset:
  offset: int
  name: str  # "dog.n.01"
  lemmas: tuple[str, ...]  # as written, underscores turned into spaces: ("dog", "domestic dog", "Canis familiaris")
  definition: str  # the gloss without its quoted examples
  hypernyms: tuple[int, ...]  # offsets of "@" and "@i" pointers


def _definition(gloss: str) -> str:
  # Examples follow the definition as '; "an example"'; a few glosses are only examples.
  return gloss.split('; "')[0].strip().strip(";").strip()


def load_wordnet_nouns(wordnet_dir: str = "") -> tuple[Synset, ...]:
  """All 82,115 noun synsets of WordNet 3.0, in file order. Cached per process."""
  folder = wordnet_dir or DEFAULT_WORDNET_DIR
  for name in ("data.noun", "index.noun"):
    if not os.path.isfile(os.path.join(folder, name)):
      # Imported here: the core.data package pulls in jax and grain (~1.3 s, ~150 MB), which an environment
      # server has no other use for.
      from core.data import errors
      raise errors.DataSourceMissingError(
          f"WordNet file {os.path.join(folder, name)} is missing. Install the database with: "
          f"{errors.apt_install_hint('wordnet-base')} (or pass the folder holding data.noun and index.noun).")
  return _load(os.path.abspath(folder))


@functools.lru_cache(maxsize=4)
def _load(folder: str) -> tuple[Synset, ...]:
  sense_of: dict[tuple[str, int], int] = {}
  with open(os.path.join(folder, "index.noun"), encoding="latin-1") as f:
    for line in f:
      if line.startswith(" "):
        continue  # licence header
      fields = line.split()
      lemma, synset_count = fields[0], int(fields[2])
      for sense, offset in enumerate(fields[-synset_count:], start=1):
        sense_of[(lemma, int(offset))] = sense
  synsets = []
  with open(os.path.join(folder, "data.noun"), encoding="latin-1") as f:
    for line in f:
      if line.startswith(" "):
        continue
      head, _, gloss = line.partition(" | ")
      fields = head.split()
      offset, word_count = int(fields[0]), int(fields[3], 16)
      words = [fields[4 + 2 * i] for i in range(word_count)]
      at = 4 + 2 * word_count
      pointer_count = int(fields[at])
      hypernyms = tuple(int(fields[at + 1 + 4 * p + 1]) for p in range(pointer_count)
                        if fields[at + 1 + 4 * p] in ("@", "@i"))
      first = words[0].lower()
      sense = sense_of.get((first, offset), 1)
      synsets.append(Synset(offset=offset, name=f"{first}.n.{sense:02d}",
                            lemmas=tuple(w.replace("_", " ") for w in words), definition=_definition(gloss),
                            hypernyms=hypernyms))
  return tuple(synsets)
