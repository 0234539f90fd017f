"""Runs a few training steps on however many devices this process has; prints the losses as JSON.

Run by test_sharding.py in a subprocess, with XLA_FLAGS forcing 1 or 8 fake CPU devices.
"""

import json
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from core import sharding
from core.train import loop, optim
from core.train.metrics import read_metrics
from core.train.state import create_train_state, make_train_step


class MLP(nnx.Module):
  def __init__(self, rngs):
    self.a = nnx.Linear(8, 64, rngs=rngs)
    self.b = nnx.Linear(64, 1, rngs=rngs)

  def __call__(self, x):
    return self.b(jax.nn.gelu(self.a(x)))


def loss_fn(model, batch, rng):
  del rng
  return jnp.mean((model(batch["x"])[:, 0] - batch["y"]) ** 2), {}


def main(data_axis: int, fsdp_axis: int) -> None:
  rng = np.random.default_rng(0)
  x = rng.normal(size=(256, 8)).astype(np.float32)
  y = np.sin(x).sum(-1).astype(np.float32)
  batches = iter([{"x": x[i:i + 32], "y": y[i:i + 32]} for i in range(0, 256, 32)])
  tx = optim.make_optimizer(optim.optimizer_config(name="adam", learning_rate=1e-2), 8)
  graphdef, state = create_train_state(MLP(nnx.Rngs(0)), tx)
  mesh = sharding.make_mesh(data_axis, fsdp_axis)
  config = loop.train_config(num_steps=8, log_every=1, checkpoint_every=8, progress_bar=False,
                             tensorboard=False)
  with tempfile.TemporaryDirectory() as workdir:
    final = loop.run_training(workdir=workdir, config=config, state=state, step_fn=make_train_step(
        graphdef, loss_fn, tx), batches=batches, seed=0, mesh=mesh, fsdp_min_size=64)
    losses = [r["loss"] for r in read_metrics(workdir, "train")]
  kernel = final.params["a"]["kernel"]
  print(json.dumps({"devices": jax.device_count(), "losses": losses,
                    "kernel_shards": len({str(s.index) for s in kernel[...].addressable_shards}),
                    "kernel_sum": float(jnp.sum(kernel[...]))}))


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]))
