"""BSD's evaluation with several JAX processes (multi-host, here two processes on localhost) equals one process's:
each process hands the mesh only its own rows of a batch, so no test example counts twice, and reconstructions
spread over processes are gathered whole."""

import os

import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bsd_multiprocess_worker.py")


def test_two_processes_measure_what_one_does(on_processes):
  (one,) = on_processes(1, [WORKER])
  two = on_processes(2, [WORKER])
  assert [r["processes"] for r in two] == [2, 2] and [r["devices"] for r in two] == [2, 2]
  for result in two:  # every process ends with the same, whole-split figures
    # accuracy over 359 test digits (a multiple of 1/359): before the fix it came out twice too high
    assert result["classify"]["accuracy"] == pytest.approx(one["classify"]["accuracy"], abs=1e-6)
    assert result["generate"]["recon_mse"] == pytest.approx(one["generate"]["recon_mse"], rel=1e-5)
    assert result["generate"]["recons_shape"] == one["generate"]["recons_shape"] == [359, 8, 8, 1]
    assert result["generate"]["recons_sum"] == pytest.approx(one["generate"]["recons_sum"], rel=1e-5)
    for task in ("classify", "generate"):
      assert result[task]["spikes_sum"] == one[task]["spikes_sum"]
