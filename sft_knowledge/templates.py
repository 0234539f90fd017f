"""Relations of the CBQA knowledge set and their question templates (arXiv 2509.16596 sec. 2; 2409.15825 sec. 3).

The papers probe each EntityQuestions-style (subject, relation, object) fact with many paraphrased questions (21
templates per relation in 2409.15825) so that "the model knows the fact" does not hinge on one wording. Here every
relation has 8 hand-written templates over real offline sources (DATA.md): the bsdgames quizzes and WordNet 3.0.
`{s}` is the subject. Template 0 is the canonical wording used for fine-tuning and testing; mastery uses the first
`data.mastery_templates` of them.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Relation:
  name: str
  # "quiz:<files>:<subject field>:<object field>[:split]" (split: each top-level alternative of the subject is
  # its own fact, e.g. "lion|tiger|bear" -> cub) or "wordnet:<pos>:<pointer symbol>"
  source: str
  templates: tuple[str, ...]


def _q(name, source, *templates):
  return Relation(name, source, tuple(templates))


RELATIONS = {r.name: r for r in (
    _q("country_capital", "quiz:africa,america,asia,europe:0:1",
       "What is the capital of {s}?", "Which city is the capital of {s}?", "The capital city of {s} is called what?",
       "Name the capital of {s}.", "What city serves as the capital of {s}?", "Where is the seat of government of {s}?",
       "{s} has which city as its capital?", "In which city is the capital of {s}?"),
    _q("state_capital", "quiz:state:0:1",
       "What is the capital of the US state of {s}?", "Which city is the capital of the US state {s}?",
       "Name the state capital of {s}.", "What city is the capital of the state of {s}?",
       "The capital of {s} is which city?", "Where is the state government of {s} seated?",
       "{s}'s capital city is what?", "In which city is the state capital of {s}?"),
    _q("province_capital", "quiz:province:0:1",
       "What is the capital of the Canadian province of {s}?", "Which city is the capital of {s}?",
       "Name the provincial capital of {s}.", "What city is the capital of {s}, Canada?",
       "The capital of {s} is which city?", "Where is the provincial government of {s} seated?",
       "{s}'s capital city is what?", "In which city is the capital of {s}?"),
    _q("element_symbol", "quiz:elements:3:0",
       "What is the chemical symbol of {s}?", "Which symbol stands for the element {s}?",
       "Give the chemical symbol for {s}.", "The element {s} has which chemical symbol?",
       "What is the periodic-table symbol of {s}?", "How is {s} written as a chemical symbol?",
       "Write the atomic symbol of {s}.", "What one- or two-letter symbol denotes {s}?"),
    _q("element_number", "quiz:elements:3:1",
       "What is the atomic number of {s}?", "How many protons does an atom of {s} have?",
       "Give the atomic number of {s}.", "The element {s} has which atomic number?",
       "What is {s}'s number in the periodic table?", "Which atomic number belongs to {s}?",
       "State the atomic number of the element {s}.", "At what atomic number is {s} in the periodic table?"),
    _q("state_abbreviation", "quiz:state:0:2",
       "What is the two-letter postal abbreviation of {s}?", "How is {s} abbreviated in postal addresses?",
       "Give the postal code abbreviation of the US state {s}.", "Which two letters abbreviate {s}?",
       "What is the USPS abbreviation for {s}?", "The state of {s} has which postal abbreviation?",
       "Write the two-letter code of {s}.", "What short code does the US Postal Service use for {s}?"),
    _q("state_flower", "quiz:state:0:3",
       "What is the state flower of {s}?", "Which flower is the official flower of {s}?",
       "Name the state flower of {s}.", "The official state flower of {s} is what?",
       "What flower represents the state of {s}?", "Which bloom did {s} choose as its state flower?",
       "{s}'s state flower is which plant?", "What is the official floral emblem of {s}?"),
    _q("president_successor", "quiz:pres:0:3",
       "Who succeeded {s} as President of the United States?", "Who became US president after {s}?",
       "Which president came right after {s}?", "Name the president who followed {s}.",
       "Who was the next US president after {s}?", "{s} was succeeded as president by whom?",
       "Who took office as president when {s}'s presidency ended?", "Who followed {s} in the White House?"),
    _q("president_vice", "quiz:pres:0:2",
       "Who was vice president under President {s}?", "Name a vice president of {s}.",
       "Who served as {s}'s vice president?", "Which vice president served with {s}?",
       "Who was the VP during {s}'s presidency?", "{s} had whom as vice president?",
       "Give the name of a vice president of President {s}.", "Who was second in command under President {s}?"),
    _q("collective_noun", "quiz:collectives:0:1:split",
       "What is a group of {s} called?", "What is the collective noun for {s}?",
       "A gathering of {s} is called a what?", "Which word names a group of {s}?",
       "Give the collective noun used for {s}.", "Many {s} together form a what?",
       "What do you call a group of {s}?", "The collective term for {s} is what?"),
    _q("baby_animal", "quiz:babies:1:0:split",
       "What is a baby {s} called?", "What is the young of a {s} called?", "A young {s} is called a what?",
       "Which word names a baby {s}?", "What do you call the offspring of a {s}?",
       "Give the name for a young {s}.", "The baby of a {s} is known as what?", "What is an infant {s} called?"),
    _q("female_form", "quiz:sexes:0:1",
       "What is the female equivalent of a {s}?", "What is the feminine form of {s}?",
       "A female {s} is called what?", "Which word is the female counterpart of {s}?",
       "Give the female form of the word {s}.", "What is the woman's title corresponding to {s}?",
       "If a man is a {s}, what is a woman called?", "The female of {s} is what?"),
    _q("hypernym", "wordnet:n:@",
       "What kind of thing is a {s}?", "A {s} is a type of what?", "What general category does {s} belong to?",
       "{s} is a kind of what?", "Name the broader class that includes {s}.", "What is {s} an example of?",
       "Which more general term covers {s}?", "Every {s} is a what?"),
    _q("part_of", "wordnet:n:#p",
       "A {s} is part of what?", "What whole is the {s} a part of?", "Of what larger thing is {s} a component?",
       "The {s} belongs to which whole?", "Which thing contains {s} as one of its parts?",
       "What is {s} a part of?", "{s} is a part of which larger structure?", "Name the whole that has {s} as a part."),
    _q("member_of", "wordnet:n:#m",
       "A {s} is a member of what group?", "To which group does {s} belong as a member?",
       "What collection has {s} as a member?", "{s} is a member of which larger group?",
       "Name the group that {s} is a member of.", "What is {s} one member of?",
       "Of which group is {s} a member?", "Which family or group includes {s}?"),
    _q("antonym", "wordnet:a:!",
       "What is the opposite of {s}?", "What is an antonym of {s}?", "Give a word meaning the opposite of {s}.",
       "Which word is the antonym of {s}?", "The opposite of {s} is what?", "Name the antonym of the word {s}.",
       "What word means the reverse of {s}?", "If something is not {s}, it is what?"),
)}
