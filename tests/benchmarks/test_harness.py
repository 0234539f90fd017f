"""The timing harness: compile time apart, the right number of calls, JSON lines with machine and ratio."""

import json
import os
import subprocess
import time

import jax.numpy as jnp
import pytest

from benchmarks import harness


def test_time_fn_counts_calls_and_separates_compile():
  calls = []

  def fn(x):  # the first call stands for a compilation: slow once, then fast
    calls.append(1)
    time.sleep(0.2 if len(calls) == 1 else 0.01)
    return x

  timing = harness.time_fn(fn, 1, warmup=3, iters=5, block=lambda x: x)
  assert len(calls) == 1 + 3 + 5
  # 0.15 s: 15x the timed sleep, below the 0.2 s first call, so only a timed compile call could cross it
  assert timing.iters == 5 and 0.01 <= timing.min_s <= timing.median_s < 0.15 <= 0.2 <= timing.compile_s
  with pytest.raises(ValueError, match="iters must be >= 1"):
    harness.time_fn(fn, 1, iters=0)


def test_time_fn_waits_for_every_call_it_times():
  """Every JAX figure rests on this: each call's result goes through `block` (by default
  `jax.block_until_ready`) before the clock stops, else an asynchronous call times its dispatch only."""
  blocked, results = [], []

  def fn(x):
    results.append(object())
    return results[-1]

  def block(value):
    blocked.append(value)
    time.sleep(0.02)  # a result that takes this long to be ready
    return value

  timing = harness.time_fn(fn, 1, warmup=2, iters=3, block=block)
  assert blocked == results and len(results) == 1 + 2 + 3  # each call's own result, waited for
  assert timing.min_s >= 0.02


def test_emit_prints_one_json_line_with_machine_and_ratio(capsys):
  record = harness.emit("bench", "speed", 30.0, unit="tokens/s", peer="them", peer_value=12.0, batch=16)
  line = capsys.readouterr().out.strip()
  assert json.loads(line) == record
  assert record["ratio"] == pytest.approx(2.5)
  assert record["batch"] == 16
  assert {"cpu", "cores", "backend", "devices", "jax"} <= set(record["machine"])
  assert harness.emit("bench", "speed", 1.0, unit="x")["ratio"] is None
  capsys.readouterr()


def test_matmul_benchmark_counts_flops(monkeypatch):
  """GFLOP/s is 2 n^3 flops over the *median* time, for the n x n operands actually timed: a fixed fake timing
  makes the arithmetic exact (a real one only shows the figure is positive)."""
  import numpy as np

  from benchmarks import matmul_peak
  seen = []

  def fake_time_fn(fn, *args, iters, **kw):
    a, b = args
    seen.append((tuple(a.shape), tuple(b.shape), np.dtype(a.dtype), iters))
    np.testing.assert_allclose(np.asarray(fn(a, b), np.float32),
                               np.asarray(a, np.float32) @ np.asarray(b, np.float32), rtol=2e-2, atol=2e-2)
    # median != min != compile: a figure computed from the wrong field cannot come out equal
    return harness.Timing(compile_s=7.0, median_s=0.25, min_s=0.125, iters=iters)

  monkeypatch.setattr(matmul_peak, "time_fn", fake_time_fn)
  n = 48
  assert matmul_peak.matmul_gflops(n, jnp.float32, iters=3) == 2 * n**3 / 0.25 / 1e9
  assert matmul_peak.matmul_gflops(n, jnp.bfloat16, iters=3) == 2 * n**3 / 0.25 / 1e9
  assert matmul_peak.numpy_gflops(n, iters=4) == 2 * n**3 / 0.25 / 1e9
  assert seen == [((n, n), (n, n), np.dtype(jnp.float32), 3), ((n, n), (n, n), np.dtype(jnp.bfloat16), 3),
                  ((n, n), (n, n), np.dtype(np.float32), 4)]


def test_time_fn_counts_compiles_during_the_timed_calls():
  import jax

  fn = jax.jit(lambda x: x * 2.0)
  assert harness.time_fn(fn, jnp.ones(3), warmup=1, iters=3).compiles_during_timing == 0
  sizes = iter(range(4, 100))

  def recompiles(x):  # a new shape every call: every timed call compiles
    return fn(jnp.zeros(next(sizes)))

  assert harness.time_fn(recompiles, None, warmup=0, iters=3).compiles_during_timing >= 3
  with harness.count_compiles() as counted:
    fn(jnp.ones(101))
  assert counted.count >= 1


def test_machine_info_records_the_machine_state():
  info = harness.machine_info()
  assert isinstance(info["loadavg_1_5_15"], list) and len(info["loadavg_1_5_15"]) == 3
  assert info["timestamp"].endswith("+00:00")
  assert info["git_dirty"] in (True, False, None)
  # where git can read this checkout, the record names its commit
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
  if head.returncode == 0:
    assert info["git_commit"] == head.stdout.strip() and len(info["git_commit"]) == 40
    assert info["git_dirty"] in (True, False)
  assert isinstance(info["cpu_avx512f"], (bool, type(None))) and isinstance(info["cpu_amx_tile"], (bool, type(None)))
  assert "xla_flags" in info and info["threads"]["process_threads"] >= 1
