"""The CBQA knowledge set: (subject, relation, object) facts, answer aliases and normalisation, and the splits.

Paper setting (arXiv 2509.16596 sec. 2.1, following 2409.15825 sec. 3): EntityQuestions-style triples, questions
from relation templates, answers judged after normalisation against the object's aliases; the fine-tuning data are
drawn from some relations (in-domain) and the model is tested on held-out facts of those relations and on relations
never fine-tuned on (out-of-domain). Here the triples come from real offline sources (DATA.md): the bsdgames quizzes,
whose answer patterns (`{optional}`, `a|b`) give the aliases through `core.data.quiz.expand_pattern`, and WordNet 3.0
(`core.data.wordnet`), whose synset lemmas give the aliases. WordNet subjects are restricted to familiar words
(first sense of a lemma with at least `data.min_tagsense` sense-tagged occurrences) so questions stay answerable.

Answer check (the usual CBQA normalisation, as in SQuAD's evaluation script): lower case, accents and punctuation
removed, articles "a/an/the" dropped, whitespace collapsed; a response counts as correct when a normalised alias
occurs in the normalised first line of the response as whole words, and not in the question (a reply that restates
the question, "Djibouti is a country in East Africa", is no answer). Aliases of one or two characters ("He", "In",
"IN", "US", "on") are ordinary words as well: they must occur as written, end a phrase and not open a sentence
(`_occurs`). Facts whose aliases occur in one of their own questions are dropped when the data are built.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from core.data import quiz as quiz_lib
from core.data import wordnet as wordnet_lib
from sft_knowledge.templates import RELATIONS, Relation

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NON_WORD = re.compile(r"[^0-9a-z]+")


@dataclasses.dataclass(frozen=True)
class Fact:
  id: str  # "<relation>/<index>"
  relation: str
  subject: str
  answer: str  # the canonical object, used as the fine-tuning target
  aliases: tuple[str, ...]  # every accepted answer (the canonical one first)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Fact":
    return cls(d["id"], d["relation"], d["subject"], d["answer"], tuple(d["aliases"]))


# ---- normalisation and answer checking ---------------------------------------------------------------------

def normalize(text: str) -> str:
  """Lower case, no accents, punctuation -> space, no articles, single spaces: "The Congo!" -> "congo"."""
  text = unicodedata.normalize("NFKD", text)
  text = "".join(c for c in text if not unicodedata.combining(c)).lower()
  text = _NON_WORD.sub(" ", text)
  return " ".join(_ARTICLES.sub(" ", text).split())


def _occurs(alias: str, text: str) -> bool:
  alias = alias.strip()
  if not alias:
    return False
  if len(alias) > 2:
    norm = normalize(alias)
    return bool(norm) and f" {norm} " in f" {normalize(text)} "
  # One or two characters: element symbols "He", "In", "As", "I", "No", postal codes "IN", "ME", "OR", "US", antonyms
  # "on", "no" are also common words. Matched as written, and a letter alias must end a phrase ("... is I.", not
  # "I think", "I'm") and not start a sentence ("No, ...", "He is ..."), unless it is the whole reply.
  if text.strip(" .!?") == alias:
    return True
  for match in re.finditer(rf"(?<!\w){re.escape(alias)}(?!\w)", text):
    if not alias.isalpha():
      return True
    ends_phrase = text[match.end():match.end() + 1] in ("", ".", ",", ";", "!", "?", ")")
    if ends_phrase and not re.search(r"(^|[.!?])\s*$", text[:match.start()]):
      return True
  return False


def is_correct(response: str, aliases: Iterable[str], question: str = "") -> bool:
  """An alias occurs in the first line of `response` (as whole words after `normalize`; short aliases see
  `_occurs`) and does not occur in `question`, where the reply may only be echoing it."""
  first_line = response.strip().split("\n")[0]
  return any(_occurs(a, first_line) and not _occurs(a, question) for a in aliases)


def render(relation: Relation, subject: str, template: int) -> str:
  if not 0 <= template < len(relation.templates):
    raise ValueError(f"relation {relation.name!r} has {len(relation.templates)} templates; asked for index "
                     f"{template}. Fix: lower data.mastery_templates / eval.template.")
  return relation.templates[template].format(s=subject)


# ---- building facts ---------------------------------------------------------------------------------------

def _answer_in_questions(relation: Relation, subject: str, aliases: Sequence[str]) -> bool:
  questions = [render(relation, subject, t) for t in range(len(relation.templates))]
  return any(_occurs(alias, q) for q in questions for alias in aliases)


# The elements quiz predates IUPAC's 1963 change of Lawrencium's symbol from Lw to Lr: teach the current one.
_QUIZ_ALIASES = {("element_symbol", "Lawrencium"): ("Lr", "Lw")}


def _quiz_facts(relation: Relation, quiz_dir: str) -> list[tuple[str, str, tuple[str, ...]]]:
  _, files, subject_field, object_field, *flags = relation.source.split(":")
  split = "split" in flags
  out = []
  for name in files.split(","):
    for record in quiz_lib.load_quiz(name, quiz_dir or None):
      values = list(record.values())
      subject_pattern, object_pattern = values[int(subject_field)], values[int(object_field)]
      if not subject_pattern or not object_pattern:
        continue  # e.g. the last president has no successor yet
      subjects = quiz_lib.expand_pattern(subject_pattern) if split else (quiz_lib.canonical_text(subject_pattern),)
      aliases = quiz_lib.expand_pattern(object_pattern)
      for subject in subjects:
        fixed = _QUIZ_ALIASES.get((relation.name, subject), aliases)
        out.append((subject, fixed[0], tuple(fixed)))
  return out


def _wordnet_facts(relation: Relation, wordnet_dir: str, min_tagsense: int) -> list[tuple[str, str, tuple[str, ...]]]:
  _, pos, symbol = relation.source.split(":")
  synsets = wordnet_lib.load_synsets(pos, wordnet_dir)
  index = wordnet_lib.load_index(pos, wordnet_dir)
  out = []
  for lemma, entry in index.items():
    # Familiar words only, one-word lemmas, and the lemma's most frequent sense: the fact a person would mean.
    if entry.tagsense_count < min_tagsense or " " in lemma or "-" in lemma or not lemma.isalpha():
      continue
    synset = synsets[entry.offsets[0]]
    word_number = next((i + 1 for i, w in enumerate(synset.lemmas) if w.lower() == lemma), 0)
    aliases: list[str] = []
    for p in synset.pointers:
      if p.symbol != symbol:
        continue
      if symbol == "!":  # lexical pointer: from this word to one word of the target synset
        if p.source != word_number:
          continue
        target = synsets.get(p.offset)  # antonyms link words of the same part of speech (one data file)
        if target is not None:
          aliases.append(target.lemmas[p.target - 1])
      else:
        target = synsets.get(p.offset)
        if target is None:
          continue
        aliases.extend(target.lemmas)
    aliases = list(dict.fromkeys(a for a in aliases if a.lower() != lemma))
    if aliases:
      out.append((lemma, aliases[0], tuple(aliases)))
  return out


def build_facts(relations: Sequence[str], *, quiz_dir: str = "", wordnet_dir: str = "", min_tagsense: int = 1,
                max_per_relation: int = 0, seed: int = 0) -> list[Fact]:
  """Every fact of `relations`, deduplicated by (relation, normalised subject); with `max_per_relation` > 0 a
  seeded random subset of that many per relation (the first facts of a quiz are not special)."""
  facts = []
  for name in relations:
    if name not in RELATIONS:
      raise ValueError(f"unknown relation {name!r}; valid: {', '.join(RELATIONS)}.")
    relation = RELATIONS[name]
    if relation.source.startswith("quiz:"):
      triples = _quiz_facts(relation, quiz_dir)
    else:
      triples = _wordnet_facts(relation, wordnet_dir, min_tagsense)
    merged: dict[str, tuple[str, str, list[str]]] = {}
    for subject, answer, aliases in triples:
      key = normalize(subject)
      if key in merged:  # same subject twice (a word with two objects): accept either object
        merged[key][2].extend(a for a in aliases if a not in merged[key][2])
      else:
        merged[key] = (subject, answer, list(aliases))
    # A fact whose answer is written in one of its own questions (Djibouti's capital, Guinea-Bissau -> Bissau,
    # hypernym "kind" for "What kind of thing is a genre?") cannot tell an answer from an echo: drop it.
    rows = [(s, a, al) for s, a, al in merged.values() if not _answer_in_questions(relation, s, al)]
    if max_per_relation and len(rows) > max_per_relation:
      rng = np.random.default_rng([seed, len(name), sum(map(ord, name))])
      keep = np.sort(rng.choice(len(rows), max_per_relation, replace=False))
      rows = [rows[i] for i in keep]
    facts.extend(Fact(f"{name}/{i}", name, s, a, tuple(al)) for i, (s, a, al) in enumerate(rows))
  return facts


# Facts that come in reverse pairs (hot -> cold, cold -> hot): both go to the same part of the split, or a test
# fact's reverse could be trained on.
SYMMETRIC_RELATIONS = ("antonym",)


def split_facts(facts: Sequence[Fact], in_domain: Sequence[str], out_domain: Sequence[str], *, few_shot: int,
                test_per_relation: int, seed: int) -> dict[str, Any]:
  """Splits facts into few-shot exemplars (per relation), the in-domain SFT pool, and in-/out-of-domain test facts.

  In-domain relations give `few_shot` exemplars, `test_per_relation` test facts and the rest to the pool;
  out-of-domain relations give exemplars and test facts only (never fine-tuned on). A relation with fewer facts
  (female_form has 26, province_capital 12) tests on all it has beyond the exemplars (and one pool fact). The two
  facts of a symmetric pair (s -> o, o -> s) go together, to the first part (exemplars, test, pool) with room.
  """
  overlap = sorted(set(in_domain) & set(out_domain))
  if overlap:
    raise ValueError(f"relations {overlap} are both in- and out-of-domain. Fix: list each relation once.")
  by_relation: dict[str, list[Fact]] = {}
  for fact in facts:
    by_relation.setdefault(fact.relation, []).append(fact)
  splits: dict[str, Any] = {"shots": {}, "pool": [], "test_id": [], "test_ood": []}
  for name in list(in_domain) + list(out_domain):
    rows = by_relation.get(name, [])
    room = {"shots": few_shot, "test": min(test_per_relation, len(rows) - few_shot - (name in in_domain))}
    if room["test"] < 1:
      raise ValueError(f"relation {name!r} has {len(rows)} facts, too few for {few_shot} exemplars, a test fact"
                       f"{' and a pool fact' if name in in_domain else ''}. Fix: lower prompt.few_shot, raise "
                       "data.max_per_relation or drop the relation.")
    by_key: dict[Any, list[str]] = {}
    for f in rows:
      key = frozenset((normalize(f.subject), normalize(f.answer))) if name in SYMMETRIC_RELATIONS else f.id
      by_key.setdefault(key, []).append(f.id)
    groups = list(by_key.values())
    parts: dict[str, list[str]] = {"shots": [], "test": [], "pool": []}
    for i in np.random.default_rng([seed, sum(map(ord, name))]).permutation(len(groups)):
      group = groups[i]
      part = next((k for k in ("shots", "test") if len(parts[k]) + len(group) <= room[k]), "pool")
      parts[part] += group
    splits["shots"][name] = parts["shots"]
    if name in in_domain:
      splits["test_id"].extend(parts["test"])
      splits["pool"].extend(parts["pool"])
    else:
      splits["test_ood"].extend(parts["test"])
  return splits
