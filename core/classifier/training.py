"""Supervised training of the reference classifier: cross-entropy, accuracy, the shared loop.

`train_and_evaluate(config, workdir)` is what `python -m core.classifier.train` runs, and what tests,
notebooks and papers call directly.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from core import config as config_lib
from core import data as data_lib
from core import sharding as sharding_lib
from core.classifier import models
from core.train import loop, optim
from core.train.state import TrainState, create_train_state, make_train_step

DATASETS = ("fashion_mnist", "mnist", "digits")
IMAGE_SIDE = {"fashion_mnist": 28, "mnist": 28, "digits": 8}  # square, one channel
MODELS = ("mlp", "cnn")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Every check that can fail before compilation does fail here."""
  config_lib.check_choice(config, "dataset", DATASETS)
  data_lib.check_data_dir(config)
  name = config_lib.check_choice(config, "model.name", MODELS)
  layers = "model.hidden" if name == "mlp" else "model.channels"
  config_lib.check(config, layers, lambda sizes: all(size > 0 for size in sizes), "every size must be positive",
                   f"pass --config.{layers}=<a tuple of positive sizes>")
  if name == "cnn":
    config_lib.check_positive(config, "model.dense")
    side = IMAGE_SIDE[config.dataset]
    most = side.bit_length() - 1  # each conv block halves the side (2x2 max pool); the last must keep >= 1 pixel
    config_lib.check(config, "model.channels", lambda c: 0 < len(c) <= most,
                     f"needs 1 to {most} conv blocks for {side}x{side} {config.dataset} images (each halves the side)",
                     f"pass at most {most} channel counts, e.g. --config.model.channels='(16, 32)'")
  config_lib.check_seed(config, "seed", requirement="must be >= 0 and below 2**32, an integer (it seeds numpy's data "
                        "shuffling too)")
  sharding_lib.validate_mesh_config(config)
  config_lib.check_divisible(config, "batch_size", jax.device_count(), "the number of devices")
  config_lib.check_divisible(config, "eval_batch_size", jax.device_count(), "the number of devices")
  optim.validate_optimizer_config(config, num_steps=config.train.num_steps)
  loop.validate_train_config(config)


def load_split(config: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
  data_dir = config.data_dir or None
  if config.dataset == "fashion_mnist":
    return data_lib.load_fashion_mnist(split, data_dir=data_dir)
  if config.dataset == "mnist":
    return data_lib.load_mnist(split, data_dir=data_dir)
  return data_lib.load_digits(split)


def _to_float(images: jax.Array) -> jax.Array:
  # uint8 pixels travel to the device (4x fewer bytes) and are scaled there.
  return images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images.astype(jnp.float32)


def classification_loss(model: nnx.Module, batch: dict[str, jax.Array], rng: jax.Array):
  del rng
  logits = model(_to_float(batch["image"]), train=True)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
  accuracy = (logits.argmax(-1) == batch["label"]).mean()
  return loss, {"accuracy": accuracy}


def make_evaluator(graphdef: nnx.GraphDef, split_data: dict[str, np.ndarray], batch_size: int,
                   mesh: jax.sharding.Mesh):
  """Exact accuracy and loss over a whole split: the last batch is padded and masked, not dropped. `batch_size`
  is the global eval batch: with several processes each one hands its own rows of every batch to the mesh."""
  processes = jax.process_count()
  if batch_size % processes:
    raise ValueError(f"the eval batch size {batch_size} does not split over {processes} processes. Fix: a "
                     f"multiple of {processes}.")

  @jax.jit
  def eval_batch(params, model_state, batch):
    model = nnx.merge(graphdef, params, model_state)
    logits = model(_to_float(batch["image"]), train=False)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = (logits.argmax(-1) == batch["label"])
    return {"correct": jnp.sum(correct * batch["mask"]), "loss_sum": jnp.sum(losses * batch["mask"])}

  n = len(split_data["label"])
  padded = -(-n // batch_size) * batch_size
  images = np.zeros((padded, *split_data["image"].shape[1:]), split_data["image"].dtype)
  images[:n] = split_data["image"]
  labels = np.zeros((padded,), np.int32)
  labels[:n] = split_data["label"]
  mask = (np.arange(padded) < n).astype(np.float32)

  def evaluate(state: TrainState) -> dict[str, float]:
    correct = loss_sum = 0.0
    for start in range(0, padded, batch_size):
      window = slice(start, start + batch_size)
      batch = sharding_lib.shard_batch(sharding_lib.process_rows(  # this process's rows of the global batch
          {"image": images[window], "label": labels[window], "mask": mask[window]}), mesh)
      out = eval_batch(state.params, state.model_state, batch)
      correct += float(out["correct"])
      loss_sum += float(out["loss_sum"])
    return {"accuracy": correct / n, "loss": loss_sum / n}

  return evaluate


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains on the train split, evaluates on the test split; returns and writes `results.json`."""
  validate_config(config)
  train_data = load_split(config, "train")
  test_data = load_split(config, "test")
  image_shape = train_data["image"].shape[1:]
  num_classes = int(train_data["label"].max()) + 1

  model = models.build_model(config.model, image_shape, num_classes, config.seed)
  tx = optim.make_optimizer(config.optimizer, config.train.num_steps)
  graphdef, state = create_train_state(model, tx)
  step_fn = make_train_step(graphdef, classification_loss, tx)
  mesh = sharding_lib.mesh_from_config(config.mesh)

  per_process_batch = config.batch_size // jax.process_count()
  batches = data_lib.make_batches(train_data, per_process_batch, seed=config.seed, shuffle=True,
                                  num_epochs=None, drop_remainder=True)
  evaluate = make_evaluator(graphdef, test_data, config.eval_batch_size, mesh)
  state = loop.run_training(workdir=workdir, config=config.train, state=state, step_fn=step_fn,
                            batches=batches, seed=config.seed, mesh=mesh, eval_fn=evaluate,
                            fsdp_min_size=config.mesh.fsdp_min_size)
  final = evaluate(state)
  results = {"dataset": config.dataset, "model": config.model.name, "steps": int(state.step),
             "test_accuracy": final["accuracy"], "test_loss": final["loss"],
             "num_train": int(len(train_data["label"])), "num_test": int(len(test_data["label"]))}
  if jax.process_index() == 0:  # one writer; every process holds the same results
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
  return results
