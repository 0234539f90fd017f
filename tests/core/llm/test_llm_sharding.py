"""The decoder sharded over 8 fake CPU devices (data x fsdp mesh, core.sharding) computes what one device does:
logits of a left-padded batch, the SFT loss and its gradients, greedy generation with its log-probs, and
data-parallel generation (rows split over the devices, `mesh=`) that samples what one device samples."""

import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def results(fake_devices) -> dict:
  return fake_devices(8, [os.path.join(HERE, "llm_sharding_worker.py"), "8x1", "2x4"], timeout=600, pythonpath=(HERE,))


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
  # rows split over the 8 devices (`mesh=`): the same samples from the same key, plain and with a session
  assert r["rows_sampled_equal"] and r["session_equal"], r
  assert r["rows_logprob_diff"] <= 1e-4, r
  assert r["session_cache_shards"] == 8, r
  assert r["weights_mesh_found"] and r["odd_rows_replicated"], r
