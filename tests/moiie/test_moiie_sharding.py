"""A tiny MoIIE LVLM's stage-2 training steps sharded over 8 fake CPU devices give the 1-device result: data
parallel through the shared `core.train` loop, expert parallel (each MoE layer's experts split over the `fsdp`
axis, the batch over both axes) through a jitted step with explicit shardings, and expert parallel the way
`moiie.train` does it: `training.train_stage` with the experiment config's `mesh.expert_parallel=true`, whose
sharding rule must put the expert axis of every expert weight and of its Adam moments over `fsdp`. Both CPU sparse
kernels run sharded (blocks data parallel, hybrid expert parallel; the reference is hybrid, the kernels being
exact). One subprocess with 8 devices; the reference runs on a mesh of its first device. The frozen encoder's
cached features stand in for images, as in stage 2. All runs share the stage-2 optimizer of that config (Adam)."""

import numpy as np

SCRIPT = r"""
import json, sys, tempfile
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from core import config as config_lib, sharding
from core.llm import config as llm_config, model as llm_model
from core.train import loop, optim, state as state_lib
from core.train.metrics import read_metrics
from moiie import lvlm, training, upcycle
from moiie.routing import MoESpec

STEPS, N, SEQ, N_IMG, VOCAB, E = 3, 16, 10, 4, 16, 4
# what `python -m moiie.train --config configs/moiie/easyvqa_tiny.py:moiie --config.mesh.fsdp=4
# --config.mesh.expert_parallel=true` reads, with stage 2 shrunk to 3 steps of plain Adam. Adam's eps is raised
# from 1e-8 to 1e-4: with the default, a weight whose gradient is ~1e-8 moves by up to lr times a sign that the
# sharded reduction order decides (one of 8192 expert weights differed by 1e-4 on an AMD EPYC CPU); with 1e-4 such
# updates are linear in the gradient, so sharding can only move them by float rounding.
CONFIG = config_lib.load_config("configs/moiie/easyvqa_tiny.py:moiie", [
    "mesh.data=2", "mesh.fsdp=4", "mesh.expert_parallel=true", "stage2.optimizer.name=adam", "stage2.optimizer.weight_decay=0",
    "stage2.optimizer.learning_rate=0.01", "stage2.optimizer.schedule=constant", "stage2.optimizer.warmup_steps=0",
    "stage2.optimizer.grad_clip_norm=0", "stage2.optimizer.eps=1e-4", f"stage2.train.num_steps={STEPS}", "stage2.train.log_every=1",
    f"stage2.train.checkpoint_every={STEPS}", "stage2.train.progress_bar=false"])
training.validate_config(CONFIG)
TRAINABLE = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("vit")))

def batches():
  rng = np.random.default_rng(0)
  out = []
  for _ in range(STEPS):
    tokens = rng.integers(2, VOCAB, (N, SEQ)).astype(np.int32)
    image_mask = np.zeros((N, SEQ), bool)
    image_mask[:, 1:1 + N_IMG] = True
    attention = np.ones((N, SEQ), bool)
    attention[::2, -2:] = False  # padding in half of the rows
    loss_mask = np.zeros((N, SEQ), bool)
    loss_mask[:, 6:8] = True
    out.append({"image_features": rng.normal(size=(N, N_IMG, 16)).astype(np.float32), "tokens": tokens,
                "image_mask": image_mask, "attention_mask": attention, "loss_mask": loss_mask,
                "targets": np.concatenate([tokens[:, 1:], np.zeros((N, 1), np.int32)], 1)})
  return out

def build_model(kernel):
  rngs = nnx.Rngs(0)
  vit = lvlm.ViT(32, 8, 16, 1, 2, 32, 3, 8, rngs=rngs)
  llm = llm_model.Llama(llm_config.tiny(num_layers=2, hidden_size=32, intermediate_size=64, vocab_size=VOCAB,
                                        num_heads=2, num_kv_heads=1), rngs)
  model = lvlm.LVLM(vit, lvlm.Projector(16, 32, rngs), llm, image_pool=1)
  # strong routers: the tokens spread over the experts (and past the hybrid's capacity) from the first step
  upcycle.upcycle(model.llm, MoESpec(grouped_matmul=kernel), rngs=rngs, router_init_std=1.0)
  return model

def build(kernel):
  tx = optim.make_optimizer(CONFIG.stage2.optimizer, STEPS)
  graphdef, state = state_lib.create_train_state(build_model(kernel), tx, TRAINABLE)
  return state, state_lib.make_train_step(graphdef, training.lvlm_loss, tx, TRAINABLE)

def experts_of(params):
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return {jax.tree_util.keystr(p): np.asarray(v).tolist() for p, v in leaves
          if any(n in jax.tree_util.keystr(p) for n in ("'gate'", "'up'", "'down'")) and np.ndim(v) == 3}

def data_parallel():
  state, step = build("blocks")
  with tempfile.TemporaryDirectory() as workdir:
    config = loop.train_config(num_steps=STEPS, log_every=1, checkpoint_every=STEPS, progress_bar=False,
                               tensorboard=False)
    final = loop.run_training(workdir=workdir, config=config, state=state, step_fn=step, batches=iter(batches()),
                              seed=0, mesh=sharding.make_mesh(8, 1))
    losses = [r["loss"] for r in read_metrics(workdir, "train")]
  return {"losses": losses, "experts": experts_of(final.params)}

def explicit(kernel, mesh):
  # experts [E, ...] split over `fsdp` (E / 4 experts per device on a 2 x 4 mesh), the rest replicated, the
  # batch over both axes; on a 1-device mesh this is the plain single-device step
  state, step = build(kernel)
  def leaf(path, x):
    name = jax.tree_util.keystr(path)
    if (mesh.shape["fsdp"] > 1 and np.ndim(x) == 3 and np.shape(x)[0] == E
        and any(n in name for n in ("'gate'", "'up'", "'down'"))):
      return NamedSharding(mesh, P("fsdp", None, None))
    return sharding.replicated(mesh)
  state_sh = jax.tree_util.tree_map_with_path(leaf, state)
  run = jax.jit(step, in_shardings=(state_sh, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
                out_shardings=(state_sh, sharding.replicated(mesh)))
  state = jax.device_put(state, state_sh)
  losses = []
  for i, batch in enumerate(batches()):
    state, metrics = run(state, sharding.shard_batch(batch, mesh), jax.random.key(i))
    losses.append(float(metrics["loss"]))
  gate = [x for p, x in jax.tree_util.tree_leaves_with_path(state.params) if "'gate'" in jax.tree_util.keystr(p)
          and np.ndim(x) == 3][0]
  return {"losses": losses, "experts": experts_of(state.params), "expert_shards": len(gate.sharding.device_set),
          "expert_shard_shape": list(gate.addressable_shards[0].data.shape)}

def train_path():
  # the state layout run_training will use, from the config's rule: only expert weights and their moments split
  state, _ = build("hybrid")
  layout = sharding.state_sharding(sharding.mesh_from_config(CONFIG.mesh), state, CONFIG.mesh.fsdp_min_size,
                                   training.expert_sharding_rules(CONFIG.mesh))
  split = {jax.tree_util.keystr(p): list(s.spec) for p, s in jax.tree_util.tree_leaves_with_path(
      layout, is_leaf=lambda x: isinstance(x, NamedSharding)) if s.spec != P()}
  with tempfile.TemporaryDirectory() as workdir:
    model = training.train_stage(build_model("hybrid"), TRAINABLE, training.lvlm_loss, iter(batches()),
                                 CONFIG.stage2, CONFIG.mesh, seed=0, workdir=workdir)
    losses = [r["loss"] for r in read_metrics(workdir, "train")]
  gate = model.llm.layers[1].mlp.gate.get_value()
  return {"losses": losses, "experts": experts_of(nnx.state(model, TRAINABLE)), "split": split,
          "gate_spec": list(gate.sharding.spec), "expert_shards": len(gate.sharding.device_set),
          "expert_shard_shape": list(gate.addressable_shards[0].data.shape)}

expert_mesh = sharding.make_mesh(2, 4)
print(json.dumps({"devices": jax.device_count(), "one": explicit("hybrid", sharding.make_mesh(1, 1, jax.devices()[:1])),
                  "data_blocks": data_parallel(), "expert_hybrid": explicit("hybrid", expert_mesh),
                  "moiie_train": train_path()}))
"""


def test_eight_devices_match_one(fake_devices):
  eight = fake_devices(8, ["-c", SCRIPT])
  assert eight["devices"] == 8
  ref = eight["one"]
  assert len(ref["losses"]) == 3 and np.isfinite(ref["losses"]).all()
  for name in ("data_blocks", "expert_hybrid", "moiie_train"):
    run = eight[name]
    np.testing.assert_allclose(run["losses"], ref["losses"], rtol=2e-5, err_msg=name)
    assert run["experts"].keys() == ref["experts"].keys() and len(ref["experts"]) == 3  # gate, up, down of layer 1
    for key in ref["experts"]:
      np.testing.assert_allclose(run["experts"][key], ref["experts"][key], rtol=1e-4, atol=1e-4,
                                 err_msg=f"{name}: {key}")
  for name in ("expert_hybrid", "moiie_train"):
    assert eight[name]["expert_shards"] == 8  # 4 expert shards, each on the 2 devices of the data axis
    assert eight[name]["expert_shard_shape"][0] == 1  # one of the 4 experts per device
  train = eight["moiie_train"]
  assert train["gate_spec"] == ["fsdp"] and train["expert_shard_shape"] == [1, 32, 64]
  # the rule splits exactly gate/up/down of the MoE layer and Adam's mu and nu of each, all on the expert axis
  assert len(train["split"]) == 9 and all(spec == ["fsdp"] for spec in train["split"].values())
  assert {k.split("[")[0] for k in train["split"]} == {".params", ".opt_state"}
  assert sum(".mu[" in k for k in train["split"]) == 3 and sum(".nu[" in k for k in train["split"]) == 3
