"""The experiment of arXiv 2509.16596 as cached stages: build-data -> mastery -> finetune -> evaluate -> analyse.

  build-data  facts from the quizzes and WordNet, split into few-shot exemplars, the SFT pool and test facts (sec. 2.1)
  mastery     the base model's mastery of every pool (and test) fact and its 5 levels (sec. 2.2)
  finetune    one SFT run per (mastery level, data size, seed) of the grid, same epochs policy for every size (sec. 3)
  evaluate    CBQA accuracy of the base model and of every run on in- and out-of-domain test facts (sec. 3)
  analyse     token-level KL per run (sec. 4) and parameter restoration of the chosen runs (sec. 5)

Each stage writes its output under the workdir together with a fingerprint of the config sections it depends on (and
of CACHE_VERSION) and reuses it when the fingerprint matches (a killed or repeated command resumes; a changed config
recomputes). Runs, evaluations and restoration rows are cached one by one, so a long grid resumes where it stopped; a
run's checkpoints carry its fingerprint, so only the same run resumes from them. A finished run keeps its fine-tuned
weights (safetensors in `runs/<name>/model`) and drops the optimizer checkpoints.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np
from flax import nnx

from core import config as config_lib
from core import files
from core import report as report_lib
from core.llm import sft, weights
from core.llm.config import NUMERICS
from sft_knowledge import facts as facts_lib
from sft_knowledge import kl as kl_lib
from sft_knowledge import probing, restore
from sft_knowledge.templates import RELATIONS

STAGES = ("build_data", "mastery", "finetune", "evaluate", "analyse")


# ---- config validation (before anything loads or compiles) ------------------------------------------------

def validate_config(config: ml_collections.ConfigDict) -> None:
  relation_ok = lambda names: len(names) > 0 and set(names) <= set(RELATIONS)
  config_lib.check(config, "data.in_domain", relation_ok, f"must be a non-empty subset of {sorted(RELATIONS)}")
  config_lib.check(config, "data.out_domain", relation_ok, f"must be a non-empty subset of {sorted(RELATIONS)}")
  config_lib.check(config, "data.out_domain", lambda r: not set(r) & set(config.data.in_domain),
                   "must not share a relation with data.in_domain")
  config_lib.check_positive(config, "data.max_per_relation", allow_zero=True)
  config_lib.check_positive(config, "data.test_per_relation")
  config_lib.check_seed(config, "seed", 2**31, "must be an integer in [0, 2**31) (numpy's generators and the mastery "
                        "chunks' seed + 1000 * c take it)")
  config_lib.check_positive(config, "data.min_tagsense", allow_zero=True)
  config_lib.check(config, "data.mastery_templates", lambda t: 1 <= t <= 8, "must lie in 1..8 (templates per relation)")
  config_lib.check_existing_path(config, "data.quiz_dir", allow_empty=True)
  config_lib.check_existing_path(config, "data.wordnet_dir", allow_empty=True)
  config_lib.check_existing_path(config, "model.source", allow_empty=True)
  config_lib.check_positive(config, "prompt.few_shot", allow_zero=True)
  config_lib.check_positive(config, "prompt.max_new_tokens")
  config_lib.check_positive(config, "prompt.batch_size")
  config_lib.check(config, "prompt.prompt_buckets", lambda b: len(b) > 0 and list(b) == sorted(b),
                   "must be increasing prompt lengths")
  config_lib.check_positive(config, "mastery.samples", allow_zero=True)
  config_lib.check_positive(config, "mastery.chunk_facts")
  config_lib.check_positive(config, "mastery.temperature")
  config_lib.check(config, "mastery.top_p", lambda p: 0 < p <= 1, "must lie in (0, 1]")
  config_lib.check(config, "mastery.level_edges", lambda e: len(e) == 4 and list(e) == sorted(set(e)),
                   "must be 4 increasing edges (5 levels)")
  config_lib.check(config, "grid.levels", lambda v: len(v) > 0 and set(v) <= set(range(5)), "must be levels in 0..4")
  config_lib.check(config, "grid.sizes", lambda v: len(v) > 0 and min(v) >= config.sft.batch_size,
                   f"must be data sizes >= sft.batch_size ({config.sft.batch_size})")
  config_lib.check(config, "grid.seeds", lambda v: len(v) > 0, "must list at least one seed")
  config_lib.check(config, "grid.seeds", lambda v: all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                      for x in v), "must be non-negative integers")
  # a repeat would build every fact of a relation twice under one id, or train and count one run as two seeds
  for key in ("data.in_domain", "data.out_domain", "grid.levels", "grid.sizes", "grid.seeds"):
    config_lib.check(config, key, lambda v: len(set(v)) == len(v), "must not list an entry twice",
                     f"list each entry of {key} once")
  _check_fact_counts(config)
  config_lib.check_positive(config, "grid.epochs")
  config_lib.check_choice(config, "grid.order", GRID_ORDERS)
  config_lib.check(config, "grid.warmup_fraction", lambda f: 0 <= f < 1, "must lie in [0, 1)")
  config_lib.check(config, "optimizer.warmup_steps", lambda w: w == 0,
                   "is set for each run from grid.warmup_fraction (a run's steps depend on its data size)",
                   "pass --config.grid.warmup_fraction=<share of each run's steps> instead")
  config_lib.check(config, "eval.template", lambda t: 0 <= t < 8, "must be a template index in 0..7")
  config_lib.check_positive(config, "kl.max_facts")
  config_lib.check_positive(config, "kl.batch_size")
  ratio_ok = lambda r: all(0 < x <= 1 for x in r)
  config_lib.check(config, "restore.ratios", ratio_ok, "must be fractions in (0, 1]")
  config_lib.check(config, "restore.controls", lambda s: set(s) <= {"bottom", "random"},
                   "must be a subset of ('bottom', 'random')")
  config_lib.check(config, "restore.control_ratios", ratio_ok, "must be fractions in (0, 1]")
  config_lib.check(config, "restore.magnitude_ratios", ratio_ok, "must be fractions in (0, 1]")
  config_lib.check(config, "restore.dare_ratios", lambda r: all(0 < x < 1 for x in r), "must be drop rates in (0, 1)")
  config_lib.check_positive(config, "restore.epsilon")
  config_lib.check(config, "restore.levels", lambda v: set(v) <= set(config.grid.levels),
                   "must be levels of grid.levels (restoration needs those runs)")
  config_lib.check(config, "restore.sizes", lambda v: set(v) <= set(config.grid.sizes), "must be sizes of grid.sizes")
  config_lib.check(config, "restore.seed", lambda v: v in config.grid.seeds, "must be one of grid.seeds")
  sft.validate_sft_config(config)


def _check_fact_counts(config: ml_collections.ConfigDict) -> None:
  """`data.max_per_relation` against what `facts.split_facts` takes from each relation before its pool (few-shot
  exemplars, test facts and, in-domain, one pool fact), and against the smallest grid size: with a cap below the
  first the test set shrinks unseen; with a pool that cannot reach the second, every grid cell is skipped."""
  cap, d = config.data.max_per_relation, config.data
  if not cap:
    return  # every fact: the pool's size is known after the split (checked there, in `finetune`)
  taken = config.prompt.few_shot + d.test_per_relation
  # Up to one slot each of exemplars and test can stay empty where a symmetric pair (two facts that go together)
  # does not fit, so a relation's pool holds at most cap - taken + 2 facts.
  room = max(0, cap - taken + 2) * len(d.in_domain)
  smallest = min(config.grid.sizes)
  enough = taken + max(1, -(-smallest // len(d.in_domain)))  # a cap whose pool could fill the smallest grid size
  if cap < taken + 1:
    raise config_lib.ConfigError(
        f"config.data.max_per_relation = {cap} is invalid: each relation keeps prompt.few_shot "
        f"({config.prompt.few_shot}) exemplars and data.test_per_relation ({d.test_per_relation}) test facts, and an "
        f"in-domain one a pool fact too ({taken + 1} facts); a lower cap shrinks the test set without a word. "
        f"Fix: pass --config.data.max_per_relation={enough} or more (0 for every fact), or lower "
        "data.test_per_relation.")
  if room < smallest:
    raise config_lib.ConfigError(
        f"config.data.max_per_relation = {cap} leaves at most {room} pool facts over the {len(d.in_domain)} "
        f"in-domain relations, fewer than the smallest grid size ({smallest}): every grid cell would be skipped. "
        f"Fix: pass --config.data.max_per_relation={enough} or more (0 for every fact), or smaller grid.sizes.")


def check_some_cell_runs(config: ml_collections.ConfigDict, available: dict[int, int], stage: str) -> None:
  """Raises unless some (level, size) cell of the grid has its size of pool facts (`available`: per level, or
  under key -1 the whole pool before mastery splits it); cells too large for their level are skipped, not all."""
  levels, sizes = config.grid.levels, config.grid.sizes
  if -1 in available:
    ok = available[-1] >= min(sizes)
  else:
    ok = any(available.get(level, 0) >= size for level in levels for size in sizes)
  if not ok:
    where = (f"the pool holds {available[-1]} facts" if -1 in available else "the pool holds " + ", ".join(
        f"{available.get(level, 0)} facts at level {level}" for level in levels))
    raise config_lib.ConfigError(
        f"no grid cell can run: after {stage}, {where}, and the smallest of config.grid.sizes = {tuple(sizes)} is "
        f"{min(sizes)}. Fix: pass smaller --config.grid.sizes (each >= sft.batch_size = {config.sft.batch_size})"
        f"{'' if -1 in available else ', levels that hold more facts in --config.grid.levels'}, or a larger "
        "--config.data.max_per_relation (0: every fact).")


# ---- caching ----------------------------------------------------------------------------------------------

def use_compilation_cache(workdir: str) -> None:
  """XLA's persistent compilation cache in the workdir: every SFT run and every restored model compiles the same
  programs (the step is a new closure per run), so later runs and resumed stages load them instead of compiling."""
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.abspath(workdir), "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


# Raised when code changes what a stage computes from the same config (2: facts with accents, no answer written in
# its own question, antonyms split by pair; replies restating the question no longer count; 3: numbers match as
# numbers, quoted/bold short answers, spellings naming another person dropped, no pool fact pairs a test fact's
# subject and answer in any relation; 4: WordNet subjects as their synsets spell them, top-level quiz alternatives
# only, no "gok" facts, standard flower spellings, a labelled short answer ("Na (sodium)") counts, a capped KL set
# spread over domains and relations): old caches recompute.
CACHE_VERSION = 4
# What the pipeline caches directly under its workdir, keyed by config only; `report` removes them when the code
# changes (`core.report.claim_workdir`'s `derived`).
CACHED_OUTPUTS = ("data", "mastery_chunks", "mastery.json", "runs", "eval", "analysis")


def _fingerprint(config: ml_collections.ConfigDict, sections: tuple[str, ...]) -> str:
  return json.dumps({"cache_version": CACHE_VERSION, **{
      s: config[s].to_dict() if isinstance(config[s], ml_collections.ConfigDict) else config[s] for s in sections}},
      sort_keys=True, default=str)


def _cached(path: str, fingerprint: str, compute: Callable[[], Any]) -> Any:
  if os.path.isfile(path):
    with open(path) as f:
      stored = json.load(f)
    if stored.get("fingerprint") == fingerprint:
      return stored["value"]
    print(f"{path}: config changed since it was computed; recomputing.")
  value = compute()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  # atomic: a killed stage never leaves half a file behind
  files.write_text_atomic(path, json.dumps({"fingerprint": fingerprint, "value": value}, indent=1))
  return value


DATA_KEYS = ("data", "prompt", "seed")
MASTERY_KEYS = DATA_KEYS + ("model", "mastery")
RUN_KEYS = MASTERY_KEYS + ("sft", "optimizer")  # plus the run's own facts, epochs, warm-up and template
# The test split depends on the seed, and the per-level breakdown of every evaluation on the mastery.
EVAL_KEYS = MASTERY_KEYS + ("eval",)


# ---- models -----------------------------------------------------------------------------------------------

_BASE: dict[str, weights.Pretrained] = {}


def base_model(config: ml_collections.ConfigDict) -> weights.Pretrained:
  """The pre-trained model of `config.model`, loaded once per process."""
  key = json.dumps(config.model.to_dict(), sort_keys=True)
  if key not in _BASE:
    _BASE[key] = weights.load_from_config(config.model)
  return _BASE[key]


def with_params(base: weights.Pretrained, params: dict, name: str) -> weights.Pretrained:
  """`base` with other parameter values (a nested dict of the same structure), sharing graphdef and tokenizer."""
  state = jax.tree.map(lambda x: x, base.state)
  nnx.replace_by_pure_dict(state, params)
  return weights.Pretrained(base.config, base.graphdef, state, base.tokenizer, name)


def run_model(config: ml_collections.ConfigDict, workdir: str, name: str) -> weights.Pretrained:
  """A fine-tuned run's exported weights, loaded with the base model's numerics."""
  numerics = {k: v for k, v in config.model.to_dict().items() if k in NUMERICS}
  tuned = weights.load_pretrained(os.path.join(workdir, "runs", name, "model"), **numerics)
  return with_params(base_model(config), nnx.to_pure_dict(tuned.state), name)


# ---- stage 1: facts ---------------------------------------------------------------------------------------

def build_data(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  def compute():
    d = config.data
    facts = facts_lib.build_facts(list(d.in_domain) + list(d.out_domain), quiz_dir=d.quiz_dir,
                                  wordnet_dir=d.wordnet_dir, min_tagsense=d.min_tagsense,
                                  max_per_relation=d.max_per_relation, seed=config.seed)
    splits = facts_lib.split_facts(facts, d.in_domain, d.out_domain, few_shot=config.prompt.few_shot,
                                   test_per_relation=d.test_per_relation, seed=config.seed)
    counts = {}
    for f in facts:
      counts[f.relation] = counts.get(f.relation, 0) + 1
    return {"facts": [f.to_dict() for f in facts], "splits": splits, "facts_per_relation": counts}

  return _cached(os.path.join(workdir, "data", "facts.json"), _fingerprint(config, DATA_KEYS), compute)


def _facts_by_id(data: dict[str, Any]) -> dict[str, facts_lib.Fact]:
  return {d["id"]: facts_lib.Fact.from_dict(d) for d in data["facts"]}


# ---- stage 2: mastery -------------------------------------------------------------------------------------

def mastery(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  use_compilation_cache(workdir)
  data = build_data(config, workdir)

  def compute():
    by_id = _facts_by_id(data)
    shots = {r: [by_id[i] for i in ids] for r, ids in data["splits"]["shots"].items()}
    ids = list(data["splits"]["pool"]) + (data["splits"]["test_id"] + data["splits"]["test_ood"]
                                          if config.mastery.test_facts else [])
    m, p = config.mastery, config.prompt
    start = time.perf_counter()
    rows = []
    # Chunks of facts are cached one by one: the full set is ~10^5 generations, and a killed stage resumes.
    for c, first in enumerate(range(0, len(ids), m.chunk_facts)):
      chunk = ids[first:first + m.chunk_facts]
      rows += _cached(
          os.path.join(workdir, "mastery_chunks", f"{c:05d}.json"),
          _fingerprint(config, MASTERY_KEYS) + json.dumps(chunk),
          lambda chunk=chunk, c=c: probing.estimate_mastery(
              base_model(config), [by_id[i] for i in chunk], shots, system=p.system,
              templates=config.data.mastery_templates, samples=m.samples, temperature=m.temperature, top_p=m.top_p,
              max_new_tokens=p.max_new_tokens, batch_size=p.batch_size, prompt_buckets=p.prompt_buckets,
              seed=config.seed + 1000 * c, progress=config.train.progress_bar))
    levels = probing.mastery_level([r["mastery"] for r in rows], m.level_edges)
    for r, level in zip(rows, levels):
      r["level"] = int(level)
    pool = set(data["splits"]["pool"])
    dist = {str(l): int(sum(1 for r in rows if r["id"] in pool and r["level"] == l)) for l in range(5)}
    per_relation = {}
    for r in rows:
      rel = by_id[r["id"]].relation
      per_relation.setdefault(rel, []).append(r["mastery"])
    return {"facts": rows, "pool_distribution": dist, "wall_s": time.perf_counter() - start,
            "mean_mastery_per_relation": {k: float(np.mean(v)) for k, v in per_relation.items()}}

  return _cached(os.path.join(workdir, "mastery.json"), _fingerprint(config, MASTERY_KEYS), compute)


# ---- stage 3: fine-tuning grid ----------------------------------------------------------------------------

GRID_ORDERS = ("random", "relation_round_robin")


def by_relation(ids: list[str], relation_of: Mapping[str, str]) -> dict[str, list[str]]:
  """`ids` grouped by relation, each group in the order of `ids`, the groups in order of first appearance."""
  groups: dict[str, list[str]] = {}
  for fact_id in ids:
    groups.setdefault(relation_of[fact_id], []).append(fact_id)
  return groups


def interleave(queues: list[list[str]]) -> list[str]:
  """Round r takes the r-th item of every queue, in queue order; a queue that has run out is skipped."""
  return [q[rank] for rank in range(max(map(len, queues), default=0)) for q in queues if rank < len(q)]


def level_order(ids: list[str], relation_of: dict[str, str], seed: int, level: int, order: str) -> list[str]:
  """The order in which one level's pool facts `ids` (sorted) enter its runs of seed `seed` (`grid.order`)."""
  rng = np.random.default_rng([seed, level])
  if order == "random":
    return [ids[i] for i in rng.permutation(len(ids))]
  groups = by_relation(ids, relation_of)
  relations = sorted(groups)
  queues = []
  for r in rng.permutation(len(relations)):
    group = groups[relations[r]]
    queues.append([group[i] for i in rng.permutation(len(group))])
  return interleave(queues)  # round r takes the r-th fact of every relation


def run_name(level: int, size: int, seed: int) -> str:
  return f"L{level}_n{size}_s{seed}"


def plan_runs(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]]:
  """Every (level, size, seed) of the grid with its training facts; sizes above a level's pool are skipped.
  For one seed and level the smaller data sets are prefixes of the larger ones, so size is the only change."""
  data, mast = build_data(config, workdir), mastery(config, workdir)
  pool = set(data["splits"]["pool"])
  relation_of = {f["id"]: f["relation"] for f in data["facts"]}
  by_level: dict[int, list[str]] = {}
  for row in mast["facts"]:
    if row["id"] in pool:
      by_level.setdefault(row["level"], []).append(row["id"])
  plan = []
  for level in config.grid.levels:
    ids = sorted(by_level.get(level, []))
    for seed in config.grid.seeds:
      order = level_order(ids, relation_of, seed, level, config.grid.order)
      for size in config.grid.sizes:
        entry = {"name": run_name(level, size, seed), "level": level, "size": size, "seed": seed,
                 "available": len(ids)}
        entry["facts"] = order[:size] if size <= len(ids) else []
        plan.append(entry)
  return plan


def _train_one(config: ml_collections.ConfigDict, workdir: str, entry: dict[str, Any],
               by_id: dict[str, facts_lib.Fact], fingerprint: str) -> dict[str, Any]:
  print(f"fine-tuning {entry['name']} ({entry['size']} facts at mastery level {entry['level']})", flush=True)
  run_dir = os.path.join(workdir, "runs", entry["name"])
  # The checkpoints resume only the same run: those of another config (a run killed after its last checkpoint,
  # before its result was written) would "resume" at the final step and export the old weights.
  report_lib.claim_workdir(run_dir, hashlib.sha256(fingerprint.encode()).hexdigest()[:16])
  records = [probing.sft_record(by_id[i], config.prompt.system, config.eval.template) for i in entry["facts"]]
  tokenizer = base_model(config).tokenizer
  # The epochs policy counts the batches BucketedBatches really makes (full batches per length bucket).
  per_epoch = sft.BucketedBatches([sft.tokenize_chat(tokenizer, r["messages"]) for r in records],
                                  config.sft.length_buckets, config.sft.batch_size, tokenizer.pad_id,
                                  entry["seed"]).batches_per_epoch
  steps = config.grid.epochs * per_epoch
  run_config = copy.deepcopy(config)
  run_config.train.num_steps = steps
  run_config.train.checkpoint_every = steps
  run_config.optimizer.warmup_steps = int(round(config.grid.warmup_fraction * steps))
  run_config.seed = entry["seed"]
  start = time.perf_counter()
  model, summary = sft.finetune(run_config, os.path.join(run_dir, "train"), records, base_model(config))
  train_s = time.perf_counter() - start
  sft.export(model, os.path.join(run_dir, "model"))
  shutil.rmtree(os.path.join(run_dir, "train", "checkpoints"), ignore_errors=True)  # the export is the result
  losses = []
  with open(os.path.join(run_dir, "train", "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      if "train/loss" in row or "loss" in row:
        losses.append(row.get("train/loss", row.get("loss")))
  return {**{k: entry[k] for k in ("name", "level", "size", "seed")}, **summary, "epochs": config.grid.epochs,
          "first_logged_loss": losses[0] if losses else None, "last_logged_loss": losses[-1] if losses else None,
          "train_s": train_s, "wall_s": time.perf_counter() - start}


def finetune(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]]:
  use_compilation_cache(workdir)
  data = build_data(config, workdir)
  # Both before the model runs: the pool's size right after the split, before the mastery stage generates with it;
  # its size per level after that, before any cell trains.
  check_some_cell_runs(config, {-1: len(data["splits"]["pool"])}, "the data split")
  by_id = _facts_by_id(data)
  plan = plan_runs(config, workdir)
  available = {entry["level"]: entry["available"] for entry in plan}
  check_some_cell_runs(config, available, "the mastery stage")
  results = []
  for entry in plan:
    if not entry["facts"]:
      results.append({**{k: entry[k] for k in ("name", "level", "size", "seed")},
                      "skipped": f"only {entry['available']} pool facts at level {entry['level']}"})
      continue
    path = os.path.join(workdir, "runs", entry["name"], "result.json")
    # Only what changes this run: adding sizes, levels or seeds to the grid keeps the runs already trained.
    fingerprint = _fingerprint(config, RUN_KEYS) + json.dumps(
        [entry["facts"], entry["seed"], config.grid.epochs, config.grid.warmup_fraction, config.eval.template])
    model_dir = os.path.join(workdir, "runs", entry["name"], "model")
    if os.path.isfile(path) and not os.path.isdir(model_dir):
      os.remove(path)  # the weights were deleted: train again
    train = lambda e=entry, f=fingerprint: _train_one(config, workdir, e, by_id, f)
    results.append(_cached(path, fingerprint, train))
  return results


def trained_runs(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]]:
  return [r for r in finetune(config, workdir) if "skipped" not in r]


# ---- stage 4: CBQA evaluation -----------------------------------------------------------------------------

def _cbqa_summary(model: weights.Pretrained, config: ml_collections.ConfigDict, data: dict[str, Any],
                  levels: dict[str, int], desc: str) -> dict[str, Any]:
  by_id = _facts_by_id(data)
  p = config.prompt
  start = time.perf_counter()
  out: dict[str, Any] = {}
  # Both splits in one generation pass: fewer, fuller batches.
  all_ids = data["splits"]["test_id"] + data["splits"]["test_ood"]
  all_correct = probing.cbqa(model, [by_id[i] for i in all_ids], system=p.system, template=config.eval.template,
                             max_new_tokens=p.max_new_tokens, batch_size=p.batch_size,
                             prompt_buckets=p.prompt_buckets, progress=config.train.progress_bar, desc=desc)
  verdict = dict(zip(all_ids, all_correct))
  for split in ("test_id", "test_ood"):
    ids = data["splits"][split]
    correct = [verdict[i] for i in ids]
    out[f"{split}_accuracy"] = float(np.mean(correct))
    per_rel: dict[str, list[bool]] = {}
    per_level: dict[str, list[bool]] = {}
    for i, c in zip(ids, correct):
      per_rel.setdefault(by_id[i].relation, []).append(c)
      if i in levels:
        per_level.setdefault(str(levels[i]), []).append(c)
    out[f"{split}_per_relation"] = {k: float(np.mean(v)) for k, v in per_rel.items()}
    out[f"{split}_per_level"] = {k: [float(np.mean(v)), len(v)] for k, v in sorted(per_level.items())}
    out[f"{split}_correct"] = [bool(c) for c in correct]
  out["wall_s"] = time.perf_counter() - start
  return out


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, dict[str, Any]]:
  use_compilation_cache(workdir)
  data = build_data(config, workdir)
  levels = {r["id"]: r["level"] for r in mastery(config, workdir)["facts"]}
  results = {"base": _cached(os.path.join(workdir, "eval", "base.json"), _fingerprint(config, EVAL_KEYS),
                             lambda: _cbqa_summary(base_model(config), config, data, levels, "base"))}
  for run in trained_runs(config, workdir):
    name = run["name"]
    fingerprint = _fingerprint(config, EVAL_KEYS) + json.dumps(run, sort_keys=True, default=str)
    results[name] = _cached(os.path.join(workdir, "eval", f"{name}.json"), fingerprint,
                            lambda n=name: _cbqa_summary(run_model(config, workdir, n), config, data, levels, n))
  return results


# ---- stage 5: token-level KL and parameter restoration ----------------------------------------------------

def kl_fact_ids(test_id: list[str], test_ood: list[str], by_id: dict[str, facts_lib.Fact],
                max_facts: int) -> list[str]:
  """The test facts KL is measured on: all of them, or `max_facts` spread evenly over in-domain and out-of-domain
  and, within each, over the relations in turn (the splits list facts relation by relation, so their first
  `max_facts` would leave out the last relations whole)."""
  if len(test_id) + len(test_ood) <= max_facts:
    return test_id + test_ood
  relation_of = {i: by_id[i].relation for i in test_id + test_ood}
  sides = [interleave(list(by_relation(ids, relation_of).values())) for ids in (test_id, test_ood)]
  return interleave(sides)[:max_facts]


def _kl_conversations(config: ml_collections.ConfigDict, data: dict[str, Any]) -> list[list[dict[str, str]]]:
  by_id = _facts_by_id(data)
  ids = kl_fact_ids(data["splits"]["test_id"], data["splits"]["test_ood"], by_id, config.kl.max_facts)
  return [probing.sft_record(by_id[i], config.prompt.system, config.eval.template)["messages"] for i in ids]


def _restore_rows(config: ml_collections.ConfigDict, workdir: str, run: dict[str, Any],
                  data: dict[str, Any], levels: dict[str, int]) -> list[dict[str, Any]]:
  r = config.restore
  methods = [("top", x) for x in r.ratios] + [(s, x) for s in r.controls for x in r.control_ratios] + \
            [("magnitude", x) for x in r.magnitude_ratios] + [("dare", x) for x in r.dare_ratios]
  cache_dir = os.path.join(workdir, "analysis", f"restore_{run['name']}")
  base = base_model(config)
  base_params = nnx.to_pure_dict(base.state)
  tuned = None
  rows = []
  for selection, ratio in methods:
    # A row depends on its own rule and ratio only: adding ratios to the config keeps the rows already computed.
    fingerprint = _fingerprint(config, EVAL_KEYS) + json.dumps(
        [run, selection, ratio, r.epsilon, config.seed], sort_keys=True, default=str)

    def compute(selection=selection, ratio=ratio):
      nonlocal tuned
      start = time.perf_counter()
      if tuned is None:
        tuned = nnx.to_pure_dict(run_model(config, workdir, run["name"]).state)
      key = jax.random.key(config.seed)
      if selection == "dare":
        params, where = restore.dare(base_params, tuned, ratio, key), None
      else:
        params, masks = restore.restore(base_params, tuned, ratio, selection, epsilon=r.epsilon, rng=key)
        where = restore.breakdown(masks)
        if selection != "top":  # the per-matrix map is plotted for the paper's rule only
          where.pop("fraction_per_matrix")
        del masks
      model = with_params(base, params, f"{run['name']} {selection} {ratio}")
      selected_s = time.perf_counter() - start
      summary = _cbqa_summary(model, config, data, levels, f"{selection} {ratio:g}")
      return {"selection": selection, "ratio": ratio, "where": where,
              **{k: v for k, v in summary.items() if not k.endswith("_correct")},
              "select_s": selected_s, "wall_s": time.perf_counter() - start}

    rows.append(_cached(os.path.join(cache_dir, f"{selection}_{ratio:g}.json"), fingerprint, compute))
  return rows


def analyse(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  use_compilation_cache(workdir)
  data = build_data(config, workdir)
  levels = {r["id"]: r["level"] for r in mastery(config, workdir)["facts"]}
  runs = trained_runs(config, workdir)
  evaluate(config, workdir)
  conversations = _kl_conversations(config, data)
  out: dict[str, Any] = {"kl": {}, "restore": {}}
  for run in runs:
    fingerprint = _fingerprint(config, EVAL_KEYS + ("kl",)) + json.dumps(run, default=str)

    def compute(name=run["name"]):
      start = time.perf_counter()
      base, tuned = base_model(config), run_model(config, workdir, name)
      out = kl_lib.mean_token_kl(base.graphdef, tuned.state, base.state, base.tokenizer, conversations,
                                 batch_size=config.kl.batch_size, length_buckets=config.sft.length_buckets)
      return {**out, "wall_s": time.perf_counter() - start}

    out["kl"][run["name"]] = _cached(os.path.join(workdir, "analysis", f"kl_{run['name']}.json"), fingerprint, compute)
  for run in runs:
    if run["level"] in config.restore.levels and run["size"] in config.restore.sizes and \
        run["seed"] == config.restore.seed:
      out["restore"][run["name"]] = _restore_rows(config, workdir, run, data, levels)
  return out


def run_all(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Every stage in order (each reuses its cached output)."""
  validate_config(config)
  timings = {}
  results: dict[str, Any] = {}
  for stage, fn in (("build_data", build_data), ("mastery", mastery), ("finetune", finetune),
                    ("evaluate", evaluate), ("analyse", analyse)):
    start = time.perf_counter()
    results[stage] = fn(config, workdir)
    timings[stage] = time.perf_counter() - start
  results["timings_s"] = timings
  return results
