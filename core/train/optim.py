"""Optimizers and learning-rate schedules built from a config section.

The `optimizer` section of an experiment config names everything that changes the update: the optimizer,
its hyper-parameters, the schedule and gradient clipping. Nothing here has a default that a config cannot see.

    config.optimizer = optimizer_config(name="adamw", learning_rate=1e-3, schedule="warmup_cosine",
                                        warmup_steps=100, grad_clip_norm=1.0)

grad_clip_norm = 0 turns clipping off.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from core import config as config_lib

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "linear", "warmup_linear")
# the fields of the section that each optimizer ignores (weight_decay has its own check: only adamw decays)
_ADAM_FIELDS, _MOMENTUM_FIELDS = ("b1", "b2", "eps"), ("momentum", "nesterov")
UNREAD_BY = {"sgd": (*_ADAM_FIELDS, *_MOMENTUM_FIELDS, "decay_vectors"),
             "momentum": (*_ADAM_FIELDS, "decay_vectors"),
             "adam": (*_MOMENTUM_FIELDS, "decay_vectors"),
             "adamw": _MOMENTUM_FIELDS}


def optimizer_config(**overrides) -> ml_collections.ConfigDict:
  """A complete `optimizer` section; configs call this and override what they change.

  Every field is present so that `print(config)` shows all numbers that shape the update.
  The values below are optax's documented defaults for each optimizer. Schedules follow optax's count
  convention: update i (1-based) uses the schedule's value at i - 1, so a warmup's first update has learning rate
  0 and a decay's last update is one step short of `end_learning_rate` (what every run here was trained with).
  Weight decay is adamw's decoupled decay (of every parameter, as optax's adamw without a mask): 1e-4 by default
  for adamw, 0 for the others, which have none (a non-zero value there is a config error, not silently ignored).
  `decay_vectors=False` leaves the parameters with fewer than 2 dimensions (biases, norm scales) undecayed, as MaxText and big_vision do; the
  default True keeps optax's unmasked adamw, which every experiment here was run with.
  """
  name = overrides.get("name", "adamw")
  return config_lib.section("optimizer", dict(
      name="adamw", learning_rate=1e-3, schedule="constant", warmup_steps=0, end_learning_rate=0.0,
      b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4 if name == "adamw" else 0.0, decay_vectors=True,
      momentum=0.9, nesterov=False, grad_clip_norm=0.0), overrides)


def validate_optimizer_config(config: ml_collections.ConfigDict, prefix: str = "optimizer",
                              num_steps: int | None = None) -> None:
  """Checks the `optimizer` section before anything is built or compiled (with `num_steps`, also that a warm-up
  ends before the run does)."""
  config_lib.check_choice(config, f"{prefix}.name", OPTIMIZERS)
  config_lib.check_positive(config, f"{prefix}.learning_rate")
  config_lib.check_choice(config, f"{prefix}.schedule", SCHEDULES)
  for key in ("warmup_steps", "weight_decay", "grad_clip_norm", "end_learning_rate"):
    config_lib.check_positive(config, f"{prefix}.{key}", allow_zero=True)
  # adam(w) divides by sqrt(v) + eps: at eps = 0 a parameter whose gradient is exactly 0 gets 0/0 = NaN.
  config_lib.check_positive(config, f"{prefix}.eps")
  for key in ("b1", "b2", "momentum"):
    config_lib.check(config, f"{prefix}.{key}", lambda v: 0 <= v < 1, "must lie in [0, 1)")
  name = config_lib.get_value(config, f"{prefix}.name")
  if name != "adamw":
    config_lib.check(config, f"{prefix}.weight_decay", lambda v: v == 0,
                     f"must be 0 for optimizer {name!r}: only adamw has weight decay here",
                     f"pass --config.{prefix}.name=adamw or --config.{prefix}.weight_decay=0")
  # Settings the chosen optimizer never reads must stay at their defaults: a changed one would change nothing.
  defaults = optimizer_config()
  section = config_lib.get_value(config, prefix)
  for key in sorted(set(UNREAD_BY[name]) & set(section.keys())):
    config_lib.check(config, f"{prefix}.{key}", lambda v, d=defaults[key]: v == d,
                     f"is not read by optimizer {name!r}, so it must keep its default {defaults[key]!r}",
                     f"drop --config.{prefix}.{key}, or pick an optimizer that reads it "
                     f"({', '.join(n for n in OPTIMIZERS if key not in UNREAD_BY[n])})")
  schedule = config_lib.get_value(config, f"{prefix}.schedule")
  if schedule == "constant":
    config_lib.check(config, f"{prefix}.end_learning_rate", lambda v: v == 0,
                     "must be 0 for schedule 'constant', which never decays to it",
                     f"drop --config.{prefix}.end_learning_rate, or pick a decaying schedule")
  else:
    lr = config_lib.get_value(config, f"{prefix}.learning_rate")
    config_lib.check(config, f"{prefix}.end_learning_rate", lambda v: v <= lr,
                     f"must not exceed learning_rate = {lr}: schedule {schedule!r} would then raise the learning "
                     "rate instead of decaying it", f"pass --config.{prefix}.end_learning_rate=<at most {lr}>")
  if num_steps is not None and str(schedule).startswith("warmup_"):
    config_lib.check(config, f"{prefix}.warmup_steps", lambda v: v < num_steps,
                     f"must be below the run's {num_steps} steps, or the learning rate never reaches its peak",
                     f"pass --config.{prefix}.warmup_steps=<fewer steps>")
  if not str(schedule).startswith("warmup_"):
    config_lib.check(config, f"{prefix}.warmup_steps", lambda v: v == 0,
                     f"must be 0 for schedule {schedule!r}, which has no warmup",
                     f"pass --config.{prefix}.warmup_steps=0 or a warmup_* schedule")


def make_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  lr = opt.learning_rate
  end = opt.end_learning_rate
  warmup = int(opt.warmup_steps)
  decay_steps = max(total_steps - warmup, 1)
  if opt.schedule == "constant":
    return optax.constant_schedule(lr)
  if opt.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, max(total_steps, 1), alpha=end / lr)
  if opt.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, warmup + decay_steps, end_value=end)
  if opt.schedule == "linear":
    return optax.linear_schedule(lr, end, max(total_steps, 1))
  if opt.schedule == "warmup_linear":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, max(warmup, 1)), optax.linear_schedule(lr, end, decay_steps)],
        [warmup])
  raise config_lib.ConfigError(f"unknown schedule {opt.schedule!r}; valid: {SCHEDULES}")


def _matrices_only(params):
  """adamw's decay mask for `decay_vectors=False`: True on parameters with 2 or more dimensions."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """optax chain: optional global-norm clipping, then the optimizer with its schedule."""
  if opt.name != "adamw" and opt.weight_decay:
    raise config_lib.ConfigError(f"optimizer {opt.name!r} has no weight decay here, but weight_decay = "
                                 f"{opt.weight_decay}. Fix: use adamw, or set weight_decay to 0.")
  if str(opt.schedule).startswith("warmup_") and opt.warmup_steps >= total_steps:
    raise config_lib.ConfigError(f"warmup_steps = {opt.warmup_steps} is not below the run's {total_steps} steps, "
                                 "so the learning rate would never reach its peak. Fix: lower "
                                 "optimizer.warmup_steps (or raise the number of steps).")
  schedule = make_schedule(opt, total_steps)
  if opt.name == "sgd":
    core = optax.sgd(schedule)
  elif opt.name == "momentum":
    core = optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov)
  elif opt.name == "adam":
    core = optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps)
  elif opt.name == "adamw":
    # Configs written before `decay_vectors` existed decay every parameter, as they always did.
    mask = None if opt.get("decay_vectors", True) else _matrices_only
    core = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay, mask=mask)
  else:
    raise config_lib.ConfigError(f"config.optimizer.name = {opt.name!r} is invalid; valid: {OPTIMIZERS}")
  clip = opt.grad_clip_norm
  if clip:
    return optax.chain(optax.clip_by_global_norm(clip), core)
  return core
