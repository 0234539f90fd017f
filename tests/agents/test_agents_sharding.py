"""agents.train on a mesh: 4 fake CPU devices (data 2 x fsdp 2, every weight split; rollout rows split over all
four) give the 1-device run's warm start, losses, rollouts and weights; a minibatch the devices cannot split is
refused before anything runs."""

import chex
import numpy as np

# PPO: the actor, the critic, the reference and both scoring passes all run on the mesh. Two minibatches of 16
# rows: each update splits its rows over the 4 devices. fsdp_min_size=1 splits every weight that divides.
SCRIPT = """
import json, sys, tempfile
import jax
import numpy as np
from agents import envs as envs_lib
from agents import train as train_lib
from configs.agents.rl_common import rl_config
from core.train.metrics import read_metrics
config = rl_config("gridworld", "ppo", "quick")
config.env, config.env_config = "trivial", envs_lib.env_config("trivial")
config.policy.update(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                     max_seq_len=64, vocab_tasks=1, warm_start_steps=2, warm_start_tasks=16,
                     warm_start_batch_size=8)
config.rollout.update(max_new_tokens=2, max_context_tokens=64, group_size=8, env_workers=1)
config.schedule.update(turn_limits=(1,), steps_per_stage=1)
config.data.update(train_tasks=100, tasks_per_step=4, eval_tasks=8, eval_every=3)
config.algorithm.minibatches = 2
config.optimizer.learning_rate = 3e-2
config.train.update(num_steps=3, checkpoint_every=3)
config.mesh.update(fsdp=int(sys.argv[1]), fsdp_min_size=1)
workdir = tempfile.mkdtemp()
train_lib.train(config, workdir)
learner, _ = train_lib.build_learner(config, tempfile.mkdtemp())
tree, _ = train_lib.checkpoint_lib.Checkpointer(workdir + "/checkpoints", every=1, keep=1).restore(
    3, learner.checkpoint_tree())
leaves = jax.tree.leaves(tree["policy"].params)
split = sum(len(leaf.sharding.device_set) > 1 and not leaf.sharding.is_fully_replicated for leaf in leaves)
# a rollout's generation session on the learner's weights: its rows (and KV cache) split over the mesh
generate = train_lib.rollout_lib.llm_policy(learner.current(), config.rollout).session(8)
prompt = learner.policy.tokenizer.encode_chat([{"role": "user", "content": "say left"}])
generate(list(range(8)), [prompt] * 8, [2] * 8, jax.random.key(0))
# every final weight in full (gathered to the host), by its path: the test compares the whole trees
np.savez(sys.argv[2], **{jax.tree_util.keystr(path): np.asarray(leaf)
                         for path, leaf in jax.tree_util.tree_leaves_with_path(tree["policy"].params)})
cache_shards = len({str(s.index) for s in generate.__self__.cache.k[0].addressable_shards})
rows = read_metrics(workdir, "train")
print(json.dumps({"devices": jax.device_count(), "split_leaves": int(split), "cache_shards": cache_shards,
                  "warm_loss": read_metrics(workdir, "eval")[0]["warm_start_last_loss"],
                  "eval_success": [r["success_rate"] for r in read_metrics(workdir, "eval")],
                  "metrics": [{k: r[k] for k in ("loss", "critic_loss", "success_rate", "grad_norm")} for r in rows]}))
"""


def test_four_devices_match_one(fake_devices, tmp_path):
  # 4 devices as data 2 x fsdp 2: rows split over all four, weights over the fsdp pair (fsdp_min_size=1)
  one_path, four_path = str(tmp_path / "one.npz"), str(tmp_path / "four.npz")
  one = fake_devices(1, ["-c", SCRIPT, "1", one_path], timeout=600)
  four = fake_devices(4, ["-c", SCRIPT, "2", four_path], timeout=600)
  assert (one["devices"], four["devices"]) == (1, 4)
  assert one["split_leaves"] == 0 and four["split_leaves"] > 0
  assert one["cache_shards"] == 1 and four["cache_shards"] == 4  # rollout rows split over the devices
  np.testing.assert_allclose(four["warm_loss"], one["warm_loss"], rtol=1e-4)
  assert four["eval_success"] == one["eval_success"] and len(one["eval_success"]) == 2  # greedy, steps 0 and 3
  assert [m["success_rate"] for m in four["metrics"]] == [m["success_rate"] for m in one["metrics"]]
  # Sums split over devices add in another order; three steps at lr 3e-2 carry that ~1e-7 rounding to ~2e-4.
  for key in ("loss", "critic_loss", "grad_norm"):
    np.testing.assert_allclose([m[key] for m in four["metrics"]], [m[key] for m in one["metrics"]], rtol=1e-3,
                               atol=1e-5)
  # Every weight of the final policy, element by element: a per-leaf summary (a sum of |w|, say) would not see
  # weights that moved between positions, such as shards put back in the wrong order. The same reordered sums
  # leave up to ~3e-4 per weight after the warm start and three Adam steps; one Adam step at lr 3e-2 moves a
  # weight by up to 3e-2, so a weight that took another update or landed elsewhere is far outside 2e-3.
  with np.load(one_path) as a, np.load(four_path) as b:
    one_weights, four_weights = dict(a), dict(b)
  assert len(one_weights) >= 10 and sorted(four_weights) == sorted(one_weights)
  chex.assert_trees_all_close(four_weights, one_weights, rtol=1e-3, atol=2e-3)


def test_a_minibatch_the_devices_cannot_split_is_refused(fake_devices):
  script = """
import json
from agents import train as train_lib
from configs.agents.rl_common import rl_config
from core.config import ConfigError
config = rl_config("gridworld", "grpo", "quick")
config.data.tasks_per_step, config.rollout.group_size, config.algorithm.minibatches = 3, 2, 2  # 3 rows each
try:
  train_lib.validate_config(config)
  print(json.dumps({"error": None}))
except ConfigError as e:
  print(json.dumps({"error": str(e)}))
"""
  error = fake_devices(2, ["-c", script])["error"]
  assert "algorithm.minibatches" in error and "3 rollouts per minibatch" in error, error
  assert "multiple of 2" in error, error
