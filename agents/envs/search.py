"""A search-and-answer environment over WordNet with a local BM25 retriever: the Deep Search setting of
AgentGym-RL (Search-R1, Jin et al. 2025: `search[query]` returns passages, `answer[text]` ends the episode,
reward = exact match) on an offline corpus.

Corpus: the 82,115 noun synsets of WordNet 3.0 (wordnet.py), one document each, showing its name, lemmas,
definition and what it is a kind of ("kind of: canine.n.02"). BM25 (bm25.py) indexes lemmas and definition.
A query equal to a synset name returns that synset first (a title match, as an encyclopedia search jumps to the
page of that exact title), then the BM25 ranking.

Tasks (by `task_id`): pick a synset S whose definition retrieves S at BM25 rank 1 strictly, and a hop count n in
[1, max_hops]: n = 1 asks which word has that definition; n >= 2 asks for the thing reached by following
"kind of" n - 1 times from S (every synset on the way has exactly one hypernym, so the answer is unique). The
answer is right when, normalised as in SQuAD (lower case, no punctuation or articles), it equals a lemma of the
answer synset; lemmas that normalise to nothing ("A", "AN") are no answers (else "answer[the]" would score), and a
task whose answer synset has only such lemmas is drawn again. Solving takes max(2, n) turns. Partial progress: share of
the chain's synsets shown so far, with the answer as one more sub-goal (1.0 only on success).
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
import string
from typing import Any

import ml_collections

from agents.envs.base import EpisodeFailed, InvalidAction, TextEnv, check_settings, integers_at_least
from agents.envs.bm25 import BM25Index, tokenize
from agents.envs.wordnet import Synset, load_wordnet_nouns
from core.config import section


def search_config(**overrides: Any) -> ml_collections.ConfigDict:
  """Every number of the search environment: corpus folder, BM25 parameters, results shown, hops, steps."""
  return section("search", dict(wordnet_dir="", k1=1.2, b=0.75, top_k=3, max_hops=4, min_definition_words=4,
                                max_steps=10), overrides)


def validate_search_config(config: ml_collections.ConfigDict) -> None:
  number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
  check_settings("search", [
      # top_k = 0 would show no entry for any search
      *integers_at_least(config, {"top_k": 1, "max_hops": 1, "min_definition_words": 0, "max_steps": 1}),
      (number(config.k1) and config.k1 >= 0, f"k1 must be >= 0 (BM25), got {config.k1!r}"),
      (number(config.b) and 0 <= config.b <= 1, f"b must lie in [0, 1] (BM25), got {config.b!r}")])


def normalize_answer(text: str) -> str:
  """SQuAD's answer normalisation (Rajpurkar et al. 2016 evaluation script), with underscores as spaces."""
  text = text.lower().replace("_", " ")
  text = "".join(ch for ch in text if ch not in set(string.punctuation))
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


@dataclasses.dataclass(frozen=True)
class Corpus:
  synsets: tuple[Synset, ...]
  index: BM25Index
  by_name: dict[str, int]
  by_offset: dict[int, int]
  candidates: tuple[int, ...]  # synsets a question may start from: a unique, long enough definition


@functools.lru_cache(maxsize=2)
def load_corpus(wordnet_dir: str, k1: float, b: float, min_definition_words: int) -> Corpus:
  """The WordNet corpus and its BM25 index (about 2 s to build; cached per process)."""
  synsets = load_wordnet_nouns(wordnet_dir)
  index = BM25Index([" ".join(s.lemmas) + " " + s.definition for s in synsets], k1, b)
  definition_count: dict[str, int] = {}
  for s in synsets:
    definition_count[s.definition] = definition_count.get(s.definition, 0) + 1
  candidates = tuple(i for i, s in enumerate(synsets)
                     if definition_count[s.definition] == 1 and len(tokenize(s.definition)) >= min_definition_words
                     and '"' not in s.definition)
  return Corpus(synsets, index, {s.name: i for i, s in enumerate(synsets)},
                {s.offset: i for i, s in enumerate(synsets)}, candidates)


@dataclasses.dataclass(frozen=True)
class SearchTask:
  question: str
  chain: tuple[int, ...]  # synset indices: the defined one, then each "kind of" step
  answers: frozenset[str]  # normalised lemmas of the last synset


def _question(definition: str, hops: int) -> str:
  if hops == 1:
    return f'Which word is defined in WordNet as "{definition}"?'
  times = "once" if hops == 2 else f"{hops - 1} times"
  return (f'Start from the thing defined in WordNet as "{definition}". Follow "kind of" {times}. '
          f"Which word names the thing you reach?")


_MAX_DRAWS = 100_000  # a typical task takes a handful; past this, `max_hops` asks for chains the corpus lacks


def generate_task(task_id: int, corpus: Corpus, config: ml_collections.ConfigDict) -> SearchTask:
  rng = random.Random(f"search-{task_id}")
  hops = rng.randint(1, config.max_hops)
  for _ in range(_MAX_DRAWS):
    start = rng.choice(corpus.candidates)
    chain = [start]
    while len(chain) < hops:
      hypernyms = corpus.synsets[chain[-1]].hypernyms
      if len(hypernyms) != 1:
        break
      chain.append(corpus.by_offset[hypernyms[0]])
    if len(chain) < hops:
      continue
    top = corpus.index.search(corpus.synsets[start].definition, 2)
    if top[0][0] != start or (len(top) > 1 and top[1][1] >= top[0][1]):
      continue  # the definition must find its own synset first, or the question has no certain path
    answers = frozenset(filter(None, (normalize_answer(lemma) for lemma in corpus.synsets[chain[-1]].lemmas)))
    if not answers:
      continue  # e.g. the letter "a" ("A", "a"): nothing left to compare an answer with
    return SearchTask(_question(corpus.synsets[start].definition, hops), tuple(chain), answers)
  raise ValueError(f"search task {task_id}: no {hops}-hop question found in {_MAX_DRAWS} draws: the corpus has too "
                   f"few chains of {hops - 1} single-parent 'kind of' links (WordNet 3.0's longest has 18). Fix: "
                   f"lower search.max_hops (now {config.max_hops}).")


def _document(corpus: Corpus, i: int) -> str:
  s = corpus.synsets[i]
  kinds = ", ".join(corpus.synsets[corpus.by_offset[h]].name for h in s.hypernyms)
  return f"{s.name} | {', '.join(s.lemmas)} | {s.definition}" + (f" | kind of: {kinds}" if kinds else "")


_ACTION = re.compile(r"^(search|answer)\s*(?:\[(.*)\]|:\s*(.*))$", re.DOTALL)


class _SearchOracle:
  """Reads the question and the result lists: search the definition, then each "kind of" name, then answer."""

  _DEFINITION = re.compile(r'defined in WordNet as "(.*?)"[?.]')

  def __init__(self):
    self._hops_left: int | None = None

  def act(self, observation: str) -> str:
    if self._hops_left is None:
      match = re.search(r'Follow "kind of" (once|(\d+) times)', observation)
      self._hops_left = 0 if match is None else (1 if match.group(1) == "once" else int(match.group(2)))
      return f"search[{self._DEFINITION.search(observation).group(1)}]"
    # The first result: "[1] name | lemma, lemma | definition | kind of: name, name".
    fields = next(line for line in observation.splitlines() if line.startswith("[1] "))[4:].split(" | ")
    kind_of = fields[-1][len("kind of: "):].split(", ")[0] if fields[-1].startswith("kind of: ") else ""
    if self._hops_left == 0:
      return f"answer[{next(w for w in fields[1].split(', ') if normalize_answer(w))}]"  # not "A"
    self._hops_left -= 1
    if self._hops_left == 0:
      # A name starts with its first lemma; the two nouns whose first lemma is "A" are nobody's "kind of".
      return f"answer[{kind_of.rsplit('.n.', 1)[0].replace('_', ' ')}]"
    return f"search[{kind_of}]"


class WordNetSearch(TextEnv):
  name = "search"

  def __init__(self, config: ml_collections.ConfigDict):
    validate_search_config(config)
    super().__init__(config.max_steps)
    self.config = config
    self.corpus = load_corpus(config.wordnet_dir, config.k1, config.b, config.min_definition_words)

  def instructions(self) -> str:
    return ("Answer the question using a search engine over WordNet. Each turn, write exactly one action: "
            "search[<query>] to see the best matching entries (a query that is an entry name such as "
            "dog.n.01 opens that entry), or answer[<word>] to give your final answer (one try).")

  def oracle(self, task_id: int) -> _SearchOracle:
    del task_id  # the oracle reads everything it needs from the observations
    return _SearchOracle()

  def _reset(self, task_id: int) -> tuple[str, dict[str, Any]]:
    self.task = generate_task(task_id, self.corpus, self.config)
    self.seen: set[int] = set()
    return (f"{self.instructions()}\nQuestion: {self.task.question}",
            {"hops": len(self.task.chain), "question": self.task.question})

  def _progress(self) -> float:
    # the chain's entries seen in results, and the answer as one more sub-goal: 1.0 only on success (finding
    # every entry and then answering wrong is not a solved task)
    return len(self.seen & set(self.task.chain)) / (len(self.task.chain) + 1)

  def _step(self, action: str) -> tuple[str, bool]:
    match = _ACTION.match(action)
    if match is None:
      raise InvalidAction("write search[<query>] or answer[<word>].")
    verb, argument = match.group(1), (match.group(2) if match.group(2) is not None else match.group(3)).strip()
    if not argument:
      raise InvalidAction(f"{verb}[] needs text inside the brackets.")
    if verb == "answer":
      if normalize_answer(argument) in self.task.answers:
        return f"Your answer {argument!r} is correct.", True
      raise EpisodeFailed(f"Your answer {argument!r} is wrong.")  # one answer per question, as in Search-R1
    hits = [i for i, _ in self.corpus.index.search(argument, self.config.top_k)]
    exact = self.corpus.by_name.get(argument)
    if exact is not None:
      hits = [exact] + [i for i in hits if i != exact][:self.config.top_k - 1]
    if not hits:
      return f"No entries match {argument!r}.", False
    self.seen.update(hits)
    return "\n".join(f"[{rank}] {_document(self.corpus, i)}" for rank, i in enumerate(hits, start=1)), False
