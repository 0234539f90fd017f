"""Each benchmark's main at toy size: the JSON lines it prints have the harness's schema. Never a timing.

Checked per line: the fields every line carries, `higher_is_better` a bool, `ratio == ours / peer_value` (None
without a peer figure), the machine record. Benchmarks that need the SmolLM2-135M weights (llm_generate, llm_sft,
agents_rollout --policy real) are not run here.
"""

import json
import math

import pytest

FIELDS = {"benchmark", "metric", "unit", "ours", "peer", "peer_value", "ratio", "higher_is_better", "machine"}
MACHINE = {"cpu", "cores", "backend", "devices", "jax", "loadavg_1_5_15", "timestamp", "git_commit", "git_dirty",
           "mem_total_mb", "cpu_avx512f", "cpu_amx_tile", "xla_flags", "threads"}


def _lines(capsys, benchmark: str) -> list[dict]:
  out = capsys.readouterr().out
  records = [json.loads(line) for line in out.splitlines() if line.strip()]
  assert records, f"{benchmark} printed no JSON line"
  for record in records:
    assert FIELDS <= set(record), record
    assert record["benchmark"] == benchmark
    assert isinstance(record["higher_is_better"], bool)
    assert MACHINE <= set(record["machine"])
    assert isinstance(record["ours"], (int, float)) and math.isfinite(record["ours"])
    if record["peer_value"] in (None, 0):
      assert record["ratio"] is None
    else:
      assert record["ratio"] == pytest.approx(record["ours"] / record["peer_value"])
  return records


def _check_bsd_speed(records: list[dict], peers: tuple[str, ...]) -> None:
  speed = [r for r in records if r["metric"] == "train_samples_per_s"]
  assert all(r["higher_is_better"] for r in speed)
  peer_lines = [r for r in speed if r.get("peer_form") and r["ours_name"] == "bsd BP-SNN"]
  # the idiomatic and the same-rewrite form of each peer, each with its own line and ratio
  assert sorted((r["peer"].split()[0], r["peer_form"]) for r in peer_lines) == [
      ("snnTorch", "idiomatic"), ("snnTorch", "same rewrite"), ("spyx", "idiomatic"), ("spyx", "same rewrite")]
  for r in peer_lines:
    if r["peer"].split()[0].lower() in peers:
      assert r["peer_value"] > 0 and "not installed" not in r["peer"] and "skipped" not in r
    else:
      assert r["peer_value"] is None and r["skipped"] == "not requested (--peers)"
    rewrite = r["peer_form"] == "same rewrite"
    assert (r["peer_forward_madds_per_sample"] == r["forward_madds_per_sample"]) == rewrite
  memory = {r["metric"]: r for r in records if r["unit"] in ("bytes", "bytes/sample")}
  assert set(memory) == {"step_temp_bytes_per_sample", "step_temp_bytes_intercept", "step_argument_bytes"}
  assert not any(r["higher_is_better"] for r in memory.values())
  assert memory["step_temp_bytes_per_sample"]["memory_batches"] == [2, 4]


TOY_BSD = ["--batch", "2", "--hidden", "8", "--time-steps", "2", "--iters", "1", "--rounds", "1"]


def test_bsd_speed_main_without_peers(capsys):
  from benchmarks import bsd_speed
  bsd_speed.main([*TOY_BSD, "--peers"])  # the peers' own runners: test_bsd_speed.py and the slow test below
  _check_bsd_speed(_lines(capsys, "bsd_speed"), peers=())


@pytest.mark.slow
def test_bsd_speed_main_with_peers(capsys):
  pytest.importorskip("spyx")
  pytest.importorskip("snntorch")
  from benchmarks import bsd_speed
  bsd_speed.main(TOY_BSD)
  _check_bsd_speed(_lines(capsys, "bsd_speed"), peers=("spyx", "snntorch"))


def test_moiie_layer_main(capsys):
  from benchmarks import moiie_layer
  moiie_layer.main(["--tokens", "32", "--dim", "8", "--ffn", "16", "--experts", "4", "--paths",
                    "sparse,grad_buffers,balanced_floor", "--block-sizes", "", "--hybrid-factors", "",
                    "--ragged-dot-max-experts", "0", "--iters", "1"])
  records = _lines(capsys, "moiie_layer")
  assert {r["path"] for r in records} == {"sparse_auto_" + records[0]["path"].split("sparse_auto_")[-1],
                                          "grad_buffers", "balanced_floor"}
  assert all("compiles_during_timing" in r for r in records)


def test_moiie_layer_skips_the_balanced_floor_where_it_cannot_run(capsys):
  from benchmarks import moiie_layer
  moiie_layer.main(["--tokens", "30", "--dim", "8", "--ffn", "16", "--experts", "8", "--paths", "sparse,balanced_floor",
                    "--block-sizes", "", "--hybrid-factors", "", "--ragged-dot-max-experts", "0", "--iters", "1"])
  err = capsys.readouterr().err
  assert "balanced_floor skipped at E = 8: T x k = 60 rows do not split evenly" in err
  moiie_layer.main(["--tokens", "32", "--dim", "8", "--ffn", "16", "--experts", "4", "--paths", "balanced_floor",
                    "--layout", "moiie", "--iters", "1"])
  captured = capsys.readouterr()  # (the moiie layout has groups the floor ignores)
  assert captured.out.strip() == "" and "balanced_floor skipped at E = 4: it has no modalities" in captured.err


def test_matmul_peak_main(capsys):
  from benchmarks import matmul_peak
  matmul_peak.main(["--sizes", "16", "--iters", "1"])
  records = _lines(capsys, "matmul_peak")
  # fp32 next to numpy as pinned, numpy unpinned (subprocess), torch; bf16 next to torch (numpy has none)
  assert [r["metric"].split()[0] for r in records] == ["fp32", "fp32", "fp32", "bf16"]
  assert all(r["peer"] for r in records)
  assert "in this process" in records[0]["peer"] and "in a subprocess" in records[1]["peer"]
  assert all(r["ours_threads"] >= 1 and "peer_threads" in r for r in records)
  assert all(r["peer_threads"] == r["ours_threads"] for r in records[1:])


def test_agents_env_load_main(capsys):
  pytest.importorskip("psutil")
  pytest.importorskip("httpx")
  from benchmarks import agents_env_load
  # 300 steps: enough CPU on both sides (~1 ms a request) that the 10 ms clock ticks cannot round it to 0
  agents_env_load.main(["--envs", "gridworld", "--clients", "2", "--steps", "300", "--time-limit", "10",
                        "--sequential-steps", "10"])
  records = _lines(capsys, "agents_env_load")
  assert len(records) == 2
  load = records[1]
  assert load["errors"] == 0 and load["live_envs_after"] == 0
  assert load["server_cpu_s"] > 0 and load["client_cpu_s"] > 0  # HTTP steps always cost both sides CPU
  # null, not 0.0, when the load ended before a fifth of --steps
  assert load["server_rss_warm_mb"] is None or load["server_rss_warm_mb"] > 0


def test_agents_env_load_reports_null_warm_rss_when_time_runs_out(capsys):
  from benchmarks import agents_env_load
  agents_env_load.main(["--envs", "gridworld", "--clients", "1", "--steps", "10000000", "--time-limit", "0.3",
                        "--sequential-steps", "5"])
  load = _lines(capsys, "agents_env_load")[1]
  assert load["server_rss_warm_mb"] is None


def _check_rollout_rates(rates: list[dict]) -> None:
  assert len(rates) == 2 and all(r["higher_is_better"] for r in rates)
  for r in rates:
    assert {"tokens_ours", "tokens_peer", "turns_ours", "turns_peer", "compiles_during_timing"} <= set(r)
    assert r["turns_ours"] == r["turns_peer"] == 2  # 2 episodes x 1 turn on each side
    assert len(r["seconds_ours_rounds"]) == len(r["seconds_peer_rounds"]) == r["rounds"]
    assert r["seconds_ours"] == sorted(r["seconds_ours_rounds"])[r["rounds"] // 2]  # the median round
    # one batched generation call for the 2 episodes' one turn, against one call per episode at batch 1
    assert r["generate_calls_ours"] == 1 and r["generate_calls_peer"] == 2
    for side in ("ours", "peer"):
      assert 0 < r[f"generation_s_{side}"] + r[f"env_s_{side}"] <= r[f"seconds_{side}"]


def test_agents_rollout_main(capsys, tmp_path):
  from benchmarks import agents_rollout
  agents_rollout.main(["--episodes", "2", "--turns", "1", "--max-new-tokens", "2", "--no-cache-rows",
                       "--skip-rl-step", "--workdir", str(tmp_path)])
  _check_rollout_rates(_lines(capsys, "agents_rollout"))


@pytest.mark.slow
def test_agents_rollout_main_with_rl_step(capsys, tmp_path):
  from benchmarks import agents_rollout
  agents_rollout.main(["--episodes", "2", "--turns", "1", "--max-new-tokens", "2", "--no-cache-rows",
                       "--workdir", str(tmp_path)])
  records = _lines(capsys, "agents_rollout")
  _check_rollout_rates(records[:-1])
  step = records[-1]
  assert step["metric"] == "rl_step_seconds" and step["higher_is_better"] is False and step["peer"] is None
  shares = ("generation_share", "env_share", "other_rollout_share", "logprob_share", "update_share")
  assert sum(step[k] for k in shares) == pytest.approx(1.0)
  # timed from the untimed step's start state: the same shapes, nothing compiled on the first try
  assert step["compiles_during_timing"] == 0 and step["timed_attempts"] == 1
