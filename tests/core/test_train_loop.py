"""The training loop: bit-identical resume, NaN stop keeping the last good checkpoint, outputs on disk."""

import glob
import json
import os
import time

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from core.config import ConfigError
from core.train import loop, optim
from core.train.checkpoint import CheckpointMismatchError, Checkpointer
from core.train import metrics as metrics_lib
from core.train.metrics import read_metrics
from core.train.state import create_train_state, make_train_step


class Regressor(nnx.Module):
  def __init__(self, rngs):
    self.hidden = nnx.Linear(4, 16, rngs=rngs)
    self.dropout = nnx.Dropout(0.1)
    self.out = nnx.Linear(16, 1, rngs=rngs)

  def __call__(self, x, rng):
    return self.out(self.dropout(jax.nn.tanh(self.hidden(x)), rngs=rng))


def mse_loss(model, batch, rng):
  # Dropout makes the loss depend on the step's key: resume equality then also checks the keys.
  pred = model(batch["x"], rng)[:, 0]
  return jnp.mean((pred - batch["y"]) ** 2), {}


class ArrayBatches:
  """A minimal checkpointable iterator: shuffled epochs of a fixed array set."""

  def __init__(self, data, batch_size, seed):
    self.data, self.batch_size, self.seed = data, batch_size, seed
    self.position = 0

  def __iter__(self):
    return self

  def __next__(self):
    n = len(self.data["y"])
    per_epoch = n // self.batch_size
    epoch, index = divmod(self.position, per_epoch)
    order = np.random.default_rng([self.seed, epoch]).permutation(n)
    rows = order[index * self.batch_size:(index + 1) * self.batch_size]
    self.position += 1
    return {k: v[rows] for k, v in self.data.items()}

  def get_state(self):
    return {"position": self.position}

  def set_state(self, state):
    self.position = state["position"]


def make_data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 4)).astype(np.float32)
  y = (x @ np.array([1.0, -2.0, 0.5, 0.0], np.float32)).astype(np.float32)
  return {"x": x, "y": y}


def build(num_steps, checkpoint_every=5, lr=0.05):
  config = loop.train_config(num_steps=num_steps, log_every=5, eval_every=5, checkpoint_every=checkpoint_every,
                             keep_checkpoints=2, progress_bar=False, tensorboard=True)
  tx = optim.make_optimizer(optim.optimizer_config(name="adam", learning_rate=lr), num_steps)
  graphdef, state = create_train_state(Regressor(nnx.Rngs(0)), tx)
  return config, graphdef, state, make_train_step(graphdef, mse_loss, tx)


def eval_fn_for(graphdef, data):
  def evaluate(state):
    model = nnx.merge(graphdef, state.params, state.model_state)
    model.eval()
    return {"mse": float(jnp.mean((model(data["x"], None)[:, 0] - data["y"]) ** 2))}
  return evaluate


def test_resume_is_bit_identical(tmp_path, mark_metrics):
  data = make_data()
  config, graphdef, state, step = build(20)
  straight = loop.run_training(workdir=str(tmp_path / "straight"), config=config, state=state, step_fn=step,
                               batches=ArrayBatches(data, 8, seed=1), seed=3)

  # The same run killed after step 10 (the process ends; only the workdir survives), then restarted.
  config_a, graphdef, state, step = build(10)
  loop.run_training(workdir=str(tmp_path / "resumed"), config=config_a, state=state, step_fn=step,
                    batches=ArrayBatches(data, 8, seed=1), seed=3)
  config_b, graphdef, state, step = build(20)
  mark_metrics(tmp_path / "resumed", step=5)  # only a real resume keeps the marks of steps 5 and 10
  with open(tmp_path / "resumed" / "metrics.jsonl", "a") as f:  # a line a killed run wrote past its checkpoint
    f.write(json.dumps({"step": 11, "split": "train", "loss": 123.0}) + "\n")
  resumed = loop.run_training(workdir=str(tmp_path / "resumed"), config=config_b, state=state, step_fn=step,
                              batches=ArrayBatches(data, 8, seed=1), seed=3)

  assert int(resumed.step) == int(straight.step) == 20
  chex.assert_trees_all_equal(jax.device_get(straight.params), jax.device_get(resumed.params))
  chex.assert_trees_all_equal(jax.device_get(straight.opt_state), jax.device_get(resumed.opt_state))
  train = read_metrics(str(tmp_path / "resumed"), "train")
  assert [r["step"] for r in train] == [5, 10, 15, 20]  # the stale step-11 line is gone, nothing logged twice
  assert [r.get("mark") for r in train] == [True, False, None, None]  # resumed at 10, not restarted at 0


def test_training_reduces_loss_and_writes_outputs(tmp_path):
  data = make_data()
  config, graphdef, state, step = build(40)
  evaluate = eval_fn_for(graphdef, data)
  before = evaluate(state)["mse"]
  final = loop.run_training(workdir=str(tmp_path), config=config, state=state, step_fn=step,
                            batches=ArrayBatches(data, 8, seed=1), seed=0, eval_fn=evaluate)
  assert evaluate(final)["mse"] < 0.5 * before
  records = read_metrics(str(tmp_path))
  train = [r for r in records if r["split"] == "train"]
  evals = [r for r in records if r["split"] == "eval"]
  assert [r["step"] for r in evals] == [5, 10, 15, 20, 25, 30, 35, 40]
  assert {"loss", "grad_norm", "steps_per_sec"} <= set(train[0])
  assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  assert Checkpointer(str(tmp_path / "checkpoints"), every=5, keep=2).all_steps() == [35, 40]  # keeps last 2


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
  data = make_data()
  config, graphdef, state, step = build(20)

  class PoisonedBatches(ArrayBatches):
    def __next__(self):
      batch = super().__next__()
      if self.position == 12:  # the 12th batch holds a NaN
        batch = dict(batch, x=np.full_like(batch["x"], np.nan))
      return batch

  with pytest.raises(loop.NonFiniteLossError, match=r"loss is nan and grad_norm is nan at step 12; .*last good checkpoint is step 10"):
    loop.run_training(workdir=str(tmp_path), config=config, state=state, step_fn=step,
                      batches=PoisonedBatches(data, 8, seed=1), seed=0)
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"), every=5, keep=2)
  assert checkpointer.latest_step() == 10
  restored, _ = checkpointer.restore(10, state)
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(restored.params))


def test_nan_gradient_under_a_finite_loss_is_never_checkpointed(tmp_path):
  """Step k's loss is computed before update k: a NaN gradient with a finite loss must stop the run before the
  NaN parameters it produced are saved as the 'last good' checkpoint."""
  data = make_data()
  config, graphdef, state, _ = build(20)
  tx = optim.make_optimizer(optim.optimizer_config(name="adam", learning_rate=0.05), 20)

  def loss_with_a_nan_gradient(model, batch, rng):
    loss, aux = mse_loss(model, batch, rng)
    # 0 * sqrt(p w^2): value 0; gradient 0 * sign(w) at p = 1, but 0 * inf * 0 = NaN at p = 0 (step 10 only)
    w = model.out.kernel[...]
    return loss + 0.0 * jnp.sum(jnp.sqrt(batch["poison"][0] * w * w)), aux

  class PoisonAtTen(ArrayBatches):
    def __next__(self):
      batch = super().__next__()
      return dict(batch, poison=np.full((8,), 0.0 if self.position == 10 else 1.0, np.float32))

  step = make_train_step(graphdef, loss_with_a_nan_gradient, tx)
  with pytest.raises(loop.NonFiniteLossError, match=r"grad_norm is nan at step 10; .*last good checkpoint is step 5"):
    loop.run_training(workdir=str(tmp_path), config=config, state=state, step_fn=step,
                      batches=PoisonAtTen(data, 8, seed=1), seed=0)
  assert Checkpointer(str(tmp_path / "checkpoints"), every=5, keep=2).all_steps() == [5]


def test_a_non_finite_update_under_a_finite_loss_and_gradient_is_never_checkpointed(tmp_path):
  """adam at eps = 0 turns the exactly-zero gradient of a parameter the loss does not use into 0/0 = NaN: loss and
  gradient norm stay finite, so only the check of the state itself stops the save."""

  class WithSpare(Regressor):
    def __init__(self, rngs):
      super().__init__(rngs)
      self.spare = nnx.Param(jnp.ones((3,)))  # not used by the loss: its gradient is exactly 0

  config, _, _, _ = build(10)
  tx = optim.make_optimizer(optim.optimizer_config(name="adam", learning_rate=0.05, eps=0.0), 10)
  graphdef, state = create_train_state(WithSpare(nnx.Rngs(0)), tx)
  with pytest.raises(loop.NonFiniteLossError, match=r"state after step 5 holds NaN or Inf.*no checkpoint was saved"):
    loop.run_training(workdir=str(tmp_path), config=config, state=state,
                      step_fn=make_train_step(graphdef, mse_loss, tx), batches=ArrayBatches(make_data(), 8, seed=1),
                      seed=0)
  assert Checkpointer(str(tmp_path / "checkpoints"), every=5, keep=2).all_steps() == []
  assert all(np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"]) for m in read_metrics(str(tmp_path), "train"))
  with pytest.raises(ConfigError, match=r"optimizer.eps = 0.0 is invalid: must be a finite number > 0"):
    optim.validate_optimizer_config(ml_collections.ConfigDict({"optimizer": optim.optimizer_config(eps=0.0)}))


def test_a_checkpoint_past_num_steps_is_an_error_not_a_silent_no_op(tmp_path):
  data = make_data()
  config, graphdef, state, step = build(10)
  loop.run_training(workdir=str(tmp_path), config=config, state=state, step_fn=step,
                    batches=ArrayBatches(data, 8, seed=1), seed=0)
  short, _, state, _ = build(5)
  with pytest.raises(ValueError, match=r"checkpoint of step 10, past this run's train.num_steps = 5.*num_steps=10"):
    loop.run_training(workdir=str(tmp_path), config=short, state=state, step_fn=step,
                      batches=ArrayBatches(data, 8, seed=1), seed=0)


def test_killed_runs_leave_no_duplicate_records_and_lose_no_eval(tmp_path, capsys):
  """A kill before the first checkpoint, and a kill inside the final step's eval; then the same command."""
  data = make_data()
  config, graphdef, state, step = build(10, checkpoint_every=6)
  config.unlock()
  config.log_every = 4  # windows of 4 steps cross the checkpoint at 6
  evaluate = eval_fn_for(graphdef, data)

  class Killed(Exception):
    pass

  def kill_at(n):
    class Batches(ArrayBatches):
      def __next__(self):
        if self.position == n:
          raise Killed
        return super().__next__()
    return Batches(data, 8, seed=1)

  def kill_in_eval(at_step):
    def eval_fn(state):
      if int(state.step) == at_step:
        raise Killed
      return evaluate(state)
    return eval_fn

  def run(workdir, batches, eval_fn=evaluate):
    _, _, fresh, _ = build(10)
    return loop.run_training(workdir=str(workdir), config=config, state=fresh, step_fn=step, batches=batches,
                             seed=0, eval_fn=eval_fn)

  run(tmp_path / "straight", ArrayBatches(data, 8, seed=1))
  with pytest.raises(Killed):
    run(tmp_path / "killed", kill_at(5))  # dies at step 6, before its first checkpoint
  with pytest.raises(Killed):
    run(tmp_path / "killed", ArrayBatches(data, 8, seed=1), kill_in_eval(10))  # dies in the final eval
  capsys.readouterr()
  run(tmp_path / "killed", ArrayBatches(data, 8, seed=1))
  assert "Resumed from step 6" in capsys.readouterr().out  # from the checkpoint, not a silent restart at 0
  straight, killed = (read_metrics(str(tmp_path / d)) for d in ("straight", "killed"))
  assert [(r["split"], r["step"]) for r in killed] == [(r["split"], r["step"]) for r in straight]
  assert [(r["split"], r["step"]) for r in straight] == [("train", 4), ("eval", 5), ("train", 6), ("train", 8),
                                                          ("train", 10), ("eval", 10)]
  for a, b in zip(straight, killed):
    np.testing.assert_allclose(b["loss" if a["split"] == "train" else "mse"],
                               a["loss" if a["split"] == "train" else "mse"], rtol=1e-6)


def test_out_of_data_is_a_clear_error(tmp_path):
  data = make_data()
  config, graphdef, state, step = build(20)
  with pytest.raises(RuntimeError, match="data iterator ran out at step 3 of 20"):
    loop.run_training(workdir=str(tmp_path), config=config, state=state, step_fn=step,
                      batches=iter([ArrayBatches(data, 8, 0).__next__() for _ in range(2)]), seed=0)
  assert os.listdir(tmp_path / "checkpoints") == []  # died before step 5's checkpoint: nothing half-written left


def test_a_line_cut_short_by_a_kill_does_not_stop_the_resume(tmp_path):
  """A kill during an append leaves half a record; the resumed run drops it (and the steps after the checkpoint)."""
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 4, "split": "train", "loss": 1.5}\n{"step": 6, "split": "train", "loss": 1.25}\n'
                  '{"step": 8, "spl')
  assert [r["step"] for r in read_metrics(str(tmp_path))] == [4, 6]
  metrics_lib.truncate_jsonl(str(path), 5)
  assert path.read_text() == '{"step": 4, "split": "train", "loss": 1.5}\n'


def test_only_process_zero_writes_metrics(tmp_path, monkeypatch):
  """In a multi-host run every process runs the loop on the shared workdir: one record per step, not one each."""
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 4, "split": "train", "loss": 1.5}\n{"step": 6, "split": "train", "loss": 1.25}\n')
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  other = metrics_lib.MetricsWriter(str(tmp_path / "fresh"), tensorboard=True, console=False)
  other.write(1, {"loss": 2.0})
  other.close()
  assert not (tmp_path / "fresh").exists()
  resumed = metrics_lib.MetricsWriter(str(tmp_path), tensorboard=False, console=False, purge_after=5)
  resumed.write(6, {"loss": 1.0})
  assert [r["step"] for r in read_metrics(str(tmp_path))] == [4, 6]  # not truncated and not appended to
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  primary = metrics_lib.MetricsWriter(str(tmp_path), tensorboard=False, console=False, purge_after=5)
  primary.write(6, {"loss": 1.0})
  assert [(r["step"], r["loss"]) for r in read_metrics(str(tmp_path))] == [(4, 1.5), (6, 1.0)]


def test_resuming_another_configs_checkpoint_names_the_workdir_and_the_fix(tmp_path):
  """orbax alone would suggest strict=False, which pads or cuts the stored weights to fit the new shapes."""
  config, graphdef, state, step = build(5)
  loop.run_training(workdir=str(tmp_path), config=config, state=state, step_fn=step,
                    batches=ArrayBatches(make_data(), 8, seed=1), seed=0)

  class Wider(Regressor):
    def __init__(self, rngs):
      super().__init__(rngs)
      self.hidden, self.out = nnx.Linear(4, 32, rngs=rngs), nnx.Linear(32, 1, rngs=rngs)

  tx = optim.make_optimizer(optim.optimizer_config(name="adam", learning_rate=0.05), 10)
  graphdef, wider = create_train_state(Wider(nnx.Rngs(0)), tx)
  config = loop.train_config(num_steps=10, log_every=5, checkpoint_every=5, progress_bar=False)
  with pytest.raises(CheckpointMismatchError, match=f"step 5 in {tmp_path}.*Fix: use a new --workdir"):
    loop.run_training(workdir=str(tmp_path), config=config, state=wider, step_fn=make_train_step(graphdef, mse_loss, tx),
                      batches=ArrayBatches(make_data(), 8, seed=1), seed=0)


def test_checkpoint_shape_check_names_the_leaf_and_passes_typed_keys(tmp_path):
  """The stored shapes are compared before orbax restores anything (a failed restore left background reads that
  raised after the run had stopped); a typed PRNG key, stored as its key data, passes the check."""
  state = {"w": jnp.ones((3, 2)), "key": jax.random.key(7), "n": jnp.int32(4)}
  ckpt = Checkpointer(str(tmp_path), every=1, keep=1)
  ckpt.save(1, state, None, force=True)
  restored, position = ckpt.restore(1, state)
  assert position is None
  np.testing.assert_array_equal(jax.random.key_data(restored["key"]), jax.random.key_data(state["key"]))
  with pytest.raises(CheckpointMismatchError, match=r"w is stored with shape \(3, 2\), this run's has shape \(3, 4\)"):
    ckpt.restore(1, {**state, "w": jnp.ones((3, 4))})
  with pytest.raises(CheckpointMismatchError, match="extra is not in the checkpoint"):
    ckpt.restore(1, {**state, "extra": jnp.ones(2)})
  with pytest.raises(CheckpointMismatchError, match="n is in the checkpoint but not in this run's state"):
    ckpt.restore(1, {"w": state["w"], "key": state["key"]})
  ckpt.close()


def test_steps_per_sec_counts_training_steps_not_the_evals_between_them(tmp_path):
  data = make_data()
  _, graphdef, state, step = build(20)
  config = loop.train_config(num_steps=20, log_every=5, eval_every=10, checkpoint_every=20, keep_checkpoints=1,
                             progress_bar=False, tensorboard=False)

  def slow_eval(state):
    time.sleep(0.5)  # an evaluation far longer than five training steps of this model
    return {"mse": 0.0}
  loop.run_training(workdir=str(tmp_path), config=config, state=state, step_fn=step,
                    batches=ArrayBatches(data, 8, seed=1), seed=0, eval_fn=slow_eval)
  rates = {r["step"]: r["steps_per_sec"] for r in read_metrics(str(tmp_path), "train")}
  # the window after the step-10 eval: 5 steps in 0.5 s or more would be <= 10 steps/s if the eval were counted
  assert rates[15] > 20, rates
