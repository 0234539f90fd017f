"""The entrypoint's config checks and (slow) an end-to-end stage 0-1-2 run on a few easy-VQA questions."""

import json
import os
import re

import jax
import numpy as np
import pytest
from flax import nnx

from core import config as config_lib
from core import entrypoint
from moiie import training


def test_entrypoint_rejects_bad_config_before_compiling():
  base = ["--config", "configs/moiie/easyvqa_tiny.py:quick", "--workdir", "/tmp/unused"]
  with pytest.raises(config_lib.ConfigError, match="moe.variant"):
    entrypoint.load([*base, "--config.moe.variant=switch"], training.validate_config)
  with pytest.raises(config_lib.ConfigError, match="unknown config key"):
    entrypoint.load([*base, "--config.moe.topk=2"], training.validate_config)
  config, _ = entrypoint.load([*base, "--config.moe.variant=vanilla"], training.validate_config)
  assert training.moe_spec(config).num_experts == 4 and not training.moe_spec(config).per_modality_routers
  config, _ = entrypoint.load([*base, "--config.moe.variant=dense"], training.validate_config)
  assert training.moe_spec(config) is None
  # a stage cut below its warm-up is refused here, not after the stages before it have trained
  with pytest.raises(config_lib.ConfigError, match=r"stage2.optimizer.warmup_steps.*below the run's 20 steps"):
    entrypoint.load([*base, "--config.stage2.train.num_steps=20"], training.validate_config)
  for variant in ("quick", "full"):  # every shipped config passes its own check
    for name in ("easyvqa_tiny", "easyvqa_smollm2"):
      entrypoint.load(["--config", f"configs/moiie/{name}.py:{variant}", "--workdir", "/tmp/unused"],
                      training.validate_config)


@pytest.mark.parametrize("overrides,message", [
    # a pretrained setting under the tiny LLM would be dropped without a word
    (["llm.pretrained.source=/nonexistent.gguf"], r"llm.pretrained.source = '/nonexistent.gguf' is set, but "
     r"config.llm.source = 'tiny'.*Fix: pass --config.llm.source=pretrained .*or drop"),
    (["llm.pretrained.dtype=bfloat16"], r"llm.pretrained.dtype"),
    # sizes that something divides by are positive before that division
    (["vision.patch_size=0"], r"vision.patch_size = 0 is invalid: must be a finite number > 0"),
    (["vision.heads=0"], r"vision.heads = 0 is invalid: must be a finite number > 0"),
    # the suggested patch sizes pass every check (image_size is fixed at 64 by the data)
    (["vision.patch_size=7"], r"vision.patch_size = 7 .*must divide vision.image_size \(64.*e.g. 4 or 8>"),
    (["vision.patch_size=7", "vision.image_size=63"], r"vision.image_size = 63 .*must be 64"),
    # the sequences (image slots included) must fit the tiny LLM's context
    (["llm.tiny.max_seq_len=16"], r"llm.tiny.max_seq_len = 16 .*data.seq_len = 40.*Fix: pass "
     r"--config.llm.tiny.max_seq_len=40"),
    (["seed=-1"], r"config.seed = -1 is invalid"),
    (["vision.depth=0"], r"vision.depth = 0 is invalid: must be a finite number > 0"),
    # a MoE variant must have a layer to upcycle (else upcycle refused only after stages 0 and 1 had trained)
    (["llm.tiny.num_layers=1"], r"moe.every = 2 and config.moe.offset = 1 select no layer of the 1-layer LLM.*"
     r"Fix: pass --config.moe.offset=<less than 1>"),
    (["moe.every=8", "moe.offset=5"], r"select no layer of the 4-layer LLM .*variant 'moiie'"),
    # GShard's one-hot tensors over the 500-question evaluation batch: 2 x 20,000 x 4 x 20,000 floats
    (["moe.path=einsum"], r"moe.path = 'einsum' over config.data.eval_batch_size = 500 sequences \(20000 tokens\) "
     r"needs 11.9 GiB .*Fix: --config.moe.path=sparse"),
])
def test_bad_inputs_fail_in_validation(overrides, message):
  config = config_lib.load_config("configs/moiie/easyvqa_tiny.py:quick", overrides)
  with pytest.raises(config_lib.ConfigError, match=message):
    training.validate_config(config)


def test_a_mistyped_reuse_folder_is_refused_not_created(tmp_path):
  missing = tmp_path / "no_such_dir"
  config = config_lib.load_config("configs/moiie/easyvqa_tiny.py:quick", [f"reuse_stages_from={missing}"])
  with pytest.raises(config_lib.ConfigError, match=re.escape(f"reuse_stages_from = '{missing}' is not an existing "
                                                             "folder")):
    training.validate_config(config)
  assert not missing.exists()


def test_suggested_patch_sizes_validate():
  for patch in (4, 8):  # what the patch_size=7 message suggests
    training.validate_config(config_lib.load_config("configs/moiie/easyvqa_tiny.py:quick",
                                                    [f"vision.patch_size={patch}", "vision.image_pool=1"]))


def test_training_batches_must_split_over_the_devices(monkeypatch):
  """Checked in validation, not when stage 1's first batch is placed after stage 0 has trained."""
  monkeypatch.setattr(training.jax, "device_count", lambda: 8)
  base = "configs/moiie/easyvqa_tiny.py:quick"
  for key in ("data.batch_size", "stage0.batch_size"):
    with pytest.raises(config_lib.ConfigError, match=rf"{key} = 12 is invalid: must be divisible by the number of "
                       r"devices \(8\).*e.g. 8, 16"):
      training.validate_config(config_lib.load_config(base, [f"{key}=12"]))
  # the evaluation's batches are not split over devices: any size runs (the shipped 500 too)
  training.validate_config(config_lib.load_config(base, ["data.eval_batch_size=12"]))
  for variant in ("quick", "full"):
    for name in ("easyvqa_tiny", "easyvqa_smollm2"):
      training.validate_config(config_lib.load_config(f"configs/moiie/{name}.py:{variant}"))


def test_reused_stages_must_be_finished_with_the_same_settings(tmp_path):
  base = "configs/moiie/easyvqa_tiny.py:quick"
  config = config_lib.load_config(base, [f"reuse_stages_from={tmp_path}"])
  (tmp_path / "stage0").mkdir()
  (tmp_path / "stage0" / "final.npz").write_bytes(b"")
  with pytest.raises(config_lib.ConfigError, match=r"holds no finished stage1 .*stage1/final.npz is missing"):
    training.validate_config(config)
  (tmp_path / "stage1").mkdir()
  (tmp_path / "stage1" / "final.npz").write_bytes(b"")
  training.validate_config(config)  # finished stages without a settings record are reused (older runs)
  for stage in ("stage0", "stage1"):
    (tmp_path / stage / "settings.txt").write_text(training.stage_settings(config, stage) + "\n")
  training.validate_config(config)
  other = config_lib.load_config(base, [f"reuse_stages_from={tmp_path}", "seed=1"])
  with pytest.raises(config_lib.ConfigError, match=r"its stage0 was trained with other settings"):
    training.validate_config(other)


def test_expert_parallel_config():
  base = ["--config", "configs/moiie/easyvqa_tiny.py:quick", "--workdir", "/tmp/unused"]
  config, _ = entrypoint.load(base, training.validate_config)
  assert not config.mesh.expert_parallel and training.expert_sharding_rules(config.mesh) == ()  # FSDP default
  # the expert count must split evenly over fsdp (MoIIE has 4 experts, modality MoE 2)
  with pytest.raises(config_lib.ConfigError, match=r"4 experts over config.mesh.fsdp = 3 .*Fix: pass "
                     r"--config.mesh.fsdp=<a divisor of 4> or --config.mesh.expert_parallel=false"):
    entrypoint.load([*base, "--config.mesh.expert_parallel=true", "--config.mesh.fsdp=3"], training.validate_config)
  with pytest.raises(config_lib.ConfigError, match=r"2 experts over config.mesh.fsdp = 4"):
    entrypoint.load([*base, "--config.moe.variant=modality", "--config.mesh.expert_parallel=true",
                     "--config.mesh.fsdp=4"], training.validate_config)
  config, _ = entrypoint.load([*base, "--config.mesh.expert_parallel=true"], training.validate_config)
  (pattern, spec), = training.expert_sharding_rules(config.mesh)
  assert spec == jax.sharding.PartitionSpec("fsdp")
  for path in (".params['llm']['layers'][1]['mlp']['gate'].value", ".opt_state[1][0].mu['llm']['layers'][3]['mlp']"
               "['down'].value", ".opt_state[1][0].nu['llm']['layers'][1]['mlp']['up'].value"):
    assert re.search(pattern, path), path
  for path in (".params['llm']['layers'][0]['mlp']['gate_proj']['kernel'].value",
               ".params['llm']['layers'][1]['mlp']['router'].value", ".opt_state[1][0].count"):
    assert not re.search(pattern, path), path


def test_the_pretrained_vit_is_what_the_lvlm_runs(tmp_path):
  """A stage-0 file (the ViT's own variable names) loads into `lvlm.vit` variable for variable; loading it into the
  whole LVLM, whose names start with vit/, is an error rather than a silent no-op."""
  config = config_lib.load_config("configs/moiie/easyvqa_tiny.py:quick,moiie")
  tokenizer = training.build_tokenizer(config)
  vit = training.build_vit(config, nnx.Rngs(123), 3)
  for _, v in nnx.to_flat_state(nnx.state(vit)):
    v.set_value(v.get_value() + 1.0)
  training.save_model(vit, str(tmp_path / "vit.npz"))
  model = training.build_lvlm(config, tokenizer, 3)
  training.load_model(model.vit, str(tmp_path / "vit.npz"))
  for (_, a), (_, b) in zip(nnx.to_flat_state(nnx.state(model.vit)), nnx.to_flat_state(nnx.state(vit))):
    np.testing.assert_array_equal(np.asarray(a.get_value()), np.asarray(b.get_value()))
  with pytest.raises(ValueError, match=r"lacks .* variables.*model.vit"):
    training.load_model(model, str(tmp_path / "vit.npz"))


@pytest.mark.slow
def test_stages_run_end_to_end(tmp_path):
  overrides = ["data.train_subset=256", "data.test_subset=64", "data.eval_batch_size=64",
               *[f"stage{i}.{key}=3" for i in range(3) for key in ("train.num_steps", "train.checkpoint_every")],
               *[f"stage{i}.optimizer.warmup_steps=1" for i in range(3)]]
  config = config_lib.load_config("configs/moiie/easyvqa_tiny.py:quick,moiie", overrides)
  results = training.train_and_evaluate(config, str(tmp_path / "moiie"))
  assert results["moe_layers"] == [1, 3]
  accuracy = results["test"]["accuracy"]  # exact match over exactly the 64 test questions: a multiple of 1/64
  assert 0.0 <= accuracy <= 1.0 and abs(accuracy * 64 - round(accuracy * 64)) < 1e-6, accuracy
  assert os.path.exists(tmp_path / "moiie" / "router_load.png")
  with open(tmp_path / "moiie" / "results.json") as f:
    recorded = json.load(f)
  assert recorded["variant"] == "moiie" and recorded["moe_spec"]["n_inter"] == 2 and recorded["moe_spec"]["top_k"] == 2
  from moiie import report  # the report's scale column reads the sizes the run built
  assert "tiny random Llama (4 layers, d=64) + 2-layer ViT; steps: stage0 3, stage1 3, stage2 3" in report.scale(recorded)
  # the frozen encoder of stages 1 and 2 is the stage-0 ViT (stage 1's file holds the model it trained)
  vit_file, stage1_file = (np.load(tmp_path / "moiie" / s / "final.npz") for s in ("stage0", "stage1"))
  for name in vit_file.files:
    np.testing.assert_array_equal(stage1_file[f"vit/{name}"], vit_file[name])
  # a second variant reuses stages 0 and 1 and trains only stage 2
  config = config_lib.load_config("configs/moiie/easyvqa_tiny.py:quick,dense",
                                  [*overrides, f"reuse_stages_from={tmp_path / 'moiie'}"])
  training.train_and_evaluate(config, str(tmp_path / "dense"))
  assert not os.path.exists(tmp_path / "dense" / "stage1")


def test_evaluation_keeps_wrapped_rows_out_of_answers_and_expert_loads():
  """The last batch wraps around to keep one compiled shape; the repeated rows must count in neither the accuracy
  nor the expert loads. Batches pooled by their routed tokens of each modality give exactly the load of one batch
  holding every question, for vision (equal tokens per row) and for text (lengths differ between rows)."""
  from moiie import upcycle, vqa
  config = config_lib.load_config("configs/moiie/easyvqa_tiny.py:quick,moiie")
  tokenizer = training.build_tokenizer(config)
  model = training.build_lvlm(config, tokenizer, vqa.image_labels("train")["num_colors"])
  upcycle.upcycle(model.llm, training.moe_spec(config), every=config.moe.every, offset=config.moe.offset,
                  rngs=nnx.Rngs(7), router_init_std=1.0)  # a strong random router: loads differ between rows
  seq = vqa.build_sequences("test", tokenizer, model.num_image_tokens, config.data.seq_len, subset=40)
  assert not set(seq.image_index[:8]) & set(seq.image_index[32:])
  # The model is untrained (accuracy 0): rows 0-7, the ones that wrap, are made exact matches by clearing their
  # answer mask, so counting them twice would change the accuracy (8/40 vs 16/48).
  seq.loss_mask[:8] = False
  whole = training.evaluate(model, seq, batch_size=40)
  assert whole["accuracy"] == 8 / 40
  wrapped = training.evaluate(model, seq, batch_size=16)  # rows 0-15, 16-31, then 32-39 and 0-7 again
  for key in ["accuracy", "accuracy_se_by_image"] + [f"accuracy_{name}" for name in vqa.QUESTION_TYPES]:
    np.testing.assert_allclose(wrapped[key], whole[key], err_msg=key)
  np.testing.assert_allclose(wrapped["load_vision"], whole["load_vision"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(wrapped["load_text"], whole["load_text"], rtol=1e-5, atol=1e-6)
  assert np.asarray(whole["load_vision"]).std() > 0.05  # the checks above compare uneven loads
  assert np.asarray(whole["load_text"]).std() > 0.05
  text_tokens = (seq.arrays()["attention_mask"].astype(bool) & ~seq.arrays()["image_mask"].astype(bool)).sum(1)
  assert len(set(text_tokens.tolist())) > 1  # text lengths differ, so pooling by rows would not be exact


def test_standard_error_by_image_matches_hand_computation():
  """Two images, questions 1,1,0 about the first and 0 about the second: mean 1/2, residual sums 1/2 and -1/2,
  Var = 2/1 * (1/4 + 1/4) / 16 = 1/16. With one question per image it reduces to sqrt(n/(n-1)) * sd/sqrt(n)."""
  assert training.standard_error_by_cluster(np.array([1, 1, 0, 0]), np.array([5, 5, 5, 9])) == 0.25
  x = np.array([1, 0, 1, 1, 0, 1.0])
  np.testing.assert_allclose(training.standard_error_by_cluster(x, np.arange(6)), x.std(ddof=1) / np.sqrt(6))
  assert np.isnan(training.standard_error_by_cluster(x, np.zeros(6)))


def test_a_finished_stage_trained_with_other_settings_is_not_reused(tmp_path):
  """A stage folder records what trained it; a run with other settings stops instead of silently reusing it."""
  base = config_lib.load_config("configs/moiie/easyvqa_tiny.py:quick,moiie")
  other_seed = config_lib.load_config("configs/moiie/easyvqa_tiny.py:quick,moiie", ["seed=1"])
  dense = config_lib.load_config("configs/moiie/easyvqa_tiny.py:quick,dense", ["data.test_subset=7"])
  assert training.stage_settings(base, "stage1") == training.stage_settings(dense, "stage1")  # shared by variants
  assert training.stage_settings(base, "stage2") != training.stage_settings(dense, "stage2")
  assert training.stage_settings(base, "stage0") != training.stage_settings(other_seed, "stage0")
  stage_dir = tmp_path / "stage0"
  stage_dir.mkdir()
  vit = training.build_vit(base, nnx.Rngs(0), 3)
  training.save_model(vit, str(stage_dir / "final.npz"))
  (stage_dir / "settings.txt").write_text(training.stage_settings(base, "stage0") + "\n")
  def never_trained(*args, **kwargs):
    raise AssertionError("a finished stage must not train again")
  args = (vit, str(stage_dir), nnx.Param, training.vit_loss, None, base.stage0, base.mesh, 8, 0)
  original = training.train_stage
  training.train_stage = never_trained
  try:
    training._train_once(*args, settings=training.stage_settings(base, "stage0"))  # same settings: reused
    with pytest.raises(ValueError, match="trained or begun with other settings.*Fix: use another --workdir"):
      training._train_once(*args, settings=training.stage_settings(other_seed, "stage0"))
    (stage_dir / "final.npz").unlink()  # a stage killed mid-training: its checkpoints would be resumed
    (stage_dir / "checkpoints").mkdir()
    with pytest.raises(ValueError, match="trained or begun with other settings"):
      training._train_once(*args, settings=training.stage_settings(other_seed, "stage0"))
    # a fresh stage folder: its settings are recorded before it trains, the folder made for them
    fresh = tmp_path / "runs" / "stage0"
    recorded = []
    training.train_stage = lambda model, *a, **k: recorded.append((fresh / "settings.txt").read_text()) or model
    source = {"image": np.zeros((16, 64, 64, 3), np.uint8), "shape": np.zeros(16, np.int32),
              "color": np.zeros(16, np.int32)}
    training._train_once(vit, str(fresh), nnx.Param, training.vit_loss, source, *args[5:],
                         settings=training.stage_settings(base, "stage0"))
    assert recorded == [training.stage_settings(base, "stage0") + "\n"] and (fresh / "final.npz").exists()
  finally:
    training.train_stage = original


def test_each_pretrained_run_starts_from_the_loaded_weights(monkeypatch, tmp_path):
  # The loaded LLM is cached per process; a run writes its trained weights into its own model (load_model after
  # each stage), which must not reach the cache and the next run built in the same process.
  from core.llm import config as llm_config
  from core.llm import model as llm_model
  from core.llm import weights
  from moiie import vqa
  tokenizer = vqa.word_tokenizer()

  def load(model_config):
    llm = llm_model.Llama(llm_config.tiny(hidden_size=16, intermediate_size=32, vocab_size=tokenizer.vocab_size),
                          nnx.Rngs(0))
    graphdef, state = nnx.split(llm)
    return weights.Pretrained(config=llm.config, graphdef=graphdef, state=state, tokenizer=tokenizer, source="t")
  monkeypatch.setattr(weights, "load_from_config", load)
  monkeypatch.setattr(training, "_PRETRAINED", {})
  config = config_lib.load_config("configs/moiie/easyvqa_smollm2.py:quick", [])
  first = training.build_lvlm(config, tokenizer, 8)
  loaded = np.asarray(first.llm.norm.weight.get_value())
  training.save_model(first, str(tmp_path / "trained.npz"))
  trained = {k: v + 1.0 if k.startswith("llm/") else v for k, v in np.load(tmp_path / "trained.npz").items()}
  np.savez(tmp_path / "final.npz", **trained)
  training.load_model(first, str(tmp_path / "final.npz"))  # what a stage does when it ends
  np.testing.assert_array_equal(first.llm.norm.weight.get_value(), loaded + 1.0)
  second = training.build_lvlm(config, tokenizer, 8)
  np.testing.assert_array_equal(second.llm.norm.weight.get_value(), loaded)
