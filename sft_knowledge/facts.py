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


# A word that negates the one after it, at the end of the normalised text before a match.
_NEGATED = re.compile(r"(^| )(not|non|un)$")
# A short answer "ends a phrase" when only closing marks follow it: a quote or bold marker (`"Na"`, `**Na**`), then
# punctuation, the end of the line, or a parenthesis ("Na (sodium)").
_PHRASE_END = re.compile(r"""["'*\u201d\u2019]*(?:[.,;:!?)]|\s*\(|\s*$)""")


def _occurs(alias: str, text: str) -> bool:
  alias = alias.strip()
  if not alias:
    return False
  if alias.isdigit():
    # Numbers as numbers: "1" is not in "1.008" or "1,000", nor "103" in "103.5" (normalize would split those).
    return re.search(rf"(?<![\w.,]){alias}(?![\w]|[.,]\d)", text) is not None
  if len(alias) > 2:
    norm = normalize(alias)
    if not norm:
      return False
    # A whole-word match, not right after a negation: "not certain" and "non-functional" restate the antonym
    # questions "the opposite of uncertain / nonfunctional", they do not answer them.
    words = f" {normalize(text)} "
    return any(not _NEGATED.search(words[:m.start()].rstrip())
               for m in re.finditer(f"(?= {re.escape(norm)} )", words))
  # One or two characters: element symbols "He", "In", "As", "I", "No", postal codes "IN", "ME", "OR", "US", antonyms
  # "on", "no" are also common words. Matched as written, and a letter alias must end a phrase ("... is I.", not
  # "I think", "I'm") and not start a sentence ("No, ...", "He is ..."), unless it is the whole reply.
  whole = text.strip(" .!?\"'*")
  # the whole reply ("On.", "**Na**"); a symbol or code with capitals as written ("No." is not Nobelium's "No")
  if (whole == alias) if any(c.isupper() for c in alias) else (whole.lower() == alias.lower()):
    return True
  for match in re.finditer(rf"(?<!\w){re.escape(alias)}(?!\w)", text):
    if not alias.isalpha():
      return True
    ends_phrase = _PHRASE_END.match(text, match.end()) is not None
    opens_sentence = re.search(r"(^|[.!?])\s*$", text[:match.start()]) is not None
    # at a sentence's start only as a label: "Na (sodium)", "Na: sodium" (not "He is ...", "No, ...")
    labelled = re.match(r"\s*[(:]", text[match.end():]) is not None
    if ends_phrase and (not opens_sentence or labelled):
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
# Answers the quiz spells in ways of its own: the standard spelling becomes the answer.
_STANDARD_SPELLINGS = {("state_flower", "blackeyed susan"): "black-eyed susan",
                       ("state_flower", "indian paint brush"): "indian paintbrush",
                       ("state_flower", "sego lilly"): "sego lily"}
# bsdgames' placeholder for an answer nobody knows ("God only knows"): no fact.
_UNKNOWN_ANSWERS = {"gok"}
# The province quiz's "Canada:Ottawa" line is the country, a duplicate of country_capital's fact.
_QUIZ_SKIP = {("province_capital", "Canada")}


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
      # split: each top-level alternative is a subject of its own; its optional parts only spell it other ways
      subjects = (quiz_lib.top_level_alternatives(subject_pattern) if split
                  else (quiz_lib.canonical_text(subject_pattern),))
      aliases = quiz_lib.expand_pattern(object_pattern)
      for subject in subjects:
        if (relation.name, subject) in _QUIZ_SKIP:
          continue
        fixed = _QUIZ_ALIASES.get((relation.name, subject), aliases)
        standard = _STANDARD_SPELLINGS.get((relation.name, fixed[0]))
        if standard:  # taught and accepted as written elsewhere; the quiz's spelling is still accepted
          fixed = (standard, *fixed)
        if fixed[0] in _UNKNOWN_ANSWERS:
          continue  # the quiz does not know the answer either
        out.append((subject, fixed[0], tuple(fixed)))
  return out


def _wordnet_facts(relation: Relation, wordnet_dir: str, min_tagsense: int) -> list[tuple[str, str, tuple[str, ...]]]:
  _, pos, symbol = relation.source.split(":")
  synsets = wordnet_lib.load_synsets(pos, wordnet_dir)
  index = wordnet_lib.load_index(pos, wordnet_dir)
  out = []
  for lemma, entry in index.items():
    # Familiar words only, one-word lemmas, and the lemma's most frequent sense: the fact a person would mean.
    # (at least 3 letters: "a", "in", "v" make questions such as "A a is part of what?")
    if (entry.tagsense_count < min_tagsense or " " in lemma or "-" in lemma or not lemma.isalpha()
        or len(lemma) < 3):
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
      # the subject as the synset writes it ("Tunisia"): the index keeps lemmas in lower case
      subject = synset.lemmas[word_number - 1] if word_number else lemma
      out.append((subject, aliases[0], tuple(aliases)))
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
  return _unambiguous(facts)


def _clean_alias(alias: str) -> bool:
  """False for the fragments a quiz pattern's empty optional parts leave ("Joe ", ", Jr", "Joe R , Junior") and for
  suffixes alone ("Jr"): they are not names of the answer."""
  if alias != " ".join(alias.split()) or alias.startswith(",") or " ," in alias:
    return False
  return normalize(alias) not in ("", "jr", "junior")


# Relations whose answers are people: a surname or a shortened name can name another answer of these relations.
PERSON_RELATIONS = ("president_successor", "president_vice")
_SUFFIXES = ("jr", "junior", "ii")


def _person(name: str) -> str:
  """A person's name for comparisons: normalised, without parentheses ("(1st term)") or a trailing suffix."""
  words = normalize(re.sub(r"\(.*?\)", " ", name)).split()
  while words and words[-1] in _SUFFIXES:
    words.pop()
  return " ".join(words)


def _words_within(short: str, long: str) -> bool:
  """`short`'s words appear in `long` in order: "john adams" within "john quincy adams"."""
  words = iter(long.split())
  return all(w in words for w in short.split())


def _full_names(f: Fact) -> set[str]:
  """A fact's complete answers: its spellings that are no shortening of a longer one (Jefferson's vice
  presidents: "aaron burr" and "george clinton", not "burr" or "g clinton")."""
  names = {_person(a) for a in f.aliases} - {""}
  return {n for n in names if not any(m != n and _words_within(n, m) for m in names)}


def _unambiguous(facts: list[Fact]) -> list[Fact]:
  """Drops quiz answers that are no answer ("None (1841-5)": Tyler had no vice president), the fragments of quiz
  patterns (`_clean_alias`), and, among people (`PERSON_RELATIONS`), spellings that name another person who
  answers another fact: a part of that person's full name ("Jefferson" in William Jefferson Clinton, "John Adams"
  for John Quincy Adams), or one of that person's spellings that skips a word of this fact's answer ("George W
  Bush" for George Herbert Walker Bush; his son keeps it). Another complete answer of the same fact stays
  ("George Clinton" for Jefferson's vice president), so a reply naming the wrong person never counts."""
  people = [(f, _full_names(f), {_person(a) for a in f.aliases}) for f in facts if f.relation in PERSON_RELATIONS]
  out = []
  for f in facts:
    if not RELATIONS[f.relation].source.startswith("quiz:"):
      out.append(f)
      continue
    if normalize(f.answer).split()[:1] == ["none"]:
      continue
    aliases = [f.answer] + [a for a in f.aliases[1:] if _clean_alias(a)]
    if f.relation in PERSON_RELATIONS:
      own, answer_words = _full_names(f), len(_person(f.answer).split())
      others = [(full, spellings) for _, full, spellings in people if not full & own]

      def names_another(alias: str) -> bool:
        key = _person(alias)
        return any(any(f" {key} " in f" {name} " for name in full) or
                   (key in spellings and len(key.split()) < answer_words) for full, spellings in others)
      aliases = [f.answer] + [a for a in aliases[1:] if not names_another(a)]
    out.append(dataclasses.replace(f, aliases=tuple(dict.fromkeys(aliases))))
  return out


# Facts that come in reverse pairs (hot -> cold, cold -> hot): both go to the same part of the split, or a test
# fact's reverse could be trained on.
SYMMETRIC_RELATIONS = ("antonym",)


def split_facts(facts: Sequence[Fact], in_domain: Sequence[str], out_domain: Sequence[str], *, few_shot: int,
                test_per_relation: int, seed: int) -> dict[str, Any]:
  """Splits facts into few-shot exemplars (per relation), the in-domain SFT pool, and in-/out-of-domain test facts.

  In-domain relations give `few_shot` exemplars, `test_per_relation` test facts and the rest to the pool;
  out-of-domain relations give exemplars and test facts only (never fine-tuned on). A relation with fewer facts
  (female_form has 26, province_capital 11) tests on all it has beyond the exemplars (and one pool fact). The two
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
  splits["pool"] = _without_test_pairs(splits["pool"], splits["test_id"] + splits["test_ood"], facts)
  return splits


def _without_test_pairs(pool: list[str], test: list[str], facts: Sequence[Fact]) -> list[str]:
  """The pool without facts that pair a test fact's subject with one of its answers, either way round and in any
  relation: WordNet's "berlin is part of Germany" would teach the test fact "Germany -> Berlin", and a fact listed
  by two quizzes would be trained on and tested."""
  by_id = {f.id: f for f in facts}
  pairs = set()
  for fact_id in test:
    t = by_id[fact_id]
    for answer in t.aliases:
      pairs.add((normalize(t.subject), normalize(answer)))
      pairs.add((normalize(answer), normalize(t.subject)))
  return [i for i in pool if not any((normalize(by_id[i].subject), normalize(a)) in pairs for a in by_id[i].aliases)]
