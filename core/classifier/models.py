"""Plain classifiers in Flax NNX: an MLP and a small CNN with batch norm (LeNet-style)."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class MLP(nnx.Module):
  """Flatten -> [Linear -> ReLU] * len(hidden) -> Linear."""

  def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, *, rngs: nnx.Rngs):
    sizes = [in_features, *hidden]
    self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
    self.head = nnx.Linear(sizes[-1], num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    del train
    x = x.reshape(x.shape[0], -1)
    for layer in self.hidden:
      x = jax.nn.relu(layer(x))
    return self.head(x)


class ConvNet(nnx.Module):
  """[Conv3x3 -> BatchNorm -> ReLU -> MaxPool2] * len(channels) -> Linear -> ReLU -> Linear."""

  def __init__(self, image_shape: Sequence[int], channels: Sequence[int], dense: int, num_classes: int, *,
               rngs: nnx.Rngs):
    height, width, in_channels = image_shape
    sizes = [in_channels, *channels]
    self.convs = nnx.List([nnx.Conv(a, b, (3, 3), rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
    self.norms = nnx.List([nnx.BatchNorm(b, momentum=0.9, rngs=rngs) for b in channels])
    for _ in channels:
      height, width = height // 2, width // 2
    self.dense = nnx.Linear(height * width * sizes[-1], dense, rngs=rngs)
    self.head = nnx.Linear(dense, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    for conv, norm in zip(self.convs, self.norms):
      x = jax.nn.relu(norm(conv(x), use_running_average=not train))
      x = nnx.max_pool(x, (2, 2), strides=(2, 2))
    x = jax.nn.relu(self.dense(x.reshape(x.shape[0], -1)))
    return self.head(x)


def build_model(model_config, image_shape: Sequence[int], num_classes: int, seed: int) -> nnx.Module:
  rngs = nnx.Rngs(seed)
  if model_config.name == "mlp":
    return MLP(int(jnp.prod(jnp.array(image_shape))), model_config.hidden, num_classes, rngs=rngs)
  if model_config.name == "cnn":
    return ConvNet(image_shape, model_config.channels, model_config.dense, num_classes, rngs=rngs)
  raise ValueError(f"unknown model {model_config.name!r}")
