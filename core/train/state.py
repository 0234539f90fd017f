"""The training state and the pure, jitted update step.

A Flax NNX model is split once into `graphdef` (static structure), `params` (the `nnx.Param` variables the
optimizer updates) and `model_state` (every other variable, e.g. BatchNorm statistics). The step is a pure
function `(state, batch, rng) -> (state, metrics)` closed over `graphdef`, the loss and the optimizer, so it
can be jitted with buffer donation, sharded, scanned and checkpointed as plain pytrees.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

# loss_fn(model, batch, rng) -> (scalar loss, dict of scalar metrics). It may update non-parameter variables
# of `model` in place (BatchNorm statistics); those updates are carried into the new state.
LossFn = Callable[[nnx.Module, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


@struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: number of updates applied so far
  params: Any  # nnx.State of nnx.Param
  opt_state: Any
  model_state: Any  # nnx.State of every non-Param variable (may be empty)


def split_model(model: nnx.Module, trainable: Any = nnx.Param) -> tuple[nnx.GraphDef, Any, Any]:
  """Splits once into (graphdef, trainable params, everything else); merge back with `nnx.merge(g, p, s)`.

  `trainable` is an NNX filter: `nnx.Param` for full training, `nnx.LoRAParam` to train adapters only (the
  frozen base weights then live in `model_state`, outside the optimizer and the gradient).
  """
  return nnx.split(model, trainable, ...)


def create_train_state(model: nnx.Module, tx: optax.GradientTransformation, trainable: Any = nnx.Param
                       ) -> tuple[nnx.GraphDef, TrainState]:
  graphdef, params, model_state = split_model(model, trainable)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     model_state=model_state)
  return graphdef, state


StepFn = Callable[[TrainState, Any, jax.Array], tuple[TrainState, dict[str, jax.Array]]]


def make_train_step(graphdef: nnx.GraphDef, loss_fn: LossFn, tx: optax.GradientTransformation,
                    trainable: Any = nnx.Param) -> StepFn:
  """Builds the pure update step; the loop jits it with donation and shardings.

  `trainable` must be the filter given to `create_train_state`.
  """

  def step(state: TrainState, batch: Any, rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    def compute_loss(params):
      # copy=True: fresh Variables at this (grad) trace level, so layers such as BatchNorm may update
      # their statistics in place inside the differentiated function.
      model = nnx.merge(graphdef, params, state.model_state, copy=True)
      loss, metrics = loss_fn(model, batch, rng)
      _, _, new_model_state = split_model(model, trainable)
      return loss, (metrics, new_model_state)

    (loss, (metrics, model_state)), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state)
    return new_state, metrics

  return step


def model_from_state(graphdef: nnx.GraphDef, state: TrainState) -> nnx.Module:
  """An NNX module view of the state, for evaluation code written against modules."""
  return nnx.merge(graphdef, state.params, state.model_state)
