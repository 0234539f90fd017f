"""One process of a multi-process run of core pieces: `python multiprocess_worker.py NPROC PID PORT`.

Run by test_multiprocess.py (through conftest's `on_processes`): each process sees one CPU device; prints one JSON
line: the reference classifier's exact evaluation of an untrained model, and a sharded array gathered back whole.
"""

import json
import sys

import jax


def main(processes: int, process: int, port: str) -> None:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if processes > 1:
    jax.distributed.initialize(f"localhost:{port}", num_processes=processes, process_id=process)
  import numpy as np

  from core import config as config_lib
  from core import sharding
  from core.classifier import models, training
  from core.train import optim
  from core.train.state import create_train_state

  config = config_lib.load_config("configs/core/digits_cnn.py", ["eval_batch_size=100"])
  test = training.load_split(config, "test")
  model = models.build_model(config.model, test["image"].shape[1:], 10, config.seed)
  graphdef, state = create_train_state(model, optim.make_optimizer(config.optimizer, 10))
  mesh = sharding.mesh_from_config(config.mesh)
  state = jax.device_put(state, sharding.replicated(mesh))
  metrics = training.make_evaluator(graphdef, test, config.eval_batch_size, mesh)(state)

  rows = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)  # every process holds the whole global batch
  placed = sharding.shard_batch(sharding.process_rows({"x": rows}), mesh)["x"]
  gathered = sharding.to_host(placed * 2)
  print(json.dumps({"processes": jax.process_count(), "num_test": len(test["label"]), **metrics,
                    "local_rows": int(sum(s.data.shape[0] for s in placed.addressable_shards)),
                    "gathered_equal": bool(np.array_equal(gathered, rows * 2))}), flush=True)


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
