"""Offline data sources and grain input pipelines (see DATA.md for where each data set comes from).

Loaders return read-only numpy arrays cached for the process and raise `DataSourceMissingError`,
whose message holds the install command, when their Debian or PyPI package is missing:

  images.py        load_fashion_mnist, load_mnist, load_digits, load_easy_vqa
  text.py          load_kjv_text, load_kjv_verses, char_vocab
  series.py        load_time_series
  quiz.py          load_quiz, load_quizzes, quiz_index, expand_pattern, answer_matches
  wordnet.py       load_synsets, load_index (WordNet 3.0 synsets, pointers, sense counts; import the module)
  tfds_sources.py  load_tfds (a user's own TFDS data set, array_record, no TensorFlow)
  pipeline.py      make_batches (grain: shuffled, sharded per process, resumable)
"""

from core.data.errors import DataSourceMissingError
from core.data.images import (EASY_VQA_QUESTION_TYPES, FASHION_MNIST_CLASSES, USER_DIR_DATASETS, EasyVQASplit,
                              check_data_dir, load_digits, load_easy_vqa, load_fashion_mnist, load_mnist, read_idx)
from core.data.pipeline import make_batches
from core.data.quiz import (answer_matches, canonical_text, expand_pattern, load_quiz, load_quizzes,
                            normalize_answer, quiz_index)
from core.data.series import TIME_SERIES, load_time_series
from core.data.splits import stratified_split
from core.data.text import CharVocab, Verse, char_vocab, load_kjv_text, load_kjv_verses
from core.data.tfds_sources import load_tfds

__all__ = [
    "CharVocab", "DataSourceMissingError", "EASY_VQA_QUESTION_TYPES", "EasyVQASplit", "FASHION_MNIST_CLASSES",
    "TIME_SERIES", "USER_DIR_DATASETS", "Verse", "answer_matches", "canonical_text", "char_vocab", "check_data_dir",
    "expand_pattern", "load_digits", "load_easy_vqa", "load_fashion_mnist", "load_kjv_text", "load_kjv_verses",
    "load_mnist", "load_quiz", "load_quizzes", "load_tfds", "load_time_series", "make_batches", "normalize_answer",
    "quiz_index", "read_idx", "stratified_split",
]
