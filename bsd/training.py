"""Training and evaluation of BSD and its baselines on every task (arXiv 2509.20284, Sec. 4 protocol).

`train_and_evaluate(config, workdir)` is what `python -m bsd.train` runs and what tests, notebooks and the
report call: it loads the task's data, builds the paired networks, trains with the shared loop of `core.train`
(one jitted step updating both pathways from the sum of the layer-local losses), evaluates on the test split,
writes `results.json` and the plots, and returns the results.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from bsd import codes as codes_lib
from bsd import datasets, frechet, methods, networks, neurons, plots
from core import config as config_lib
from core import data as data_lib
from core import sharding as sharding_lib
from core.train import loop, optim
from core.train.metrics import read_metrics
from core.train.state import TrainState, create_train_state, make_train_step


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Every check that can fail before compilation does fail here."""
  task = config_lib.check_choice(config, "task", methods.TASKS)
  method = config_lib.check_choice(config, "method", methods.METHODS)
  valid_data = {"classify": datasets.IMAGE_DATASETS, "generate": datasets.IMAGE_DATASETS,
                "next_char": ("kjv",), "forecast": tuple(data_lib.TIME_SERIES)}[task]
  config_lib.check_choice(config, "dataset", valid_data)
  data_lib.check_data_dir(config)
  arch = config_lib.check_choice(config, "model.arch", networks.ARCHS)
  config_lib.check_choice(config, "model.backward_upsample", networks.BACKWARD_UPSAMPLE)
  sequence_task = task in ("next_char", "forecast")
  if sequence_task != (arch == "rnn"):
    need = "rnn" if sequence_task else "mlp or cnn"
    raise config_lib.ConfigError(f"config.model.arch = {arch!r} does not fit task {task!r}: it needs {need}. "
                                 f"Fix: pass --config.model.arch={need.split()[0]}.")
  if task == "generate" and method == "bsd" and arch == "mlp" and not config.model.hidden:
    # The latent's alignment loop keeps its gradient through the decoder's top level (level L-1); with no hidden
    # layer that level is the reconstruction itself, and the pixel error would train the encoder by backprop.
    raise config_lib.ConfigError("config.model.hidden is empty for the BSD autoencoder: with no level between the "
                                 "latent and the reconstruction, it would train end to end by backprop, not by "
                                 "BSD. Fix: give it a hidden layer, e.g. --config.model.hidden='(256,)'.")
  if arch == "cnn" and not config.model.channels:
    raise config_lib.ConfigError("config.model.channels is empty for arch 'cnn'. Fix: e.g. "
                                 "--config.model.channels='(16, 32)'.")
  _check_layer_sizes(config)
  _check_unread_settings(config)
  config_lib.check_positive(config, "eval.frechet_classifier_steps", allow_zero=True)  # 0 turns the score off
  config_lib.check_positive(config, "model.code_dim")
  config_lib.check_positive(config, "model.init_scale")
  config_lib.check_choice(config, "model.ann_activation", networks.ANN_ACTIVATIONS)
  config_lib.check_choice(config, "codes.kind", codes_lib.CODE_KINDS)
  if config.codes.kind == "random":
    config_lib.check(config, "codes.rate", lambda v: 0 < v < 1, "must lie in (0, 1) (the fraction of code "
                     "neurons on; 0 or 1 gives every class the same code)")
  neurons.validate_neuron_config(config)
  methods.validate_objective_config(config)
  config_lib.check_positive(config, "sequence.length")
  config_lib.check(config, "sequence.burn_in", lambda v: 0 <= v < config.sequence.length,
                   f"must lie in [0, sequence.length = {config.sequence.length})")
  config_lib.check(config, "sequence.train_fraction", lambda v: 0 < v < 1, "must lie in (0, 1)")
  config_lib.check_choice(config, "sequence.transform", datasets.TRANSFORMS)
  config_lib.check_positive(config, "train_subset", allow_zero=True)
  config_lib.check_positive(config, "test_subset", allow_zero=True)
  config_lib.check_positive(config, "validation_size", allow_zero=True)
  train_size = datasets.DEFAULT_TRAIN_SIZES.get(config.dataset) if not config.data_dir else None
  if task in ("classify", "generate") and config.validation_size and train_size is not None:
    if not config.validation_size < train_size:
      raise config_lib.ConfigError(datasets.validation_size_error(config.validation_size, train_size))
  _check_seeds(config)
  if task in ("next_char", "forecast") and config.validation_size:
    raise config_lib.ConfigError(f"config.validation_size is read for image tasks only, not {task!r}. Fix: leave "
                                 "it at 0.")
  if task == "forecast" and (config.train_subset or config.test_subset):
    raise config_lib.ConfigError("config.train_subset / test_subset are not read for 'forecast' (its windows are "
                                 "the whole series, split by sequence.train_fraction). Fix: leave them at 0.")
  _check_buildable(config)
  sharding_lib.validate_mesh_config(config)
  config_lib.check_divisible(config, "batch_size", jax.device_count(), "the number of devices")
  config_lib.check_divisible(config, "eval_batch_size", jax.device_count(), "the number of devices")
  optim.validate_optimizer_config(config, num_steps=config.train.num_steps)
  loop.validate_train_config(config)


def _check_layer_sizes(config: ml_collections.ConfigDict) -> None:
  """Every layer width, channel count and the kernel size is a positive integer: a zero would otherwise reach the
  weight initialiser's 1 / sqrt(fan_in) as a ZeroDivisionError."""
  for key in ("model.hidden", "model.channels"):
    config_lib.check(config, key, lambda sizes: all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                                                    for n in sizes),
                     "every size must be an integer > 0", f"pass --config.{key}=<a tuple of positive sizes, e.g. "
                     f"{'(128,)' if key == 'model.hidden' else '(16, 32)'}>")
  config_lib.check(config, "model.kernel_size",
                   lambda k: isinstance(k, int) and not isinstance(k, bool) and k > 0 and k % 2,
                   "must be an odd integer > 0 (an even kernel pads 'SAME' unevenly, which the backward blocks do "
                   "not mirror)", "pass --config.model.kernel_size=<odd size > 0, e.g. 3>")


# Settings read only by some tasks, architectures or methods: (key, default, whether this config reads it, where
# it is read). A changed value that nothing reads would change nothing.
_READ_WHEN = (
    ("model.channels", (), lambda c: c.model.arch == "cnn", "arch 'cnn'"),
    ("model.kernel_size", 3, lambda c: c.model.arch == "cnn", "arch 'cnn'"),
    ("model.backward_upsample", "before", lambda c: c.model.arch == "cnn", "arch 'cnn'"),
    ("model.reconstruct", False, lambda c: c.task == "classify" and c.method == "bsd", "BSD classification"),
    ("bsd.top_loop", True, lambda c: c.task == "generate" and c.method == "bsd", "the BSD autoencoder"),
    ("bsd.fft_weight", 0.0, lambda c: c.task == "generate", "task 'generate'"),
    ("bsd.fft_high_boost", 1.0, lambda c: c.task == "generate", "task 'generate'"),
)


def _check_unread_settings(config: ml_collections.ConfigDict) -> None:
  for key, default, read, where in _READ_WHEN:
    if not read(config):
      config_lib.check(config, key, lambda v, d=default: v == d or (isinstance(d, tuple) and tuple(v) == d),
                       f"is read only for {where}, not here (task {config.task!r}, arch {config.model.arch!r}, "
                       f"method {config.method!r}), so it must keep its default {default!r}",
                       f"drop --config.{key}")


def _check_seeds(config: ml_collections.ConfigDict) -> None:
  # The batch pipeline and numpy's generators take seeds in [0, 2**32); a negative one fails only on first use.
  for key in ("seed", "codes.seed", "eval.frechet_seed"):
    config_lib.check_seed(config, key)


def _check_buildable(config: ml_collections.ConfigDict) -> None:
  """The class codes, the layer layout and the series windows that `build_model` and the data loader would reject
  (each naming its fix) are checked here, so that a bad size is a config error before any data loads."""
  task, m = config.task, config.model
  try:
    if task in ("classify", "generate"):
      in_shape, classes = datasets.IMAGE_SHAPES[config.dataset], datasets.IMAGE_CLASSES
    elif task == "next_char":
      classes = datasets.kjv_vocab_size()
      in_shape = (classes,)
    else:
      in_shape, classes = (1,), 0
    if task in ("classify", "next_char"):
      codes_lib.class_codes(config.codes.kind, classes, m.code_dim, rate=config.codes.rate, seed=config.codes.seed)
    if task == "forecast":  # the target's population code (bsd/methods.py), over code_dim neurons
      codes_lib.check_population_code(m.code_dim, config.codes.low, config.codes.high, config.codes.width)
    _layout(config, in_shape)
    if task == "forecast":
      datasets.load_series(config)  # a small statsmodels series; its windows check sequence.length
  except config_lib.ConfigError:
    raise
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None


def _layout(config: ml_collections.ConfigDict, in_shape) -> networks.Layout:
  """The level layout of `config.model` for inputs of `in_shape` (the top: one value when forecasting)."""
  m = config.model
  return networks.make_layout(m.arch, in_shape, hidden=m.hidden, channels=m.channels,
                              top_dim=1 if config.task == "forecast" else m.code_dim, backward_top_dim=m.code_dim,
                              batch_norm=m.batch_norm, kernel_size=m.kernel_size,
                              backward_upsample=m.backward_upsample)


def build_model(config: ml_collections.ConfigDict, data: datasets.TaskData) -> networks.BSDNet:
  task, method, m = config.task, config.method, config.model
  code_table = None
  if task in ("classify", "generate"):
    in_shape = data.train["image"].shape[1:]
  elif task == "next_char":
    in_shape = (data.num_classes,)
  else:
    in_shape = (1,)
  if task in ("classify", "next_char"):
    code_table = codes_lib.class_codes(config.codes.kind, data.num_classes, m.code_dim, rate=config.codes.rate,
                                       seed=config.codes.seed)
  layout = _layout(config, in_shape)
  with_backward = method == "bsd" or task == "generate"
  reconstruct = task == "generate" or (method == "bsd" and m.reconstruct and task == "classify")
  return networks.BSDNet(layout, rngs=nnx.Rngs(config.seed), with_backward=with_backward, reconstruct=reconstruct,
                         init_scale=m.init_scale, feedback_alignment=method == "fa",
                         direct_feedback=method == "dfa", codes=code_table)


def describe_network(config: ml_collections.ConfigDict, model: networks.BSDNet) -> str:
  """The forward network in words, from the built model: "MLP 784-512-512-100", "CNN conv8-conv16-fc64,
  BatchNorm", "RNN 63-128(recurrent LIF)-126" (what a report's scale column prints)."""
  m = config.model
  sizes = [int(np.prod(shape)) for shape in model.levels]
  if m.arch == "mlp":
    text = "MLP " + "-".join(map(str, sizes))
  elif m.arch == "cnn":
    text = "CNN " + "-".join([f"conv{c}" for c in m.channels] + [f"fc{h}" for h in m.hidden])
  else:
    text = f"RNN {sizes[0]}-" + "-".join(f"{h}(recurrent LIF)" for h in m.hidden) + f"-{sizes[-1]}"
  return text + (", BatchNorm" if m.batch_norm else "")


def make_loss_fn(config: ml_collections.ConfigDict, obj: methods.Objective, data: datasets.TaskData) -> Callable:
  if config.task == "classify":
    return functools.partial(methods.classify_loss, obj)
  if config.task == "generate":
    return functools.partial(methods.generate_loss, obj)
  return functools.partial(methods.make_sequence_loss(data.num_classes), obj)


def _padded_batches(split: dict[str, np.ndarray], batch_size: int):
  """Whole split in fixed-size batches; the last one is padded and masked (exact metrics, one compilation)."""
  n = len(next(iter(split.values())))
  padded = -(-n // batch_size) * batch_size
  for start in range(0, padded, batch_size):
    stop = min(start + batch_size, n)
    batch = {}
    for key, value in split.items():
      chunk = np.zeros((batch_size, *value.shape[1:]), value.dtype)
      chunk[:stop - start] = value[start:stop]
      batch[key] = chunk
    batch["mask"] = (np.arange(batch_size) < stop - start).astype(np.float32)
    yield batch


def make_evaluator(config: ml_collections.ConfigDict, obj: methods.Objective, graphdef, data: datasets.TaskData,
                   mesh, split: dict[str, np.ndarray] | None = None) -> Callable[[TrainState], dict[str, float]]:
  """Exact metrics of the forward pathway (and, for generation, the backward pathway's reconstructions) on
  `split` (default: the test split)."""
  task = config.task
  vocab = data.num_classes

  @jax.jit
  def eval_batch(params, model_state, batch):
    model = nnx.merge(graphdef, params, model_state)
    mask = batch["mask"]
    if task == "classify":
      logits, _ = methods.classify_outputs(obj, model, batch["image"], train=False)
      return {"correct": jnp.sum((logits.argmax(-1) == batch["label"]) * mask)}
    if task == "generate":
      recon, _, _ = methods.generate_outputs(obj, model, batch["image"], train=False)
      err = jnp.mean((recon - methods.to_float(batch["image"])) ** 2, axis=(1, 2, 3))
      return {"sq_err": jnp.sum(err * mask), "recon": recon}
    outputs, _ = methods.sequence_outputs(obj, model, batch, vocab, train=False)
    targets = batch["target"].T
    if task == "next_char":
      steps = slice(obj.burn_in, None)
      out, tgt = outputs[steps], targets[steps]
      nll = -jnp.take_along_axis(jax.nn.log_softmax(out), tgt[..., None], -1)[..., 0]
      return {"correct": jnp.sum((out.argmax(-1) == tgt) * mask), "nll": jnp.sum(nll * mask),
              "count": jnp.sum(jnp.ones_like(nll) * mask)}
    # Forecast: the last step of each window, so each test point is scored once with a full context.
    err = (outputs[-1] - targets[-1]) ** 2
    return {"sq_err": jnp.sum(err * mask)}

  split = data.test if split is None else split

  def evaluate(state: TrainState) -> dict[str, float]:
    sums: dict[str, float] = {}
    recons = []
    for batch in _padded_batches(split, config.eval_batch_size):
      # every process builds the whole global batch and hands its own rows to the mesh (else each example would
      # count once per process)
      local = sharding_lib.process_rows(batch)
      out = eval_batch(state.params, state.model_state, sharding_lib.shard_batch(local, mesh))
      for key, value in out.items():
        if key == "recon":  # the whole batch's reconstructions, gathered from every process
          recons.append(sharding_lib.to_host(value)[batch["mask"] > 0])
        else:
          sums[key] = sums.get(key, 0.0) + float(value)
    n = len(next(iter(split.values())))
    if task == "classify":
      return {"accuracy": sums["correct"] / n}
    if task == "generate":
      metrics = {"recon_mse": sums["sq_err"] / n}
      evaluate.last_recons = np.concatenate(recons)
      return metrics
    if task == "next_char":
      return {"accuracy": sums["correct"] / sums["count"],
              "bits_per_char": sums["nll"] / sums["count"] / np.log(2.0)}
    return {"mse": sums["sq_err"] / n}

  evaluate.last_recons = None
  return evaluate


def _frechet(config, data: datasets.TaskData, recons: np.ndarray) -> dict[str, float]:
  feature_fn, predict_fn = frechet.train_feature_classifier(
      np.asarray(data.train["image"]), np.asarray(data.train["label"]), steps=config.eval.frechet_classifier_steps,
      seed=config.eval.frechet_seed)
  real = np.asarray(data.test["image"])
  scaled = (recons * 255.0).round().astype(np.uint8) if real.dtype == np.uint8 else recons.astype(np.float32)
  return {"frechet_classifier": frechet.frechet_distance(feature_fn(real), feature_fn(scaled)),
          "classifier_accuracy_on_recons": float(np.mean(predict_fn(scaled) == np.asarray(data.test["label"]))),
          "classifier_accuracy_on_test": float(np.mean(predict_fn(real) == np.asarray(data.test["label"])))}


def _trace_for_plots(config, obj, graphdef, state, data) -> dict[str, Any]:
  """Spikes of level 1 of both pathways for a few test samples (for the raster)."""
  model = nnx.merge(graphdef, *sharding_lib.to_host((state.params, state.model_state)))  # run here, unsharded
  n = len(next(iter(data.test.values())))
  rows = np.linspace(0, n - 1, min(8, n)).astype(int)  # spread over the split (some sources are sorted by class)
  test = {key: np.asarray(v)[rows] for key, v in data.test.items()}
  if config.task == "classify":
    fwd = networks.forward_pass(model, methods.to_float(test["image"]), obj.spec, train=False, static=True)
    bwd = None
    if model.backward:
      top = model.codes[...][test["label"]]
      bwd = networks.backward_pass(model, top, obj.spec, train=False, static=True)
  elif config.task == "generate":
    _, fwd, bwd = methods.generate_outputs(obj, model, test["image"], train=False)
  else:
    _, fwd = methods.sequence_outputs(obj, model, test, data.num_classes, train=False)
    bwd = None
    if model.backward:
      top = methods.sequence_top(obj, model, test["target"])
      bwd = networks.backward_pass(model, top, obj.spec, train=False, static=False)
    # One window over its whole length reads better than 8 windows side by side.
    return {"forward_spikes": np.asarray(fwd.spikes[1])[:, :1],
            "backward_spikes": None if bwd is None else np.asarray(bwd.spikes[1])[:, :1]}
  return {"forward_spikes": np.asarray(fwd.spikes[1]),
          "backward_spikes": None if bwd is None else np.asarray(bwd.spikes[1])}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains on the train split, evaluates on the test split; returns and writes `results.json` and the plots."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  data = datasets.load_task_data(config)
  model = build_model(config, data)
  obj = methods.make_objective(config)
  tx = optim.make_optimizer(config.optimizer, config.train.num_steps)
  graphdef, state = create_train_state(model, tx)
  step_fn = make_train_step(graphdef, make_loss_fn(config, obj, data), tx)
  mesh = sharding_lib.mesh_from_config(config.mesh)

  per_process_batch = config.batch_size // jax.process_count()
  batches = data_lib.make_batches(data.train, per_process_batch, seed=config.seed, shuffle=True, num_epochs=None,
                                  drop_remainder=True)
  evaluate = make_evaluator(config, obj, graphdef, data, mesh)
  state = loop.run_training(workdir=workdir, config=config.train, state=state, step_fn=step_fn, batches=batches,
                            seed=config.seed, mesh=mesh, eval_fn=evaluate, fsdp_min_size=config.mesh.fsdp_min_size)
  final = evaluate(state)
  results: dict[str, Any] = {
      "task": config.task, "method": config.method, "dataset": config.dataset, "arch": config.model.arch,
      "network": describe_network(config, model),
      "steps": int(state.step), "batch_size": int(config.batch_size), "epochs": int(state.step) * config.batch_size / max(
          len(next(iter(data.train.values()))), 1),
      # For sequences every element is one SNN time step, so T is the window length there.
      "time_steps": (int(config.sequence.length) if config.model.arch == "rnn" else
                     1 if config.method == "bp_ann" else int(config.neuron.time_steps)), **data.info,
      **{f"test_{k}": v for k, v in final.items()}}
  recons = evaluate.last_recons
  if data.validation is not None:
    on_validation = make_evaluator(config, obj, graphdef, data, mesh, split=data.validation)
    results.update({f"validation_{k}": v for k, v in on_validation(state).items()})
  if config.task == "generate" and config.eval.frechet_classifier_steps > 0:
    results.update({f"test_{k}": v for k, v in _frechet(config, data, recons).items()})
  if config.task == "forecast":
    # Context for the MSE: predicting the last observed (z-scored) value, and predicting the training mean (0).
    last_in, last_target = data.test["input"][:, -1], data.test["target"][:, -1]
    results["test_mse_persistence"] = float(np.mean((last_in - last_target) ** 2))
    results["test_mse_train_mean"] = float(np.mean(last_target ** 2))
  last_train = read_metrics(workdir, "train")[-1]
  results.update({f"train_{k}": v for k, v in last_train.items() if k.startswith(("hamming_l", "frate", "brate"))})
  writer = jax.process_index() == 0  # one writer; every process computed the same results
  if config.eval.plots:
    trace = _trace_for_plots(config, obj, graphdef, state, data)  # on every process: it gathers the parameters
    shown = np.linspace(0, len(recons) - 1, 16).astype(int) if recons is not None else None
    originals = np.asarray(data.test["image"])[shown] if recons is not None else None
    if writer:
      plots.save_all(workdir, originals=originals, recons=None if recons is None else recons[shown], **trace)
  if writer:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
  return results
