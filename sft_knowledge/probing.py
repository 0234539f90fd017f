"""Asking the model: CBQA prompts, batched answers, knowledge mastery and its five levels, CBQA accuracy.

Mastery (arXiv 2409.15825 sec. 3.2, used by 2509.16596 sec. 2.2): the pre-trained model answers every question
template of a fact (zero-shot in every shipped config: `few_shot=0`; few-shot prompts as an option), once
greedily and `samples` times by sampling; the fact's mastery is the fraction of those answers that are correct,
and facts are binned into 5 levels by it (0 = never answered correctly, 4 = answered correctly nearly always).
CBQA accuracy after fine-tuning (2509.16596 sec. 3) asks each test fact once, zero-shot, with the fine-tuning
template and format, and judges the greedy answer with `facts.is_correct`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np
import tqdm

from core.llm import generate
from sft_knowledge.facts import Fact, is_correct, render
from sft_knowledge.templates import RELATIONS


def conversation(system: str, question: str, shots: Sequence[tuple[str, str]] = (),
                 answer: str | None = None) -> list[dict[str, str]]:
  """ChatML messages: the system line, few-shot question/answer turns, the question (and optionally the answer)."""
  messages = [{"role": "system", "content": system}]
  for q, a in shots:
    messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
  messages.append({"role": "user", "content": question})
  if answer is not None:
    messages.append({"role": "assistant", "content": answer})
  return messages


def sft_record(fact: Fact, system: str, template: int) -> dict[str, Any]:
  """One fine-tuning example: the templated question and the canonical answer (the papers' CBQA SFT format)."""
  return {"messages": conversation(system, render(RELATIONS[fact.relation], fact.subject, template),
                                   answer=fact.answer)}


def answer(pretrained, conversations: Sequence[Sequence[Mapping[str, str]]], *, max_new_tokens: int,
           temperature: float, top_p: float, seed: int, batch_size: int, prompt_buckets: Sequence[int],
           desc: str = "answering", progress: bool = True) -> list[str]:
  """The model's reply to each conversation; one compiled program per prompt-length bucket. Weights laid out on a
  device mesh answer with the rows of each batch split over it."""
  gen = generate.GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                                  prompt_buckets=tuple(prompt_buckets), batch_buckets=(batch_size,),
                                  new_token_buckets=(max_new_tokens,))
  tok = pretrained.tokenizer
  prompts = [tok.encode_chat(list(c)) for c in conversations]
  # Sorting by length keeps each batch in one small prompt bucket; replies are put back in input order.
  order = np.argsort([len(p) for p in prompts], kind="stable")
  replies: list[str] = [""] * len(prompts)
  rng = jax.random.key(seed)
  mesh = generate.weights_mesh(pretrained.state)
  for i, start in enumerate(tqdm.trange(0, len(prompts), batch_size, desc=desc, disable=not progress,
                                        dynamic_ncols=True)):
    rows = order[start:start + batch_size]
    out = generate.generate(pretrained.graphdef, pretrained.state, pretrained.config, [prompts[r] for r in rows],
                            gen, stop_ids=tok.stop_ids, pad_id=tok.pad_id, rng=jax.random.fold_in(rng, i), mesh=mesh)
    for r, ids in zip(rows, out.tokens):
      replies[r] = tok.decode(ids).strip()
  return replies


def mastery_level(mastery: float | np.ndarray, edges: Sequence[float]) -> np.ndarray:
  """Level = number of edges strictly below the mastery: with edges (0, .25, .5, .75), mastery 0 -> level 0,
  (0, .25] -> 1, (.25, .5] -> 2, (.5, .75] -> 3, (.75, 1] -> 4."""
  edges = np.asarray(edges, float)
  if edges.ndim != 1 or np.any(np.diff(edges) <= 0):
    raise ValueError(f"mastery level edges {edges.tolist()} must be strictly increasing.")
  return np.searchsorted(edges, np.asarray(mastery, float), side="left")


def estimate_mastery(pretrained, facts: Sequence[Fact], shots: Mapping[str, Sequence[Fact]], *, system: str,
                     templates: int, samples: int, temperature: float, top_p: float, max_new_tokens: int,
                     batch_size: int, prompt_buckets: Sequence[int], seed: int,
                     progress: bool = True) -> list[dict[str, Any]]:
  """For each fact: correctness of the greedy and sampled answers to each of the first `templates` templates
  (few-shot: the relation's exemplars asked with the same template) and the mastery = fraction correct."""
  conversations, questions = [], []
  for fact in facts:
    relation = RELATIONS[fact.relation]
    for t in range(templates):
      exemplars = [(render(relation, s.subject, t), s.answer) for s in shots[fact.relation]]
      questions.append(render(relation, fact.subject, t))
      conversations.append(conversation(system, questions[-1], exemplars))
  common = dict(max_new_tokens=max_new_tokens, top_p=top_p, batch_size=batch_size, prompt_buckets=prompt_buckets,
                progress=progress)
  runs = [answer(pretrained, conversations, temperature=0.0, seed=seed, desc="mastery greedy", **common)]
  for s in range(samples):
    runs.append(answer(pretrained, conversations, temperature=temperature, seed=seed + 1 + s,
                       desc=f"mastery sample {s + 1}", **common))
  out = []
  for i, fact in enumerate(facts):
    rows = slice(i * templates, (i + 1) * templates)
    greedy = [is_correct(r, fact.aliases, q) for r, q in zip(runs[0][rows], questions[rows])]
    sampled = [[is_correct(r, fact.aliases, q) for r, q in zip(run[rows], questions[rows])] for run in runs[1:]]
    total = sum(greedy) + sum(map(sum, sampled))
    out.append({"id": fact.id, "greedy": greedy, "sampled": sampled, "example_reply": runs[0][rows][0],
                "mastery": total / (templates * (1 + samples))})
  return out


def cbqa(pretrained, facts: Sequence[Fact], *, system: str, template: int, max_new_tokens: int, batch_size: int,
         prompt_buckets: Sequence[int], progress: bool = True, desc: str = "CBQA") -> list[bool]:
  """Zero-shot greedy CBQA correctness of each fact, asked with `template` in the fine-tuning format."""
  questions = [render(RELATIONS[f.relation], f.subject, template) for f in facts]
  replies = answer(pretrained, [conversation(system, q) for q in questions], max_new_tokens=max_new_tokens,
                   temperature=0.0, top_p=1.0, seed=0, batch_size=batch_size, prompt_buckets=prompt_buckets, desc=desc,
                   progress=progress)
  return [is_correct(r, f.aliases, q) for r, f, q in zip(replies, facts, questions)]
