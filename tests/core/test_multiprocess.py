"""core's multi-host pieces run as two JAX processes on localhost (one CPU device each): every process hands the
mesh its own rows of a global batch (`sharding.process_rows` + `shard_batch`), exact evaluation over them equals one
process's, and `sharding.to_host` gathers an array spread over both processes whole."""

import os

import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multiprocess_worker.py")


def test_two_processes_evaluate_as_one_and_gather_whole(on_processes):
  (one,) = on_processes(1, [WORKER])
  two = on_processes(2, [WORKER])
  assert one["local_rows"] == 8 and one["gathered_equal"]
  for result in two:
    assert result["processes"] == 2
    assert result["local_rows"] == 4  # half of the global batch lives in each process
    assert result["gathered_equal"]
    assert result["accuracy"] == pytest.approx(one["accuracy"], abs=1e-9)  # a multiple of 1/num_test, same count
    assert result["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert result["num_test"] == one["num_test"]
