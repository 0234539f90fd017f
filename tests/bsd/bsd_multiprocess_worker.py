"""One process of a multi-process BSD evaluation: `python bsd_multiprocess_worker.py NPROC PID PORT`.

Run by test_bsd_multiprocess.py: NPROC processes on localhost (one CPU device each, gloo collectives) evaluate the
same untrained networks as one process does; prints one JSON line of what they measured.
"""

import json
import sys

import jax


def main(processes: int, process: int, port: str) -> None:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if processes > 1:
    jax.distributed.initialize(f"localhost:{port}", num_processes=processes, process_id=process)
  import numpy as np

  from bsd import datasets, methods, training
  from core import config as config_lib
  from core import sharding as sharding_lib
  from core.train import optim
  from core.train.state import create_train_state

  out = {"processes": jax.process_count(), "devices": jax.device_count()}
  for name, spec, overrides in (("classify", "configs/bsd/digits_mlp.py:quick,bp_snn", []),
                                ("generate", "configs/bsd/mnist_autoencoder.py:quick", ["dataset=digits"])):
    config = config_lib.load_config(spec, ["eval_batch_size=360", *overrides])
    data = datasets.load_task_data(config)
    obj = methods.make_objective(config)
    graphdef, state = create_train_state(training.build_model(config, data),
                                         optim.make_optimizer(config.optimizer, config.train.num_steps))
    mesh = sharding_lib.mesh_from_config(config.mesh)
    state = jax.device_put(state, sharding_lib.replicated(mesh))
    evaluate = training.make_evaluator(config, obj, graphdef, data, mesh)
    out[name] = evaluate(state)
    if evaluate.last_recons is not None:
      out[name]["recons_shape"] = list(evaluate.last_recons.shape)
      out[name]["recons_sum"] = float(np.sum(evaluate.last_recons, dtype=np.float64))
    trace = training._trace_for_plots(config, obj, graphdef, state, data)
    out[name]["spikes_sum"] = float(np.sum(trace["forward_spikes"]))
  print(json.dumps(out), flush=True)


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
