"""The training loop: a jitted pure step, checkpoints, resume, NaN stop, metrics, progress, eval hook.

What the loop guarantees:
  * Resume is bit-identical. The step's random key is `fold_in(key(seed), state.step)`, computed inside the
    jitted step, and the data iterator's position is checkpointed beside the state; a run killed at any point
    and restarted with the same command ends with exactly the parameters of an uninterrupted run.
  * A NaN/Inf loss or gradient norm stops the run with `NonFiniteLossError` naming the step. A state is saved
    only after the loss and gradient norm of every step up to it were checked finite, and the state itself (a
    finite gradient does not make the update finite), so the last checkpoint on disk is always a good one.
  * A workdir whose checkpoint is past `num_steps` is an error, not a silent no-op.
  * What a resume does not check: it restores into the state the current config built, comparing leaf paths and
    shapes only, so a changed learning rate, schedule, seed, batch size or dataset (which leave those alone) is
    taken as given, and the run continues under the new settings. Resume with the command that started the run.
    (The entrypoints record every run's config in `workdir/commands.jsonl` and name on stderr the keys that
    changed since the last run there: `core.entrypoint.record_command`.)
  * Metrics match too: a resumed run first drops the records (and TensorBoard events) logged after its
    checkpoint, or all of them on a fresh start; training windows are logged at every checkpoint, so the window
    a resumed run starts is the one an uninterrupted run starts; a step is evaluated before it is saved, so no
    eval is lost to a kill between the two.
  * The step runs ahead of the host by one step: the host checks step k's loss while step k+1 computes, so
    the finiteness check costs no pipeline stall.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from core import config as config_lib
from core import sharding as sharding_lib
from core.train import checkpoint as checkpoint_lib
from core.train import metrics as metrics_lib
from core.train.state import TrainState

StepFn = Callable[[TrainState, Any, jax.Array], tuple[TrainState, Mapping[str, jax.Array]]]
EvalFn = Callable[[TrainState], Mapping[str, Any]]


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the run stopped and the last good checkpoint stays on disk."""


def train_config(**overrides) -> ml_collections.ConfigDict:
  """The `train` config section. `eval_every = 0` evaluates only at the end."""
  return config_lib.section("train", dict(
      num_steps=1000, log_every=100, eval_every=0, checkpoint_every=500, keep_checkpoints=3,
      progress_bar=True, tensorboard=True), overrides)


def validate_train_config(config: ml_collections.ConfigDict, prefix: str = "train") -> None:
  config_lib.check_positive(config, f"{prefix}.num_steps")
  config_lib.check_positive(config, f"{prefix}.log_every")
  config_lib.check_positive(config, f"{prefix}.checkpoint_every")
  config_lib.check_positive(config, f"{prefix}.keep_checkpoints")
  config_lib.check_positive(config, f"{prefix}.eval_every", allow_zero=True)


def _host_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
  return {k: float(np.asarray(v)) for k, v in jax.device_get(dict(metrics)).items()}


def jit_on_mesh(step_fn: StepFn, mesh: jax.sharding.Mesh, state_sharding: Any) -> StepFn:
  """`step_fn(state, batch, rng)` jitted over `mesh`: the state keeps `state_sharding` (its buffers donated), the
  batch's leading axis is split over every device (place it with `core.sharding.shard_batch`), the key and the
  metrics are replicated. For trainers that drive the step themselves rather than through `run_training`."""
  replicated = sharding_lib.replicated(mesh)
  return jax.jit(step_fn, in_shardings=(state_sharding, sharding_lib.batch_sharding(mesh), replicated),
                 out_shardings=(state_sharding, replicated), donate_argnums=(0,))


@jax.jit
def _all_finite(state) -> jax.Array:
  """True when every floating-point leaf of `state` is finite (keys, ints and bools are skipped)."""
  checks = [jnp.isfinite(x).all() for x in jax.tree.leaves(state)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def run_training(*, workdir: str, config: ml_collections.ConfigDict, state: TrainState, step_fn: StepFn,
                 batches: Iterator[Any], seed: int, mesh: jax.sharding.Mesh | None = None,
                 eval_fn: EvalFn | None = None, fsdp_min_size: int = 2**18,
                 sharding_rules: Sequence[sharding_lib.ShardingRule] = ()) -> TrainState:
  """Trains `state` for `config.num_steps` updates of `step_fn`, resuming from `workdir` if it holds a run.

  Args:
    workdir: checkpoints go to `workdir/checkpoints`, metrics to `workdir/metrics.jsonl` and
      `workdir/tensorboard/`.
    config: the `train` section (see `train_config`).
    state: a freshly initialised state (its structure, dtypes and shardings are the restore target). Its
      buffers are donated to the first step: do not use `state` (or arrays it shares) after the call.
    step_fn: the pure step `(state, batch, rng) -> (state, metrics)`; metrics must include `loss`.
    batches: an iterator of host (numpy) batches, one per step. If it has `get_state()`/`set_state()` (grain
      iterators do), its position is checkpointed; otherwise a resumed run skips the batches already used.
    seed: the base of every step's random key.
    mesh: device mesh; default one `data` axis over every device.
    eval_fn: called with the state every `config.eval_every` steps and at the end; returns scalar metrics.
    fsdp_min_size, sharding_rules: how the state is laid out over the mesh (`core.sharding.state_sharding`);
      rules match key paths of the whole state, so a rule for a parameter also places its optimizer moments.
  """
  mesh = mesh or sharding_lib.make_mesh()
  state_sharding = sharding_lib.state_sharding(mesh, state, fsdp_min_size, sharding_rules)
  replicated = sharding_lib.replicated(mesh)

  def keyed_step(state, batch, base_key):
    return step_fn(state, batch, jax.random.fold_in(base_key, state.step))

  jitted_step = jit_on_mesh(keyed_step, mesh, state_sharding)
  base_key = jax.device_put(jax.random.key(seed), replicated)

  checkpointer = checkpoint_lib.Checkpointer(f"{workdir}/checkpoints", every=config.checkpoint_every,
                                             keep=config.keep_checkpoints)
  state = jax.device_put(state, state_sharding)
  start_step = 0
  latest = checkpointer.latest_step()
  if latest is not None:
    state, data_position = checkpointer.restore(latest, state)
    start_step = int(latest)
    if hasattr(batches, "set_state") and data_position is not None:
      batches.set_state(data_position)
    else:
      for _ in range(start_step):
        next(batches)
    tqdm.tqdm.write(f"Resumed from step {start_step} ({checkpointer.directory}).")
  # Records after the checkpoint (all of them on a fresh start) came from an attempt that did not finish.
  writer = metrics_lib.MetricsWriter(workdir, tensorboard=config.tensorboard, purge_after=start_step)

  def data_position():
    return batches.get_state() if hasattr(batches, "get_state") else None

  def last_good() -> str:
    """Where a NaN stop leaves the run: the newest checkpoint, which every step up to it passed."""
    step = checkpointer.latest_step()
    return (f"the last good checkpoint is step {step} in {checkpointer.directory}" if step is not None
            else "no checkpoint was saved before it")

  def check_finite(step: int, scalars: Mapping[str, float]) -> None:
    bad = [k for k in ("loss", "grad_norm") if k in scalars and not np.isfinite(scalars[k])]
    if bad:
      raise NonFiniteLossError(
          f"{' and '.join(f'{k} is {scalars[k]}' for k in bad)} at step {step}; training stopped and {last_good()}. "
          "Fix: lower "
          f"optimizer.learning_rate, set optimizer.grad_clip_norm, or check the batch at step {step}; rerunning "
          "the same command resumes from the last good checkpoint.")

  def check_state_finite(step: int, state) -> None:
    """Before a save: a finite loss and gradient norm do not make the update finite (adam's 0/0 at eps = 0,
    an overflow in low precision), and a non-finite checkpoint would be where every resume starts."""
    if not bool(_all_finite(state)):
      raise NonFiniteLossError(
          f"the training state after step {step} holds NaN or Inf values although its loss and gradient norm "
          f"were finite; it was not saved, and {last_good()}. Fix: lower optimizer.learning_rate, raise optimizer.eps, "
          "or train in float32; rerunning the same command resumes from the last good checkpoint.")

  num_steps = config.num_steps
  if start_step > num_steps:
    raise ValueError(
        f"{checkpointer.directory} holds a checkpoint of step {start_step}, past this run's train.num_steps = "
        f"{num_steps}: nothing would train, and the state returned would be that longer run's. Fix: pass "
        f"--config.train.num_steps={start_step} or more to continue it, or use a fresh workdir.")
  bar = tqdm.tqdm(total=num_steps, initial=start_step, disable=not config.progress_bar, unit="step",
                  dynamic_ncols=True)
  window: list[dict[str, float]] = []
  window_start = time.perf_counter()
  pending: tuple[int, Mapping[str, jax.Array]] | None = None

  def drain(pending) -> None:
    """Fetches step k's metrics (blocking only on step k), checks them, and logs at the interval."""
    nonlocal window, window_start
    step, metrics = pending
    scalars = _host_scalars(metrics)
    check_finite(step, scalars)
    window.append(scalars)
    if step % config.log_every == 0 or step % config.checkpoint_every == 0 or step == num_steps:
      elapsed = time.perf_counter() - window_start
      mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
      mean["steps_per_sec"] = len(window) / max(elapsed, 1e-9)
      writer.write(step, mean, "train")
      bar.set_postfix(loss=f"{mean['loss']:.4g}")
      window, window_start = [], time.perf_counter()

  try:
    for step in range(start_step + 1, num_steps + 1):
      try:
        batch = next(batches)
      except StopIteration:
        raise RuntimeError(
            f"the data iterator ran out at step {step} of {num_steps}. Fix: make it repeat (num_epochs=None) "
            "or lower train.num_steps.") from None
      state, metrics = jitted_step(state, sharding_lib.shard_batch(batch, mesh), base_key)
      if pending is not None:
        drain(pending)
      pending = (step, metrics)
      bar.update(1)
      is_last = step == num_steps
      if step % config.checkpoint_every == 0 or is_last or (eval_fn and config.eval_every and
                                                             step % config.eval_every == 0):
        drain(pending)  # a state is saved or evaluated only after its own loss was checked finite
        pending = None
        paused = time.perf_counter()
        if eval_fn is not None and (is_last or (config.eval_every and step % config.eval_every == 0)):
          writer.write(step, eval_fn(state), "eval")  # before the save: a kill between them redoes both
        if step % config.checkpoint_every == 0 or is_last:
          check_state_finite(step, state)
          checkpointer.save(step, state, data_position(), force=is_last)
        window_start += time.perf_counter() - paused  # steps_per_sec counts training steps, not evals or saves
  finally:
    bar.close()
    writer.close()
    checkpointer.close()
  return state
