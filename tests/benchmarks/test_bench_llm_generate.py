"""benchmarks.llm_generate: the transformers memory probe measures the peer alone; llama.cpp starts fresh.

No 135M model is loaded: the probe runs on a tiny random Llama saved to a temporary directory.
"""

import json
import os
import subprocess
import sys

import ml_collections
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_llamacpp_runner_starts_from_an_empty_cache_every_call():
  from benchmarks import llm_generate
  calls = []

  class FakeLlama:
    def reset(self):
      calls.append("reset")

    def generate(self, tokens, **kwargs):
      calls.append("generate")
      yield from range(100)

  run = llm_generate.llamacpp_runner(FakeLlama(), [[1, 2, 3]])
  assert run(1, 5) == [0, 1, 2, 3, 4]
  run(1, 3)
  assert calls == ["reset", "generate", "reset", "generate"]


def test_hf_peer_probe_imports_only_torch_and_transformers(tmp_path):
  pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from benchmarks import llm_generate
  config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
  transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "model")
  prompts = tmp_path / "prompts.json"
  prompts.write_text(json.dumps([[5, 6, 7], [8, 9]]))
  bench = ml_collections.ConfigDict(dict(source=str(tmp_path / "model"), batch_sizes=(1, 2), new_tokens=3,
                                         threads=1))
  argv = llm_generate.peer_probe_argv(bench, str(prompts))
  assert argv[1].endswith(os.path.join("benchmarks", "hf_generate_peer.py"))
  # the probe itself, plus a check that nothing of ours was imported by it
  check = ("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
           "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'flax', 'core', 'benchmarks'}))")
  result = subprocess.run([sys.executable, "-c", check, *argv[1:]], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert lines[-1] == "[]"
  record = json.loads(lines[-2])
  assert 0 < record["import_rss_mb"] <= record["peak_rss_mb"]


def test_peers_are_timed_again_after_every_variant(monkeypatch, capsys):
  """The flow of run_benchmark with stand-ins for the models: each variant's ratio uses the peer figure timed
  right after that variant (the stand-in peer gets slower after each measurement, so a stale figure would show)."""
  import types

  import numpy as np

  from benchmarks import llm_generate as lg
  events = []

  def fake_run(label):
    def run(batch, n):
      events.append(label)
      return types.SimpleNamespace(tokens=np.zeros((batch, n), np.int32))
    return run

  peer_speed = {"tok_s": 100.0}

  def fake_measure(run, config, prompts, batch_sizes=None):
    run(1, 2)
    label = events[-1]
    rate = peer_speed["tok_s"] if label == "peer" else 50.0
    if label == "peer":
      peer_speed["tok_s"] /= 2  # the machine's load changes between windows
    return {**{f"decode_b{b}": rate for b in (batch_sizes or config.batch_sizes)},
            **{f"prefill_b{b}": rate for b in (batch_sizes or config.batch_sizes)},
            "compile_s": 0.0, "compiles_during_timing": 0}

  fake_pre = types.SimpleNamespace(tokenizer=types.SimpleNamespace(encode_chat=lambda m: [1, 2, 3]))
  monkeypatch.setattr(lg, "load_variant", lambda config, name: fake_pre)
  monkeypatch.setattr(lg, "prompt_logits", lambda pre, prompts: np.zeros((3, 4)))
  monkeypatch.setattr(lg, "ours_runner", lambda pre, prompts, config: fake_run("ours"))
  monkeypatch.setattr(lg, "load_peer", lambda config: (object(), "fake transformers"))
  monkeypatch.setattr(lg, "peer_runner", lambda model, prompts, pad: fake_run("peer"))
  monkeypatch.setattr(lg, "load_llamacpp", lambda config: (None, None))
  monkeypatch.setattr(lg, "measure", fake_measure)
  config = ml_collections.ConfigDict(dict(
      questions=("q1", "q2"), batch_sizes=(1, 2), new_tokens=2, variants=("a", "b", "c"),
      numerics={"a": {}, "b": {}, "c": {}}, peer=True, llamacpp=False, memory=False))
  lg.run_benchmark(config)
  records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  decode = [r for r in records if r["metric"] == "decode_tokens_per_s_batch1"]
  assert [r["variant"] for r in decode] == ["a", "b", "c"]
  assert [r["peer_window"] for r in decode] == [0, 1, 2]
  assert [r["peer_value"] for r in decode] == [100.0, 50.0, 25.0]  # each variant's own window
  assert all(r["ratio"] == 50.0 / r["peer_value"] for r in decode)


def test_every_side_gets_the_configured_threads_and_lines_record_them(monkeypatch, capsys):
  """config.threads reaches XLA (the pool limit), the peers and the probe's command line; 0 = the default pool."""
  import types

  import numpy as np

  from benchmarks import harness
  from benchmarks import llm_generate as lg
  assert lg.bench_threads(ml_collections.ConfigDict(dict(threads=0))) == harness.xla_default_threads()
  assert lg.bench_threads(ml_collections.ConfigDict(dict(threads=3))) == 3
  bench = ml_collections.ConfigDict(dict(source="m.gguf", batch_sizes=(1,), new_tokens=2, threads=3))
  argv = lg.peer_probe_argv(bench, "p.json")
  assert argv[argv.index("--threads") + 1] == "3"

  limits, peer_threads = [], []
  monkeypatch.setattr(lg, "limit_xla_cpu_threads", lambda n: limits.append(n) or True)  # not this process's pool
  monkeypatch.setattr(lg, "xla_cpu_threads", lambda: 3)
  monkeypatch.setattr(lg.hf_generate_peer, "load", lambda path, threads: peer_threads.append(threads) or
                      (object(), "fake transformers"))
  fake_pre = types.SimpleNamespace(tokenizer=types.SimpleNamespace(encode_chat=lambda m: [1, 2, 3]))
  run = lambda batch, n: types.SimpleNamespace(tokens=np.zeros((batch, n), np.int32))  # noqa: E731
  monkeypatch.setattr(lg, "load_variant", lambda config, name: fake_pre)
  monkeypatch.setattr(lg, "prompt_logits", lambda pre, prompts: np.zeros((3, 4)))
  monkeypatch.setattr(lg, "ours_runner", lambda pre, prompts, config: run)
  monkeypatch.setattr(lg, "peer_runner", lambda model, prompts, pad: run)
  monkeypatch.setattr(lg, "measure", lambda run, config, prompts, batch_sizes=None: {
      "decode_b1": 1.0, "prefill_b1": 1.0, "compile_s": 0.0, "compiles_during_timing": 0})
  config = ml_collections.ConfigDict(dict(
      questions=("q1",), batch_sizes=(1,), new_tokens=2, variants=("a",), numerics={"a": {}}, peer=True,
      llamacpp=False, memory=False, threads=3, source="m.gguf"))
  lg.run_benchmark(config)
  assert limits == [3] and peer_threads == [3]
  records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert records and all(r["ours_threads"] == r["peer_threads"] == 3 and "threads_note" not in r
                         for r in records)
  # a pool that could not be sized is said so on the line
  monkeypatch.setattr(lg, "limit_xla_cpu_threads", lambda n: False)
  monkeypatch.setattr(lg, "xla_cpu_threads", lambda: 2)
  lg.run_benchmark(config)
  records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert all(r["ours_threads"] == 2 and r["peer_threads"] == 3 and "started before" in r["threads_note"]
             for r in records)


def test_our_probe_does_not_import_the_peer():
  # our memory probe runs inside benchmarks.llm_generate: torch/transformers there would count in our figure
  check = ("import sys, benchmarks.llm_generate; "
           "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'}))")
  result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().splitlines()[-1] == "[]"


def test_measure_turns_the_two_timings_into_decode_and_prefill_rates():
  """`measure` on a fake generator whose call costs a + b * n seconds (a = 30 ms prefill, b = 10 ms per new
  token): decode B (N - 1) / (t_N - t_1) = B / b tokens/s, prefill = the prompts' tokens / t_1."""
  import time

  from benchmarks import llm_generate
  calls = []

  def run(batch, n):
    calls.append((batch, n))
    time.sleep(0.03 + 0.01 * n)
    return n

  config = ml_collections.ConfigDict({"new_tokens": 9, "batch_sizes": (2,), "warmup": 0, "iters": 3})
  prompts = [[1] * 12, [2] * 12]
  out = llm_generate.measure(run, config, prompts)
  assert out["decode_b2"] == pytest.approx(2 / 0.01, rel=0.3)  # 200 tokens/s, with the sleeps' jitter
  assert out["prefill_b2"] == pytest.approx(24 / 0.04, rel=0.3)
  assert calls.count((2, 9)) == 1 + 3 and calls.count((2, 1)) == 1 + 3  # compile call + timed calls, each length
