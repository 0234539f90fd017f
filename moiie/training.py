"""Training of the MoIIE LVLM in the paper's stages (arXiv 2508.09779, sec. 3.4), on easy-VQA, plus evaluation.

  * stage 0 (ours; the paper starts from a pretrained SigLIP): pretrain the ViT on the training images (shape and
    color classification read off the training questions), then freeze it.
  * stage 1 (pre-training / alignment): vision encoder and LLM frozen, only the projector trains.
  * stage 2 (instruction tuning): upcycle the LLM's FFNs on every other layer into the configured MoE variant
    (dense keeps them), then projector + whole LLM (experts and routers) train together; the loss is the answer
    cross-entropy plus the MoE auxiliary loss.

Each stage runs the shared `core.train` loop on the config's `mesh` in its own folder (checkpoints, resume,
metrics.jsonl) and leaves `final.npz` (every variable of the model) that the next stage starts from; a finished
stage is skipped on rerun.
`reuse_stages_from` points stages 0 and 1 at another run's folder, so variants compared in the report share the
same stage-0/1 model and differ in stage 2 only (equal steps, same data order).

Expert parallelism (`mesh.expert_parallel`): the loop's FSDP default would split a stacked expert weight
[E, D, F] along F (its largest dimension), so every device would hold a slice of every expert. The rule from
`expert_sharding_rules` instead splits the expert axis E over `fsdp`, so each device holds whole experts (and
their Adam moments, whose key paths end with the weight's); XLA moves the routed tokens to them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from core import config as config_lib
from core import files
from core import sharding as sharding_lib
from core.data import pipeline
from core.llm import config as llm_config_lib
from core.llm import model as llm_model
from core import train as train_lib
from moiie import lvlm, routing, upcycle, vqa

LLM_SOURCES = ("tiny", "pretrained")
# Key path of a MoIIE layer's stacked expert weights (gate/up [E, D, F], down [E, F, D]) inside a train state, for
# the parameter and for every optimizer state that mirrors it; `upcycle` puts the layer at a block's `mlp`, whose
# dense weights are `gate_proj`/`up_proj`/`down_proj` and do not match.
EXPERT_WEIGHTS = r"\['mlp'\]\['(gate|up|down)'\](\.\w+)?$"


# ---------------------------------------------------------------- config

def validate_config(config: ml_collections.ConfigDict) -> None:
  config_lib.check_choice(config, "llm.source", LLM_SOURCES)
  _check_unused_pretrained(config)
  _check_seed(config)
  _check_vision(config)
  for key in ("data.seq_len", "data.batch_size", "data.eval_batch_size", "stage0.batch_size"):
    config_lib.check_positive(config, key)
  # A training batch is split over all devices: a remainder would fail only when that stage's first batch is
  # placed, after the stages before it have trained. The evaluation's jitted batches are not split (any size runs;
  # the shipped eval size 500 does not divide by 8 devices), so data.eval_batch_size is free.
  for key in ("data.batch_size", "stage0.batch_size"):
    config_lib.check_divisible(config, key, jax.device_count(), "the number of devices")
  for key in ("data.train_subset", "data.test_subset"):
    config_lib.check_positive(config, key, allow_zero=True)
  routing.validate_moe_config(config, "moe")
  # the expert count first: its message names the expert-parallel fix, not only the device count
  config_lib.check(config, "mesh.expert_parallel", lambda v: isinstance(v, bool), "must be true or false")
  fsdp = config_lib.check_positive(config, "mesh.fsdp")
  spec = moe_spec(config)
  if config.mesh.expert_parallel and spec is not None and spec.num_experts % fsdp:
    raise config_lib.ConfigError(
        f"config.mesh.expert_parallel splits each MoE layer's {spec.num_experts} experts over "
        f"config.mesh.fsdp = {fsdp} devices, which does not divide {spec.num_experts}. Fix: pass "
        f"--config.mesh.fsdp=<a divisor of {spec.num_experts}> or --config.mesh.expert_parallel=false.")
  sharding_lib.validate_mesh_config(config, "mesh")
  if spec is not None and spec.path == "einsum":
    _check_einsum_dispatch_size(config, spec)
  for stage in ("stage0", "stage1", "stage2"):
    train_lib.validate_train_config(config, f"{stage}.train")
    train_lib.validate_optimizer_config(config, f"{stage}.optimizer", num_steps=config[stage].train.num_steps)
  if config.llm.source == "tiny":
    config_lib.check_positive(config, "llm.tiny.num_layers")
    # The sequences are padded to data.seq_len, image slots included, and the LLM reads them whole.
    config_lib.check_positive(config, "llm.tiny.max_seq_len")
    config_lib.check(config, "llm.tiny.max_seq_len", lambda n: n >= config.data.seq_len,
                     f"the tiny LLM's context must hold data.seq_len = {config.data.seq_len} tokens (image tokens "
                     "included)", f"pass --config.llm.tiny.max_seq_len={config.data.seq_len} or more (or a smaller "
                     "data.seq_len)")
    check_moe_layers(config, config.llm.tiny.num_layers)
  _check_reused_stages(config)


def check_moe_layers(config: ml_collections.ConfigDict, num_layers: int) -> None:
  """A MoE variant must upcycle at least one of the LLM's `num_layers` layers; else `upcycle` would refuse only
  after stages 0 and 1 had trained. (The tiny LLM's count is in the config; the pretrained one's is checked as soon
  as its weights load, before stage 0.)"""
  if moe_spec(config) is None or upcycle.moe_layer_indices(num_layers, config.moe.every, config.moe.offset):
    return
  raise config_lib.ConfigError(
      f"config.moe.every = {config.moe.every} and config.moe.offset = {config.moe.offset} select no layer of the "
      f"{num_layers}-layer LLM (MoE layers are those with index % every == offset), so variant "
      f"{config.moe.variant!r} would have nothing to upcycle. Fix: pass --config.moe.offset=<less than "
      f"{min(num_layers, config.moe.every)}>, or a smaller --config.moe.every.")


# GShard's dispatch and combine tensors are [T, E, C] floats over all T tokens of a batch (one group), and C grows
# with T, so they grow with T^2: a batch whose pair of them would pass this many bytes is refused.
EINSUM_DISPATCH_LIMIT_BYTES = 2 * 2**30


def _check_einsum_dispatch_size(config: ml_collections.ConfigDict, spec: routing.MoESpec) -> None:
  for key in ("data.batch_size", "data.eval_batch_size"):
    tokens = config_lib.get_value(config, key) * config.data.seq_len
    size = 2 * tokens * spec.num_experts * spec.capacity(tokens) * 4
    if size > EINSUM_DISPATCH_LIMIT_BYTES:
      raise config_lib.ConfigError(
          f"config.moe.path = 'einsum' over config.{key} = {config_lib.get_value(config, key)} sequences "
          f"({tokens} tokens) needs {size / 2**30:.1f} GiB for each MoE layer's dispatch and combine tensors "
          f"([T, E, C] with C = {spec.capacity(tokens)} slots per expert), which grow with the square of the "
          f"tokens per batch. Fix: --config.moe.path=sparse (the same exact, dropless layer), or a smaller "
          f"--config.{key}.")


def _check_unused_pretrained(config: ml_collections.ConfigDict) -> None:
  """With the tiny LLM, `llm.pretrained` is never read: a path or numerics set there would be silently dropped."""
  if config.llm.source != "tiny":
    return
  defaults = llm_config_lib.pretrained_config()
  for key in sorted(config.llm.pretrained.keys()):
    if key in defaults and config.llm.pretrained[key] != defaults[key]:
      value = config.llm.pretrained[key]
      raise config_lib.ConfigError(
          f"config.llm.pretrained.{key} = {value!r} is set, but config.llm.source = 'tiny' trains the tiny random "
          f"LLM and never reads llm.pretrained. Fix: pass --config.llm.source=pretrained to use it, or drop "
          f"--config.llm.pretrained.{key}.")


def _check_seed(config: ml_collections.ConfigDict) -> None:
  # The stages draw with seed, seed + 1 and seed + 2; the batch pipeline takes seeds in [0, 2**32).
  config_lib.check_seed(config, "seed", 2**32 - 2,
                        "must be an integer in [0, 2**32 - 2) (stages 1 and 2 use seed + 1 and seed + 2)")


def _check_vision(config: ml_collections.ConfigDict) -> None:
  """The ViT's sizes, each positive before anything divides by it; image_size first, as it is fixed by the data
  and the patch size is then checked against (and suggested from) that value."""
  v = config.vision
  config_lib.check(config, "vision.image_size", lambda s: s == 64,
                   "must be 64: easy-VQA images are 64x64", "pass --config.vision.image_size=64")
  for key in ("vision.patch_size", "vision.dim", "vision.depth", "vision.heads", "vision.mlp_dim"):
    config_lib.check_positive(config, key)
  if v.image_size % v.patch_size:
    sizes = [p for p in range(1, v.image_size + 1) if v.image_size % p == 0]
    near = sorted(sizes, key=lambda p: (abs(p - v.patch_size), p))[:2]
    raise config_lib.ConfigError(
        f"config.vision.patch_size = {v.patch_size!r} is invalid: must divide vision.image_size ({v.image_size}, "
        f"fixed by the easy-VQA images). Fix: pass --config.vision.patch_size=<a divisor of {v.image_size}, "
        f"e.g. {' or '.join(map(str, sorted(near)))}>.")
  grid = v.image_size // v.patch_size
  config_lib.check_divisible(config, "vision.dim", v.heads, "vision.heads")
  config_lib.check(config, "vision.image_pool", lambda p: p >= 1 and grid % p == 0,
                   f"must divide the patch grid side ({grid})")


def _check_reused_stages(config: ml_collections.ConfigDict) -> None:
  """`reuse_stages_from` must hold finished stages 0 and 1 (`final.npz`) of the same settings: a missing or
  unfinished folder would otherwise be created or trained into, as if it were this run's own workdir."""
  source = config.reuse_stages_from
  if not source:
    return
  if not os.path.isdir(source):
    raise config_lib.ConfigError(
        f"config.reuse_stages_from = {source!r} is not an existing folder. Fix: pass the --workdir of a finished "
        "run with the same stage-0/1 settings, or leave it empty ('') to train stages 0 and 1 in this workdir.")
  for stage in ("stage0", "stage1"):
    stage_dir = os.path.join(source, stage)
    if not os.path.isfile(os.path.join(stage_dir, "final.npz")):
      raise config_lib.ConfigError(
          f"config.reuse_stages_from = {source!r} holds no finished {stage} ({stage_dir}/final.npz is missing). "
          "Fix: run that workdir's training to the end first, pass another finished run's workdir, or leave "
          "reuse_stages_from empty ('') to train stages 0 and 1 in this workdir.")
    recorded = files.read_marker(os.path.join(stage_dir, "settings.txt"))
    if recorded is not None and recorded != stage_settings(config, stage):
      raise config_lib.ConfigError(
          f"config.reuse_stages_from = {source!r}: its {stage} was trained with other settings ({recorded}, this "
          f"config gives {stage_settings(config, stage)}: seed, vision, llm, data or a stage's training differ). "
          "Fix: pass a run with this config's stage-0/1 settings, or leave reuse_stages_from empty.")


def moe_spec(config) -> routing.MoESpec | None:
  moe = config.moe.copy_and_resolve_references()
  if moe.variant == "dense":
    return None
  routing.apply_variant(moe)
  return routing.spec_from_config(moe)


def expert_sharding_rules(mesh_config: ml_collections.ConfigDict) -> tuple[sharding_lib.ShardingRule, ...]:
  """`core.sharding` rules of the `mesh` section: with expert_parallel, expert axis over `fsdp`; else none (the
  FSDP default for every leaf)."""
  if not mesh_config.expert_parallel:
    return ()
  return ((EXPERT_WEIGHTS, jax.sharding.PartitionSpec("fsdp")),)


# ---------------------------------------------------------------- model

def build_tokenizer(config):
  if config.llm.source == "tiny":
    return vqa.word_tokenizer()
  return _pretrained(config.llm.pretrained).tokenizer


def _pretrained(model_config):
  """The real-weights LLM, loaded once per process (the tokenizer and the model come from the same file)."""
  from core.llm import weights
  key = json.dumps(dict(model_config), sort_keys=True)
  if key not in _PRETRAINED:
    _PRETRAINED[key] = weights.load_from_config(model_config)
  return _PRETRAINED[key]


_PRETRAINED: dict = {}


def build_vit(config, rngs: nnx.Rngs, num_colors: int) -> lvlm.ViT:
  v = config.vision
  return lvlm.ViT(v.image_size, v.patch_size, v.dim, v.depth, v.heads, v.mlp_dim, len(vqa.SHAPES), num_colors,
                  rngs=rngs)


def build_lvlm(config, tokenizer, num_colors: int) -> lvlm.LVLM:
  """The dense LVLM (random projector; ViT and LLM as initialised, to be overwritten by the stage inputs)."""
  rngs = nnx.Rngs(config.seed)
  vit = build_vit(config, rngs, num_colors)
  if config.llm.source == "tiny":
    llm_cfg = llm_config_lib.LlamaConfig.from_dict({**dict(config.llm.tiny), "vocab_size": tokenizer.vocab_size})
    llm = llm_model.Llama(llm_cfg, rngs)
  else:
    # A copy of the loaded arrays: merged without one, the module would share its Variables with the per-process
    # cache, and a stage loading trained weights into it would hand them to the next run in this process.
    pretrained = _pretrained(config.llm.pretrained)
    llm = nnx.merge(pretrained.graphdef, pretrained.state, copy=True)
    check_moe_layers(config, llm.config.num_layers)
  projector = lvlm.Projector(config.vision.dim, llm.config.hidden_size, rngs)
  return lvlm.LVLM(vit, projector, llm, config.vision.image_pool)


def save_model(model: nnx.Module, path: str) -> None:
  flat = nnx.to_flat_state(nnx.state(model))
  arrays = {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in flat}
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)  # atomic: a stage counts as finished only when its file is complete


def load_model(model: nnx.Module, path: str) -> None:
  """Overwrites every variable of `model` with the array of the same name in the file (`save_model`'s names,
  relative to `model`: load a stage-0 ViT into `lvlm.vit`, not into the LVLM). All of them must be there: a name
  that does not match would otherwise leave that variable at its initial value without a word."""
  data = np.load(path)
  state = nnx.state(model)
  flat = [("/".join(map(str, k)), v) for k, v in nnx.to_flat_state(state)]
  missing = [name for name, _ in flat if name not in data.files]
  if missing:
    raise ValueError(f"{path} lacks {len(missing)} of the model's {len(flat)} variables (e.g. {missing[:3]}; the "
                     f"file has e.g. {data.files[:3]}). Fix: load the file into the module it was saved from "
                     "(a stage-0 ViT into `model.vit`), or reuse stages only from a run with the same model config.")
  for name, v in flat:
    value = data[name]
    if value.shape != v.get_value().shape:
      raise ValueError(f"{path}: {name} has shape {value.shape}, the model expects {v.get_value().shape}. "
                       "Fix: reuse stages only from a run with the same model config.")
    v.set_value(jnp.asarray(value, v.get_value().dtype))
  nnx.update(model, state)


# ---------------------------------------------------------------- losses

def answer_loss(logits, batch):
  mask = batch["loss_mask"].astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, batch["targets"][..., None], axis=-1)[..., 0]
  correct = (jnp.argmax(logits, axis=-1) == batch["targets"]) | ~batch["loss_mask"]
  return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0), jnp.all(correct, axis=-1)


def _lvlm_call(model: lvlm.LVLM, batch):
  return model(batch.get("image"), batch["tokens"], batch["image_mask"], batch["attention_mask"],
               batch.get("image_features"), batch.get("route_mask"))


def lvlm_loss(model: lvlm.LVLM, batch, rng):
  del rng
  logits, aux = _lvlm_call(model, batch)
  ce, exact = answer_loss(logits, batch)
  metrics = {"answer_nll": ce, "exact_match": jnp.mean(exact.astype(jnp.float32)),
             "aux_loss": aux["aux_loss"], "balance_vision": aux["balance_vision"],
             "balance_text": aux["balance_text"]}
  return ce + aux["aux_loss"], metrics


def vit_loss(model: lvlm.ViT, batch, rng):
  del rng
  shape_logits, color_logits = model.classify(batch["image"])

  def masked_ce(logits, labels):
    ok = labels >= 0
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
    acc = (jnp.argmax(logits, -1) == labels) & ok
    n = jnp.maximum(jnp.sum(ok), 1)
    return jnp.sum(jnp.where(ok, ce, 0.0)) / n, jnp.sum(acc) / n

  ce_s, acc_s = masked_ce(shape_logits, batch["shape"])
  ce_c, acc_c = masked_ce(color_logits, batch["color"])
  return ce_s + ce_c, {"shape_acc": acc_s, "color_acc": acc_c}


# ---------------------------------------------------------------- stages

def train_stage(model, trainable, loss_fn, batches, stage_cfg, mesh_cfg, seed: int, workdir: str):
  """One stage on the shared loop: `stage_cfg`'s optimizer and steps, the state laid out over `mesh_cfg`'s mesh
  (with the expert rule when `mesh_cfg.expert_parallel`). Returns the trained model (its arrays on that mesh)."""
  tx = train_lib.make_optimizer(stage_cfg.optimizer, stage_cfg.train.num_steps)
  graphdef, state = train_lib.create_train_state(model, tx, trainable)
  step = train_lib.make_train_step(graphdef, loss_fn, tx, trainable)
  state = train_lib.run_training(workdir=workdir, config=stage_cfg.train, state=state, step_fn=step,
                                 batches=batches, seed=seed, mesh=sharding_lib.mesh_from_config(mesh_cfg),
                                 fsdp_min_size=mesh_cfg.fsdp_min_size,
                                 sharding_rules=expert_sharding_rules(mesh_cfg))
  return train_lib.model_from_state(graphdef, state)


# Data fields that only the evaluation reads: a stage trained with other values is still the same stage.
_EVAL_ONLY_DATA_KEYS = ("test_subset", "eval_batch_size")
STAGE_SECTIONS = {"stage0": ("seed", "vision", "stage0"),
                  "stage1": ("seed", "vision", "stage0", "llm", "data", "stage1"),
                  "stage2": ("seed", "vision", "stage0", "llm", "data", "stage1", "moe", "stage2")}


def stage_settings(config: ml_collections.ConfigDict, stage: str) -> str:
  """What a stage's weights depend on (its own config sections and those of the stages before it), as the hash
  stored beside its `final.npz`. The mesh and the evaluation-only data fields are left out."""
  settings = {}
  for name in STAGE_SECTIONS[stage]:
    value = config[name]
    value = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
    if name == "data":
      value = {k: v for k, v in value.items() if k not in _EVAL_ONLY_DATA_KEYS}
    settings[name] = value
  return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _train_once(model, stage_dir, trainable, loss_fn, source, stage_cfg, mesh_cfg, batch_size, seed,
                transform=None, *, settings: str) -> str:
  """Trains `model` in `stage_dir` unless that stage's final variables are already there (a finished stage is
  never trained again, also when another run's stages are reused); loads them into `model` either way.
  `settings` (`stage_settings`) is written into `stage_dir` before the stage trains; a finished stage, or one
  whose checkpoints a rerun would resume, with other recorded settings is an error, never silently reused (files
  from before the record existed are reused with a note)."""
  final = os.path.join(stage_dir, "final.npz")
  record = os.path.join(stage_dir, "settings.txt")
  started = os.path.exists(final) or os.path.isdir(os.path.join(stage_dir, "checkpoints"))
  recorded = files.read_marker(record) if started else None
  if recorded is not None and recorded != settings:
    raise ValueError(f"{stage_dir} holds a stage trained or begun with other settings ({recorded}, now {settings}: "
                     "seed, model, data or that stage's training changed). Fix: use another --workdir (or "
                     "another reuse_stages_from), or delete that folder to train the stage again.")
  if started and recorded is None:
    print(f"{stage_dir}: reusing {'final.npz' if os.path.exists(final) else 'its checkpoints'}, which record no "
          "settings (written before they were recorded).")
  if not os.path.exists(final):
    os.makedirs(stage_dir, exist_ok=True)
    files.write_text_atomic(record, settings + "\n")  # before training: a killed stage's checkpoints are checked
    # batch_size is the global batch: each process draws its share, and the loop assembles them on the mesh
    batches = pipeline.make_batches(source, batch_size // jax.process_count(), seed=seed, transform=transform)
    save_model(train_stage(model, trainable, loss_fn, batches, stage_cfg, mesh_cfg, seed, stage_dir), final)
  load_model(model, final)
  return final


def stage0(config, workdir: str) -> tuple[str, dict[str, float]]:
  """Pretrains the ViT; returns the path of its final variables and its test accuracy."""
  labels = vqa.image_labels("train")
  test = vqa.image_labels("test")
  vit = build_vit(config, nnx.Rngs(config.seed), labels["num_colors"])
  source = {k: labels[k] for k in ("image", "shape", "color")}
  out = _train_once(vit, os.path.join(workdir, "stage0"), nnx.Param, vit_loss, source, config.stage0, config.mesh,
                    config.stage0.batch_size, config.seed, settings=stage_settings(config, "stage0"))
  graphdef, state = nnx.split(vit)

  @jax.jit
  def evaluate(state, images, shape, color):
    return vit_loss(nnx.merge(graphdef, state), {"image": images, "shape": shape, "color": color}, None)[1]

  m = evaluate(state, test["image"], test["shape"], test["color"])
  return out, {k: float(v) for k, v in m.items()}


def _with_images(images: np.ndarray):
  """Batch transform adding each question's image (uint8) or its cached frozen-encoder features (float)."""
  key = "image" if images.dtype == np.uint8 else "image_features"

  def transform(batch):
    return {**batch, key: images[batch["image_index"]]}
  return transform


def cache_features(model: lvlm.LVLM, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
  graphdef, state = nnx.split(model.vit)
  pool = model.image_pool

  @jax.jit
  def run(state, x):
    return lvlm.pool_patches(nnx.merge(graphdef, state)(x), pool)
  out = [np.asarray(run(state, images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
  return np.concatenate(out)


def _trainable_projector():
  return nnx.All(nnx.Param, nnx.PathContains("projector"))


def _trainable_all_but_vit():
  return nnx.All(nnx.Param, nnx.Not(nnx.PathContains("vit")))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Stages 0, 1, 2 and the test evaluation; writes `results.json` and `router_load.png` into `workdir`."""
  validate_config(config)
  start = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  shared = config.reuse_stages_from or workdir
  tokenizer = build_tokenizer(config)
  model = build_lvlm(config, tokenizer, vqa.image_labels("train")["num_colors"])
  n_img = model.num_image_tokens
  d = config.data
  train_seq = vqa.build_sequences("train", tokenizer, n_img, d.seq_len, d.train_subset)
  test_seq = vqa.build_sequences("test", tokenizer, n_img, d.seq_len, d.test_subset)

  vit_path, vit_metrics = stage0(config, shared)
  load_model(model.vit, vit_path)  # the pretrained encoder that stages 1 and 2 keep frozen
  if d.cache_vision_features:
    train_seq = dataclasses.replace(train_seq, images=cache_features(model, train_seq.images))
    test_seq = dataclasses.replace(test_seq, images=cache_features(model, test_seq.images))

  _train_once(model, os.path.join(shared, "stage1"), _trainable_projector(), lvlm_loss, train_seq.arrays(),
              config.stage1, config.mesh, d.batch_size, config.seed + 1, _with_images(train_seq.images),
              settings=stage_settings(config, "stage1"))
  stage1_metrics = evaluate(model, test_seq, d.eval_batch_size)

  spec = moe_spec(config)
  moe_layers = []
  if spec is not None:
    moe_layers = upcycle.upcycle(model.llm, spec, every=config.moe.every, offset=config.moe.offset,
                                 rngs=nnx.Rngs(config.seed + 2), router_init_std=config.moe.router_init_std)
  _train_once(model, os.path.join(workdir, "stage2"), _trainable_all_but_vit(), lvlm_loss, train_seq.arrays(),
              config.stage2, config.mesh, d.batch_size, config.seed + 2, _with_images(train_seq.images),
              settings=stage_settings(config, "stage2"))
  metrics = evaluate(model, test_seq, d.eval_batch_size)
  results = {
      "variant": config.moe.variant, "llm": config.llm.source,
      # the sizes as built (what a report's scale column prints, so that an override shows there)
      "llm_layers": int(model.llm.config.num_layers), "llm_hidden": int(model.llm.config.hidden_size),
      "vit_depth": int(config.vision.depth),
      "moe_spec": None if spec is None else dataclasses.asdict(spec),  # what the variant resolved to
      "vit_test": vit_metrics, "stage1_test": _summary(stage1_metrics), "test": _summary(metrics),
      "load_vision": metrics.get("load_vision"), "load_text": metrics.get("load_text"),
      "moe_layers": moe_layers, "activated_ffn_params_per_token": activated_ffn_params(model.llm, spec),
      "total_llm_params": int(sum(x.size for x in jax.tree.leaves(nnx.state(model.llm, nnx.Param)))),
      "steps": {s: int(config[s].train.num_steps) for s in ("stage0", "stage1", "stage2")},
      "train_questions": int(len(train_seq.tokens)), "test_questions": int(len(test_seq.tokens)),
      "batch_size": int(d.batch_size), "wall_s": time.perf_counter() - start,
  }
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  if metrics.get("load_vision") is not None:
    from moiie import plots
    plots.router_load({config.moe.variant: results}, os.path.join(workdir, "router_load.png"))
  return results


def activated_ffn_params(llm: llm_model.Llama, spec: routing.MoESpec | None) -> int:
  """FFN parameters one token multiplies with, summed over layers (+ its router row where there is MoE)."""
  total = 0
  for block in llm.layers:
    mlp = block.mlp
    if isinstance(mlp, llm_model.MLP):
      total += sum(int(np.prod(p.kernel.get_value().shape)) for p in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))
    else:
      e = spec.num_experts
      per_expert = (mlp.gate.get_value().size + mlp.up.get_value().size + mlp.down.get_value().size) // e
      total += spec.top_k * per_expert + mlp.router.get_value().shape[1] * e
  return int(total)


# ---------------------------------------------------------------- evaluation

def evaluate(model: lvlm.LVLM, seq: vqa.Sequences, batch_size: int) -> dict[str, Any]:
  """Exact-match accuracy per question type and overall, and mean expert load per modality and MoE layer."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def run(state, batch):
    m = nnx.merge(graphdef, state)
    logits, aux = _lvlm_call(m, batch)
    _, exact = answer_loss(logits, batch)
    return exact, aux.get("load_vision"), aux.get("load_text")

  arrays = seq.arrays()
  n = len(seq.tokens)
  exact_all, loads_v, loads_t, count_v, count_t = [], [], [], [], []
  for lo in range(0, n, batch_size):
    idx = np.arange(lo, lo + batch_size) % n  # the last batch wraps around: one compiled shape
    keep = min(batch_size, n - lo)
    batch = {k: v[idx] for k, v in arrays.items()}
    batch.update(_with_images(seq.images)({"image_index": batch["image_index"]}))
    # The wrapped rows repeat earlier questions: their answers are dropped below, and they are kept out of the
    # expert loads by routing none of their tokens.
    batch["route_mask"] = batch["attention_mask"] * (np.arange(batch_size) < keep)[:, None]
    exact, lv, lt = run(state, batch)
    exact_all.append(np.asarray(exact)[:keep])
    if lv is not None:
      loads_v.append(np.asarray(lv))
      loads_t.append(np.asarray(lt))
      # Each batch's load is per routed token of that modality in that batch; the pooled load weights
      # it by those counts (text lengths differ from batch to batch, so weighting by rows would be off).
      routed = np.asarray(batch["route_mask"]).astype(bool)
      image = np.asarray(batch["image_mask"]).astype(bool)
      count_v.append(np.sum(routed & image))
      count_t.append(np.sum(routed & ~image))
  exact = np.concatenate(exact_all)
  out: dict[str, Any] = {"accuracy": float(exact.mean()),
                         "accuracy_se_by_image": standard_error_by_cluster(exact, seq.image_index),
                         "test_images": int(len(np.unique(seq.image_index)))}
  for t, name in enumerate(vqa.QUESTION_TYPES):
    sel = seq.question_type == t
    out[f"accuracy_{name}"] = float(exact[sel].mean()) if sel.any() else float("nan")
  if loads_v:
    out["load_vision"] = _pooled_load(loads_v, count_v)
    out["load_text"] = _pooled_load(loads_t, count_t)
  return out


def standard_error_by_cluster(values: np.ndarray, cluster: np.ndarray) -> float:
  """Cluster-robust standard error of the mean of `values`, clusters given by `cluster` (same length).

  easy-VQA asks several questions about each image, and answers about one image are correlated (a model that
  misreads the image misses several), so the i.i.d. sqrt(p(1-p)/n) understates the error. This is the usual
  sandwich estimate with the G/(G-1) small-sample factor: Var = G/(G-1) * sum_g (sum_{i in g} (x_i - mean))^2 / n^2.
  Returns nan for fewer than two clusters.
  """
  x = np.asarray(values, np.float64)
  _, group = np.unique(np.asarray(cluster), return_inverse=True)
  g = int(group.max()) + 1 if len(x) else 0
  if g < 2:
    return float("nan")
  residual_sums = np.bincount(group, weights=x - x.mean(), minlength=g)
  return float(np.sqrt(g / (g - 1) * np.sum(residual_sums ** 2)) / len(x))


def _pooled_load(loads: list[np.ndarray], counts: list[int]) -> list[list[float]]:
  """Per-expert assignments per routed token over all batches, from each batch's load [L, E] and token count."""
  w = np.asarray(counts, np.float64)[:, None, None]
  return (np.sum(np.stack(loads) * w, 0) / max(w.sum(), 1.0)).tolist()


def _summary(metrics: dict[str, Any]) -> dict[str, float]:
  return {k: v for k, v in metrics.items() if not k.startswith("load_")}
