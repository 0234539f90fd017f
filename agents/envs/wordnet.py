"""WordNet 3.0 noun synsets as the search environment uses them: NLTK-style names, lemmas, the definition and the
hypernym links, built from `core.data.wordnet` (the Princeton database files that Debian's `wordnet-base` ships in
/usr/share/wordnet, DATA.md; nothing is downloaded).

A synset's name is its first lemma, ".n.", and that lemma's two-digit sense number from `index.noun` ("dog.n.01").
Hypernyms are the "@" (class) and "@i" (instance) pointers. `core.data.wordnet` imports neither jax nor grain, so an
environment server that only needs these files stays light.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from core.data import wordnet as wordnet_files

DEFAULT_WORDNET_DIR = wordnet_files.DEFAULT_WORDNET_DIR
HYPERNYM_SYMBOLS = frozenset({"@", "@i"})


class Synset(NamedTuple):  # a tuple: 82k of them are built per process, and frozen dataclasses build 3x slower
  offset: int
  name: str  # "dog.n.01"
  lemmas: tuple[str, ...]  # as written, underscores turned into spaces: ("dog", "domestic dog", "Canis familiaris")
  definition: str  # the gloss without its quoted examples
  hypernyms: tuple[int, ...]  # offsets of "@" and "@i" pointers


def load_wordnet_nouns(wordnet_dir: str = "") -> tuple[Synset, ...]:
  """All 82,115 noun synsets of WordNet 3.0, in file order. Cached per process."""
  return _nouns(wordnet_files.wordnet_folder(wordnet_dir, "n"))


@functools.lru_cache(maxsize=4)
def _nouns(folder: str) -> tuple[Synset, ...]:
  # Streamed, not loaded: nothing of the files is kept but this view (the other pointers and the index's other
  # fields would stay in the process for nothing).
  sense_of = {(entry.lemma, offset): sense for entry in wordnet_files.iter_index("n", folder)
              for sense, offset in enumerate(entry.offsets, start=1)}
  out = []
  for synset in wordnet_files.iter_synsets("n", folder, pointer_symbols=HYPERNYM_SYMBOLS):  # in file order
    first = synset.lemmas[0].lower()
    sense = sense_of.get((first, synset.offset), 1)
    out.append(Synset(offset=synset.offset, name=f"{first.replace(' ', '_')}.n.{sense:02d}",
                      lemmas=synset.lemmas, definition=synset.definition,
                      hypernyms=tuple(p.offset for p in synset.pointers)))
  return tuple(out)
