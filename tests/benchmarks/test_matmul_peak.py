"""benchmarks.matmul_peak's peers: numpy without this environment's OpenBLAS pins, and torch (optional)."""

import json

import pytest

from benchmarks import matmul_peak


def test_unpinned_numpy_peer_runs_without_the_openblas_pins(monkeypatch):
  # set here so the check means something on a machine whose environment pins nothing
  monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
  monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
  result = matmul_peak.numpy_unpinned(32, iters=1, threads=1)
  assert result["gflops"] > 0
  assert not set(matmul_peak.OPENBLAS_PINS) & set(result["openblas_env"])
  assert result["openblas_env"].get("OPENBLAS_NUM_THREADS") == "1"  # the same thread count as ours
  env = matmul_peak.unpinned_env()
  assert not set(matmul_peak.OPENBLAS_PINS) & set(env) and "PATH" in env


def test_torch_peers_say_unavailable_without_torch(monkeypatch, capsys):
  monkeypatch.setattr(matmul_peak, "_torch", lambda: None)
  matmul_peak.main(["--sizes", "16", "--iters", "1"])
  records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  torch_lines = [r for r in records if r["peer"].startswith("torch")]
  assert [r["metric"].split()[0] for r in torch_lines] == ["fp32", "bf16"]
  for r in torch_lines:
    assert "peer unavailable" in r["peer"] and r["peer_value"] is None and r["ratio"] is None


def test_torch_peer_measures_and_restores_torch_threads():
  torch = pytest.importorskip("torch")
  before = torch.get_num_threads()
  assert matmul_peak.torch_gflops(32, "bfloat16", iters=1, threads=1) > 0
  assert torch.get_num_threads() == before
