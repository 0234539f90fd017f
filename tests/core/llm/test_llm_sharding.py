"""The decoder sharded over 8 fake CPU devices (data x fsdp mesh, core.sharding) computes what one device does:
logits of a left-padded batch, the SFT loss and its gradients, and greedy generation with its log-probs."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))


@pytest.fixture(scope="module")
def results() -> dict:
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")]))
  result = subprocess.run([sys.executable, os.path.join(HERE, "llm_sharding_worker.py"), "8x1", "2x4"],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("data,fsdp", [(8, 1), (2, 4)])
def test_sharded_decoder_matches_one_device(results, data, fsdp):
  r = results[f"{data}x{fsdp}"]
  assert r["devices"] == 8
  assert r["logits_sharded"] == 8  # the batch really is split over all devices
  if fsdp > 1:
    assert r["split_params"] >= 14  # every kernel of both blocks and the embedding/head are split
  else:
    assert r["split_params"] == 0
  assert r["logit_diff"] <= 1e-5 * r["logit_scale"], r
  assert r["loss_diff"] <= 1e-5, r
  assert r["grad_diff"] <= 1e-4 * r["grad_scale"], r
  assert r["tokens_equal"], r
  assert r["logprob_diff"] <= 1e-4, r
