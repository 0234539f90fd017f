"""The timing harness: compile time apart, the right number of calls, JSON lines with machine and ratio."""

import json

import jax.numpy as jnp
import pytest

from benchmarks import harness


def test_time_fn_counts_calls_and_separates_compile():
  calls = []

  def fn(x):
    calls.append(1)
    return x

  timing = harness.time_fn(fn, 1, warmup=3, iters=5, block=lambda x: x)
  assert len(calls) == 1 + 3 + 5
  assert timing.iters == 5 and 0 <= timing.min_s <= timing.median_s and timing.compile_s >= 0
  with pytest.raises(ValueError, match="iters must be >= 1"):
    harness.time_fn(fn, 1, iters=0)


def test_emit_prints_one_json_line_with_machine_and_ratio(capsys):
  record = harness.emit("bench", "speed", 30.0, unit="tokens/s", peer="them", peer_value=12.0, batch=16)
  line = capsys.readouterr().out.strip()
  assert json.loads(line) == record
  assert record["ratio"] == pytest.approx(2.5)
  assert record["batch"] == 16
  assert {"cpu", "cores", "backend", "devices", "jax"} <= set(record["machine"])
  assert harness.emit("bench", "speed", 1.0, unit="x")["ratio"] is None
  capsys.readouterr()


def test_matmul_benchmark_counts_flops():
  from benchmarks import matmul_peak
  gflops = matmul_peak.matmul_gflops(64, jnp.float32, iters=2)
  assert gflops > 0
