"""The environment-construction pipeline of arXiv 2508.08791 (Sec. 3.1, Fig. 2), as composable deterministic
functions over plain data. Where the paper prompts an LLM at each stage, each stage here is a rule over the
knowledge base (`knowledge.py`), so the same seed gives the same environment and every answer is verifiable:

1. scenario decomposition (`sample_scenario` + `decompose`): a user question built from facts, split into
   sub-questions of the paper's four types: single-hop, parallel single-hop (independent facts), multi-hop (the
   answer of one sub-question is the input of the next), parallel multi-hop;
2. document generation (`generate_documents`): one tool document per sub-question (name, description, JSON
   Schema of the parameters, what it returns), with a binding that says which relation answers it;
3. function integration (`integrate`): documents with overlapping function merge: the same attribute over
   several tables (capitals of African and Asian countries -> one capital tool), or several attributes of one
   entity family (a state's capital and flower -> one state tool with a `field` argument);
4. complexity scaling (`scale`): four operators, each making a measurably harder variant (`complexity`):
   toolset extension (distractor tools), functional generalisation (a broader tool: every field of the family
   plus reverse look-ups), parameter expansion (more parameters, some required), parameter-type
   generalisation (the key argument becomes an object). Level k applies the first k operators;
5. localized deployment is `runtime.deploy`: the documents become plain Python tools.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from typing import Any, Sequence

from agents.toolenv import reward
from agents.toolenv.knowledge import BY_NAME, RELATIONS, KnowledgeBase, chains
from core.data.quiz import expand_pattern, normalize_answer

SCENARIO_TYPES = ("single_hop", "parallel_single_hop", "multi_hop", "parallel_multi_hop")
OPERATORS = ("toolset_extension", "functional_generalisation", "parameter_expansion",
             "parameter_type_generalisation")
LEVELS = tuple(range(len(OPERATORS) + 1))


# ---------------------------------------------------------------------------------------------------------------
# Stage 1: scenarios and their decomposition


@dataclasses.dataclass(frozen=True)
class ScenarioSpec:
  """What a scenario asks: chains of (relation, key) hops; a chain's later hops take the previous answer."""
  type: str
  chains: tuple[tuple[str, ...], ...]  # relation names per chain
  keys: tuple[str, ...]  # the first key of each chain (canonical text)


@dataclasses.dataclass(frozen=True)
class SubQuestion:
  index: int
  relation: str
  key: str  # the input entity (for a later hop: the previous hop's answer)
  text: str
  depends_on: int | None
  answer: str  # canonical text (what the tools return)
  answer_pattern: str  # every accepted form (quiz(6) pattern), less those the question or the key already holds


@dataclasses.dataclass(frozen=True)
class Scenario:
  type: str
  question: str
  subquestions: tuple[SubQuestion, ...]
  final: tuple[int, ...]  # sub-questions whose answers the final answer must contain


def sample_scenario(kb: KnowledgeBase, scenario_type: str, rng: random.Random) -> ScenarioSpec:
  """A scenario of `scenario_type` with facts drawn from the knowledge base; drawn again (from the same `rng`)
  while some answer could be given by echoing the question (`decompose` raises EchoedAnswer)."""
  if scenario_type not in SCENARIO_TYPES:
    raise ValueError(f"unknown scenario type {scenario_type!r}; valid: {', '.join(SCENARIO_TYPES)}.")
  multi = scenario_type in ("multi_hop", "parallel_multi_hop")
  pairs = chains(kb)
  while True:
    count = 1 if scenario_type in ("single_hop", "multi_hop") else rng.choice((2, 2, 3) if not multi else (2,))
    chosen: list[tuple[str, ...]] = []
    keys: list[str] = []
    while len(chosen) < count:
      if multi:
        first, second = rng.choice(pairs)
        facts = [f for f in kb.facts[first] if kb.lookup(second, f.value) is not None]
        chain: tuple[str, ...] = (first, second)
      else:
        relation = rng.choice(RELATIONS).name
        facts = list(kb.facts[relation])
        chain = (relation,)
      fact = rng.choice(facts)
      if fact.key in keys:
        continue
      chosen.append(chain)
      keys.append(fact.key)
    spec = ScenarioSpec(scenario_type, tuple(chosen), tuple(keys))
    try:
      decompose(spec, kb)
    except EchoedAnswer:
      continue
    return spec


class EchoedAnswer(ValueError):
  """The form of a gold answer that the tools return is already written in the question (or in the sub-question's
  key): "What is the capital of Singapore?" cannot tell an answer from an echo, so the scenario is drawn again."""


def _escape(form: str) -> str:
  return "".join("\\" + c if c in "\\|{}[]:" else c for c in form)


def _answer_pattern(pattern: str, value: str, question: str, key: str) -> str:
  """`pattern` less the forms that occur in `question` or in `key` (so that echoing them is no answer, as
  sft_knowledge drops aliases found in their questions); raises EchoedAnswer when that drops `value`, the form the
  tools return."""
  forms = expand_pattern(pattern)
  kept = [f for f in forms if not (reward.occurs(question, f) or reward.occurs(key, f))]
  if normalize_answer(value) not in {normalize_answer(f) for f in kept}:
    raise EchoedAnswer(f"the answer {value!r} is written in the question {question!r} (or the key {key!r}).")
  return pattern if len(kept) == len(forms) else "|".join(_escape(f) for f in kept)


def decompose(spec: ScenarioSpec, kb: KnowledgeBase) -> Scenario:
  """The user question and its sub-questions (with gold answers) for a scenario spec. Answer forms that the
  question or a sub-question's key already holds are dropped ("Which US state has the postal abbreviation TX?"
  accepts "Texas" and "Tex", not "TX"); EchoedAnswer if that leaves no form the tools return."""
  subs: list[SubQuestion] = []
  parts: list[str] = []
  final: list[int] = []
  for chain, key in zip(spec.chains, spec.keys):
    reference = BY_NAME[chain[0]].ref.format(x=key)
    previous: int | None = None
    current_key = key
    for hop, name in enumerate(chain):
      rel = BY_NAME[name]
      fact = kb.lookup(name, current_key)
      if fact is None:
        raise ValueError(f"{name} has no fact for {current_key!r}: the chain is broken.")
      text = rel.question.format(x=rel.ref.format(x=current_key if hop == 0 else
                                                   f"[the answer to sub-question {previous + 1}]"))
      subs.append(SubQuestion(len(subs), name, current_key, text, previous, fact.value, fact.value_pattern))
      previous = len(subs) - 1
      if hop + 1 < len(chain):
        reference = rel.phrase.format(x=reference)
      current_key = fact.value
    last = BY_NAME[chain[-1]]
    parts.append(last.question.format(x=reference) if len(chain) > 1 else
                 BY_NAME[chain[0]].question.format(x=BY_NAME[chain[0]].ref.format(x=key)))
    final.append(previous)
  question = parts[0] if len(parts) == 1 else "Answer each question. " + " ".join(
      f"({i + 1}) {p}" for i, p in enumerate(parts))
  subs = [dataclasses.replace(sq, answer_pattern=_answer_pattern(sq.answer_pattern, sq.answer, question, sq.key))
          for sq in subs]
  return Scenario(spec.type, question, tuple(subs), tuple(final))


def inverse_relations(relation: str) -> set[str]:
  """The relations a reverse look-up of `relation` answers: same family, keyed by its attribute, giving its key
  kind (the reverse of state_abbreviation is state_by_abbreviation)."""
  rel = BY_NAME[relation]
  return {r.name for r in RELATIONS if r.family == rel.family and r.key_kind == rel.attribute
          and r.attribute == rel.key_kind}


# ---------------------------------------------------------------------------------------------------------------
# Stage 2: tool documents


@dataclasses.dataclass(frozen=True)
class Binding:
  """How a deployed tool answers (never shown to the agent): `routes` maps a field value ("" when the tool has
  no field argument) to the relations searched in order, a name "reverse:<relation>" meaning a look-up by
  value; `key_path` is where the key sits in the arguments."""
  routes: tuple[tuple[str, tuple[str, ...]], ...]
  key_path: tuple[str, ...]
  field_param: str | None = None
  format_param: str | None = None
  match_param: str | None = None  # inside the key object: "exact" or "case_insensitive"

  def relations(self) -> set[str]:
    return {r.split(":")[-1] for _, rels in self.routes for r in rels}


@dataclasses.dataclass(frozen=True)
class ToolDoc:
  name: str
  description: str
  parameters: dict[str, Any]  # JSON Schema of the arguments object
  returns: str
  binding: Binding
  family: str
  key_kind: str

  def public(self) -> dict[str, Any]:
    """What the agent sees: an OpenAI-style function description."""
    return {"name": self.name, "description": f"{self.description} Returns {self.returns}",
            "parameters": self.parameters}


def _key_param(key_kind: str) -> str:
  return "name" if key_kind == "name" else key_kind.replace(" ", "_")


LABELS = {"us_state": "US state", "midearth": "Middle-earth realm", "inca": "Inca ruler", "zodiac": "Chinese zodiac "
          "animal", "morse": "letter or digit", "word": "noun", "president": "US president",
          "sovereign": "English sovereign", "element": "chemical element", "province": "Canadian province"}


def _tool_name(prefix: str, family: str, key_kind: str) -> str:
  # tools of one family that take different inputs (a name, an abbreviation) need different names
  return f"{prefix}_{family}" + ("" if key_kind == "name" else f"_by_{_key_param(key_kind)}")


def document_for(relation: str) -> ToolDoc:
  """The tool document of one relation (what the paper's document-generation prompt writes for a sub-question)."""
  rel = BY_NAME[relation]
  param = _key_param(rel.key_kind)
  what = rel.ref.format(x="X").replace("X", "").strip() or "entity"
  return ToolDoc(
      name=rel.tool, description=rel.doc,
      parameters={"type": "object", "properties": {param: {"type": "string", "description": (
          f"The {rel.key_kind} to look up ({what})." if rel.key_kind != "name" else f"Name of the {what}.")}},
                  "required": [param], "additionalProperties": False},
      returns=f"the {rel.attribute}.", binding=Binding((("", (relation,)),), (param,)),
      family=rel.family, key_kind=rel.key_kind)


def generate_documents(scenario: Scenario) -> list[ToolDoc]:
  """One tool document per sub-question, in order (duplicates included; integration removes them)."""
  return [document_for(sq.relation) for sq in scenario.subquestions]


# ---------------------------------------------------------------------------------------------------------------
# Stage 3: function integration


def _merged(family: str, key_kind: str, docs: Sequence[ToolDoc], all_fields: bool = False,
            reverse: bool = False) -> ToolDoc:
  """One tool for several documents of one family and key kind: a plain union when they share one attribute,
  else a tool with a `field` argument (every attribute of the family with `all_fields`; plus reverse look-ups)."""
  relations = sorted({r for d in docs for r in d.binding.relations()}, key=[r.name for r in RELATIONS].index)
  if all_fields:
    relations = [r.name for r in RELATIONS if r.family == family and r.key_kind == key_kind]
  attributes: dict[str, list[str]] = {}
  for name in relations:
    attributes.setdefault(BY_NAME[name].attribute, []).append(name)
  param = _key_param(key_kind)
  label = LABELS.get(family, family.replace("_", " "))
  what = f"the {key_kind} of the {label}" if key_kind != "name" else f"name of the {label}"
  if len(attributes) == 1 and not reverse:
    (attribute, names), = attributes.items()
    doc = ToolDoc(_tool_name(f"get_{attribute.replace(' ', '_')}_of", family, key_kind),
                  f"{attribute[0].upper() + attribute[1:]} of one {label}.",
                  {"type": "object",
                   "properties": {param: {"type": "string", "description": what[0].upper() + what[1:] + "."}},
                   "required": [param], "additionalProperties": False},
                  f"the {attribute}.", Binding((("", tuple(names)),), (param,)), family, key_kind)
    return doc
  routes = [(a.replace(" ", "_"), tuple(n)) for a, n in attributes.items()]
  if reverse:
    routes += [(f"find_by_{a.replace(' ', '_')}", tuple(f"reverse:{x}" for x in n)) for a, n in attributes.items()]
  fields = [f for f, _ in routes]
  name = _tool_name("query" if reverse else "lookup", family, key_kind)
  return ToolDoc(
      name, f"Facts about one {label}: choose the field to return."
      + (" A find_by_<field> field looks the entity up by that field's value instead." if reverse else ""),
      {"type": "object", "properties": {
          param: {"type": "string", "description": what[0].upper() + what[1:]
                  + (" (or, for find_by_<field>, that field's value)." if reverse else ".")},
          "field": {"type": "string", "enum": fields, "description": "What to return."}},
       "required": [param, "field"], "additionalProperties": False},
      "the chosen field.", Binding(tuple(routes), (param,), field_param="field"), family, key_kind)


def integrate(docs: Sequence[ToolDoc]) -> list[ToolDoc]:
  """Merges documents with overlapping function (same family and input kind); keeps first-seen order."""
  groups: dict[tuple[str, str], list[ToolDoc]] = {}
  for d in docs:
    groups.setdefault((d.family, d.key_kind), []).append(d)
  out = []
  for (family, key_kind), group in groups.items():
    unique = list({d.name: d for d in group}.values())
    out.append(unique[0] if len(unique) == 1 else _merged(family, key_kind, unique))
  return out


# ---------------------------------------------------------------------------------------------------------------
# Stage 4: complexity scaling


@dataclasses.dataclass(frozen=True)
class EnvSpec:
  scenario: Scenario
  tools: tuple[ToolDoc, ...]
  operators: tuple[str, ...] = ()

  @property
  def level(self) -> int:
    return len(self.operators)


def toolset_extension(spec: EnvSpec, rng: random.Random, extra: int = 4) -> EnvSpec:
  """Adds `extra` distractor tools for relations the scenario does not use (half of them, when possible, from
  the scenario's own families: the confusable ones)."""
  used = {r for t in spec.tools for r in t.binding.relations()}
  families = {t.family for t in spec.tools}
  near = [r.name for r in RELATIONS if r.name not in used and r.family in families]
  far = [r.name for r in RELATIONS if r.name not in used and r.family not in families]
  rng.shuffle(near)
  rng.shuffle(far)
  picks = (near[:extra // 2] + far)[:extra]
  names = {t.name for t in spec.tools}
  distractors = [d for d in integrate([document_for(r) for r in picks]) if d.name not in names]
  tools = list(spec.tools) + distractors
  rng.shuffle(tools)
  return dataclasses.replace(spec, tools=tuple(tools), operators=spec.operators + ("toolset_extension",))


def functional_generalisation(spec: EnvSpec) -> EnvSpec:
  """Every tool becomes the general tool of its family: all of the family's fields and reverse look-ups."""
  groups: dict[tuple[str, str], list[ToolDoc]] = {}
  for t in spec.tools:
    groups.setdefault((t.family, t.key_kind), []).append(t)
  tools = [_merged(f, k, g, all_fields=True, reverse=True) for (f, k), g in groups.items()]
  return dataclasses.replace(spec, tools=tuple(tools), operators=spec.operators + ("functional_generalisation",))


def parameter_expansion(spec: EnvSpec) -> EnvSpec:
  """Every tool gains a required `response_format` and optional `include_source` and `max_chars`."""
  tools = []
  for t in spec.tools:
    params = copy.deepcopy(t.parameters)
    params["properties"]["response_format"] = {"type": "string", "enum": ["text", "json"],
                                               "description": "Answer as a sentence or as a JSON object."}
    params["properties"]["include_source"] = {"type": "boolean", "description": "Name the source table."}
    params["properties"]["max_chars"] = {"type": "integer", "minimum": 20, "maximum": 500,
                                         "description": "Truncate the answer to this many characters."}
    params["required"] = list(params["required"]) + ["response_format"]
    tools.append(dataclasses.replace(t, parameters=params,
                                     binding=dataclasses.replace(t.binding, format_param="response_format")))
  return dataclasses.replace(spec, tools=tuple(tools), operators=spec.operators + ("parameter_expansion",))


def parameter_type_generalisation(spec: EnvSpec) -> EnvSpec:
  """The key argument (a string) becomes an object `{"value": ..., "match": "exact" | "case_insensitive"}`."""
  tools = []
  for t in spec.tools:
    params = copy.deepcopy(t.parameters)
    key = t.binding.key_path[0]
    described = params["properties"].pop(key)
    params["properties"] = {"query": {
        "type": "object", "description": f"The look-up. value: {described['description']}",
        "properties": {"value": {"type": "string"},
                       "match": {"type": "string", "enum": ["exact", "case_insensitive"],
                                 "description": "exact: the spelling must match exactly."}},
        "required": ["value", "match"], "additionalProperties": False}, **params["properties"]}
    params["required"] = ["query"] + [r for r in params["required"] if r != key]
    tools.append(dataclasses.replace(t, parameters=params, binding=dataclasses.replace(
        t.binding, key_path=("query", "value"), match_param="match")))
  return dataclasses.replace(spec, tools=tuple(tools), operators=spec.operators + ("parameter_type_generalisation",))


def scale(spec: EnvSpec, level: int, rng: random.Random, extra_tools: int = 4) -> EnvSpec:
  """Applies the first `level` operators in the order of OPERATORS."""
  if not 0 <= level <= len(OPERATORS):
    raise ValueError(f"complexity level {level} is outside 0..{len(OPERATORS)}.")
  for op in OPERATORS[:level]:
    if op == "toolset_extension":
      spec = toolset_extension(spec, rng, extra_tools)
    elif op == "functional_generalisation":
      spec = functional_generalisation(spec)
    elif op == "parameter_expansion":
      spec = parameter_expansion(spec)
    else:
      spec = parameter_type_generalisation(spec)
  return spec


def _depth(schema: dict[str, Any]) -> int:
  if schema.get("type") == "object":
    return 1 + max((_depth(s) for s in schema.get("properties", {}).values()), default=0)
  return 0


def _choices(schema: dict[str, Any]) -> int:
  return len(schema.get("enum", [])) + sum(_choices(s) for s in schema.get("properties", {}).values())


def complexity(spec: EnvSpec) -> dict[str, float]:
  """Static difficulty of an environment: tools to choose from, required arguments, argument choices to get
  right, nesting depth; `score` adds them up (each operator raises it)."""
  tools = len(spec.tools)
  required = sum(len(t.parameters.get("required", [])) for t in spec.tools)
  choices = sum(_choices(t.parameters) for t in spec.tools)
  params = sum(len(t.parameters["properties"]) for t in spec.tools)
  depth = max(_depth(t.parameters) for t in spec.tools)
  return {"tools": tools, "required_args": required, "args": params, "enum_choices": choices, "depth": depth,
          "score": tools + required + params + choices / 2 + 2 * (depth - 1)}


def build(task_seed: str, scenario_type: str, level: int, kb: KnowledgeBase, extra_tools: int = 4) -> EnvSpec:
  """Stages 1-4 for one environment: sample, decompose, document, integrate, scale."""
  rng = random.Random(task_seed)
  scenario = decompose(sample_scenario(kb, scenario_type, rng), kb)
  spec = EnvSpec(scenario, tuple(integrate(generate_documents(scenario))))
  return scale(spec, level, rng, extra_tools)


def gold_call(spec: EnvSpec, sub: SubQuestion, key: str | None = None) -> dict[str, Any]:
  """The call that answers sub-question `sub` in this environment (the oracle's), `key` its input."""
  key = sub.key if key is None else key
  for tool in spec.tools:
    for field, relations in tool.binding.routes:
      if sub.relation in relations:
        args: dict[str, Any] = {}
        if tool.binding.match_param:
          args[tool.binding.key_path[0]] = {"value": key, "match": "case_insensitive"}
        else:
          args[tool.binding.key_path[0]] = key
        if tool.binding.field_param:
          args[tool.binding.field_param] = field
        if tool.binding.format_param:
          args[tool.binding.format_param] = "text"
        return {"name": tool.name, "arguments": args}
  raise ValueError(f"no tool of this environment answers {sub.relation}.")
