"""Offline data sources and grain input pipelines (see DATA.md for where each data set comes from).

Loaders return read-only numpy arrays cached for the process and raise `DataSourceMissingError`,
whose message holds the install command, when their Debian or PyPI package is missing:

  images.py        load_fashion_mnist, load_mnist, load_digits, load_easy_vqa
  text.py          load_kjv_text, load_kjv_verses, char_vocab
  series.py        load_time_series
  quiz.py          load_quiz, load_quizzes, quiz_index, expand_pattern, answer_matches
  wordnet.py       load_synsets, load_index, iter_synsets, iter_index (WordNet 3.0 synsets, pointers, sense
                   counts; import the module)
  tfds_sources.py  load_tfds (a user's own TFDS data set, array_record, no TensorFlow)
  pipeline.py      make_batches (grain: shuffled, sharded per process, resumable)
"""

import importlib
from typing import Any

# Exported names -> the submodule that defines them. Imported on first use (PEP 562), so that a light user such as
# an environment server can import `core.data.wordnet` without pulling in jax and grain through `pipeline`.
_EXPORTS = {
    "errors": ("DataSourceMissingError",),
    "images": ("EASY_VQA_QUESTION_TYPES", "FASHION_MNIST_CLASSES", "USER_DIR_DATASETS", "EasyVQASplit",
               "check_data_dir", "load_digits", "load_easy_vqa", "load_fashion_mnist", "load_mnist", "read_idx"),
    "pipeline": ("make_batches",),
    "quiz": ("answer_matches", "canonical_text", "expand_pattern", "load_quiz", "load_quizzes", "normalize_answer",
             "quiz_index"),
    "series": ("TIME_SERIES", "load_time_series"),
    "splits": ("stratified_split",),
    "text": ("CharVocab", "Verse", "char_vocab", "load_kjv_text", "load_kjv_verses"),
    "tfds_sources": ("load_tfds",),
}
_SOURCE = {name: module for module, names in _EXPORTS.items() for name in names}
_SUBMODULES = frozenset(_EXPORTS) | {"wordnet"}

__all__ = sorted(_SOURCE)


def __getattr__(name: str) -> Any:
  if name in _SOURCE:
    value = getattr(importlib.import_module(f"{__name__}.{_SOURCE[name]}"), name)
  elif name in _SUBMODULES:
    value = importlib.import_module(f"{__name__}.{name}")
  else:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  globals()[name] = value  # once imported, a plain attribute
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_SOURCE) | _SUBMODULES)
