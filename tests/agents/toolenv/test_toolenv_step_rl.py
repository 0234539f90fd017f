"""Step-level RL on the tool environments (arXiv 2508.08791, Sec. 3.3) through `agents.train`: prompts from a
hand-written trajectory, group rewards equal `score_step`'s, the loss mask covers only the response tokens, GRPO
normalises per prompt, RL steps end to end with a tiny from-scratch policy, resume, and (slow) the export of the
RL policy that the evaluation runs."""

import dataclasses
import functools
import json
import shutil

import jax
import numpy as np
import pytest

from agents import algorithms
from agents import rollout as rollout_lib
from agents import train as train_lib
from agents.envs import LocalEnvClient, make_pool, pool_config
from agents import export
from agents.toolenv import evaluation
from agents.toolenv.env import ToolEnv, toolenv_config
from agents.toolenv.pipeline import gold_call
from agents.toolenv import step_rl, steps
from agents.toolenv.step_rl import StepLevelSampler
from agents.toolenv.steps import StepPrompt, first_prompt, score_step, step_prompts
from core import config as config_lib
from core.llm import lora, weights
from core.train.metrics import read_metrics
from flax import nnx


@functools.lru_cache(maxsize=1)
def smollm2_tokenizer():
  """SmolLM2's BPE tokenizer alone (no weights): exact text round trips for scripted responses."""
  from core.llm import weights
  from core.llm.tokenizer import Tokenizer
  return Tokenizer.from_gguf_reader(weights.open_gguf(weights.default_gguf_path()))


def _call(spec, index):
  return f"<tool_call>{json.dumps(gold_call(spec, spec.scenario.subquestions[index]))}</tool_call>"


def step_config(**overrides):
  config = config_lib.load_config("configs/agents/toolenv_grpo.py:quick_step", [
      "policy.warm_start_steps=0", "policy.vocab_tasks=8", "policy.hidden_size=32", "policy.intermediate_size=64",
      "policy.num_layers=1", "policy.num_heads=2", "policy.num_kv_heads=1", "rollout.max_new_tokens=4",
      "rollout.group_size=2", "rollout.max_context_tokens=512", "data.tasks_per_step=2", "data.eval_every=0",
      "schedule.turn_limits=(2,)", "env_config.levels=(0,)"])
  for key, value in overrides.items():
    config_lib.apply_overrides(config, [f"{key}={value}"])
  return config


def test_prompts_from_a_hand_written_trajectory():
  config = toolenv_config(levels=(0,), instructions_as_system=False)
  task_id = 2  # multi-hop: sub-question 1 takes sub-question 0's answer as input
  env = ToolEnv(config)
  env.reset(task_id)
  spec = env.spec
  final = spec.scenario.subquestions[spec.scenario.final[0]].answer
  responses = ['<tool_call>{"name": oops}</tool_call>', _call(spec, 0), _call(spec, 1), f"It is {final}."]
  states = step_prompts(task_id, responses, config)
  assert [s.step for s in states] == [0, 1, 2, 3]
  assert [s.solved for s in states] == [(), (), (0,), (0, 1)] and [s.calls for s in states] == [0, 0, 1, 2]
  assert [len(s.messages) for s in states] == [1, 3, 5, 7]  # no system message: the rollout's own prompt
  assert states[3].messages[-1]["content"].startswith("<tool_response>")
  assert first_prompt(task_id, config) == states[0]  # the initial state, without replaying any response
  assert [score_step(s, r, config) for s, r in zip(states, responses)] == pytest.approx([-0.3, 1.0, 1.0, 1.0])

  sampler = StepLevelSampler(step_config())
  episode = rollout_lib.Trajectory(task_id, [], [], [], 0, turns=[{"action": r} for r in responses])
  drawn = [sampler.prompts([episode], step)[0] for step in range(40)]
  assert drawn[:5] == [sampler.prompts([episode], step)[0] for step in range(5)]  # seeded by the step
  assert {s.step for s in drawn} == {0, 1, 2, 3} and all(s in states for s in drawn)

  tok = smollm2_tokenizer()
  observation = states[0].messages[0]["content"]
  assert rollout_lib._Chat(tok, "").prompt(observation) == tok.encode_chat(list(states[0].messages))


class ScriptedPolicy:
  """Generation stand-in: row r of a call answers `script(prompt_text, r)`, encoded with the real tokenizer and
  ended by <|im_end|> ('stop'), or cut at its budget ('length')."""

  def __init__(self, tokenizer, script):
    self.tok, self.script = tokenizer, script

  def __call__(self, prompts, budgets, rng):
    tokens, logprobs, reasons = [], [], []
    end = self.tok.encode("<|im_end|>")
    for r, (prompt, budget) in enumerate(zip(prompts, budgets)):
      ids = self.tok.encode(self.script(self.tok.decode(prompt), r)) + end
      reasons.append("stop" if len(ids) <= budget else "length")
      ids = ids[:budget]
      tokens.append(np.array(ids))
      logprobs.append(np.full(len(ids), -1.0, np.float32))
    return dataclasses.make_dataclass("Out", ["tokens", "logprobs", "finish_reasons"])(tokens, logprobs, reasons)


def test_a_sample_the_environment_cannot_read_scores_as_malformed(monkeypatch):
  config = toolenv_config(levels=(0,), instructions_as_system=False)
  state = first_prompt(0, config)
  result, kind = step_rl._score(state, "<tool_call>" + "[" * 5000 + "</tool_call>", config)
  assert result.reward == -0.3 and kind == "malformed" and "5000 levels deep" in result.observation

  def unreadable(*args):
    raise RecursionError("maximum recursion depth exceeded")

  monkeypatch.setattr(steps, "step_result", unreadable)  # whatever else escapes the environment
  result, kind = step_rl._score(state, "anything", config)
  assert result.reward == -0.3 and kind == "malformed" and not result.done
  assert "RecursionError" in result.observation and result.info["invalid"]


def test_group_rewards_loss_mask_and_grpo_per_prompt():
  config = step_config(**{"rollout.group_size": 4, "rollout.max_new_tokens": 40, "data.tasks_per_step": 2})
  env_config = config.env_config
  specs = {t: ToolEnv(env_config).oracle(t).spec for t in (0, 2)}
  questions = {t: s.scenario.question for t, s in specs.items()}

  def script(prompt, row):  # the group: a right call, an empty reply, a malformed call, a long wrong answer
    task = next(t for t, q in questions.items() if q in prompt)
    return [_call(specs[task], 0), "", "<tool_call>{oops</tool_call>", "I do not know. " * 20][row % 4]

  def make_policy(current, cfg):  # the trajectories (groups of one) reply empty: every state is unsolved
    return ScriptedPolicy(tok, script if cfg.group_size > 1 else lambda prompt, row: "")

  tok = smollm2_tokenizer()
  sampler = StepLevelSampler(config, make_policy=make_policy)
  current = type("Current", (), {"tokenizer": tok})()
  client = LocalEnvClient(make_pool("toolenv", env_config, pool_config()))
  with client:
    samples, stats, metrics = sampler(current, client, [0, 2], step=3, turn_limit=2, rng=jax.random.key(0))
  assert len(samples) == 2 * 4 and stats.generate_calls == 3  # two rollout turns + one group generation
  for i, sample in enumerate(samples):
    record = sample.turns[0]
    state = StepPrompt(sample.task_id, record["state_step"], (), tuple(record["state_solved"]), record["state_calls"])
    assert sample.score == score_step(state, record["response"], env_config)  # the per-response reward
    assert sample.task_id == samples[i - i % 4].task_id  # a prompt's group is consecutive
    n = sample.prompt_length
    mask = np.array(sample.loss_mask)
    assert not mask[:n].any() and mask[n:].sum() == len(sample.tokens) - n - (i % 4 == 3)
    assert tok.hf.decode(sample.tokens[:n], skip_special_tokens=False).endswith("<|im_start|>assistant\n")
    assert tok.decode([t for t, m in zip(sample.tokens, mask) if m]).replace("<|im_end|>", "").strip() == \
        record["response"]
  scores = np.array([s.score for s in samples]).reshape(2, 4)
  assert (scores[:, 1] == -0.5).all() and (scores[:, 2] == -0.3).all() and (scores[:, 0] > 0).all()
  assert samples[3].tokens[-1] == tok.encode("<|im_end|>")[0] and samples[3].loss_mask[-1] == 0  # cut reply
  assert metrics["groups_with_signal"] == 1.0 and metrics["malformed_rate"] == 0.25

  batch = rollout_lib.to_batch(samples, tok.pad_id)
  adv, _ = algorithms.advantages(config.algorithm, {k: jax.numpy.asarray(v) for k, v in batch.items()}, 4)
  per_row = np.asarray(adv).sum(1) / batch["loss_mask"].sum(1)
  z = (scores - scores.mean(1, keepdims=True)) / (scores.std(1, ddof=1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(per_row, z.ravel(), rtol=1e-4, atol=1e-5)  # GRPO within each prompt's group
  assert np.all(np.asarray(adv)[batch["loss_mask"] == 0] == 0)


def test_step_level_rl_end_to_end_and_resume(tmp_path, mark_metrics):
  """Two step-level GRPO steps of a tiny from-scratch policy with LoRA adapters; the run killed after its first
  checkpoint (a copy without checkpoint 2) and rerun continues with the same metrics and samples."""
  config = step_config(**{"train.num_steps": 2, "train.checkpoint_every": 1, "policy.lora_rank": 4})
  train_lib.train(config, str(tmp_path / "straight"))
  rows = read_metrics(str(tmp_path / "straight"), "train")
  assert [r["step"] for r in rows] == [1, 2]
  for key in ("episode_score_mean", "groups_with_signal", "tool_call_rate", "state_step_mean", "loss", "kl_ref"):
    assert np.isfinite(rows[0][key]), key
  lines = [json.loads(l) for l in open(tmp_path / "straight" / "trajectories.jsonl")]
  assert len(lines) == 2 * 2 * 2 and all(l["num_turns"] == 1 and l["num_model_tokens"] <= 4 for l in lines)

  shutil.copytree(tmp_path / "straight", tmp_path / "killed")
  shutil.rmtree(tmp_path / "killed" / "checkpoints" / "2")
  mark_metrics(tmp_path / "killed", step=1)  # only a real resume keeps step 1's mark
  train_lib.train(config, str(tmp_path / "killed"))
  resumed = read_metrics(str(tmp_path / "killed"), "train")
  assert [r["step"] for r in resumed] == [1, 2]
  assert [r.get("mark") for r in resumed] == [True, None]  # step 1 kept from the checkpoint, step 2 trained again
  for a, b in zip(rows, resumed):
    for key in ("score_mean", "episode_score_mean", "loss", "grad_norm", "kl_ref"):
      assert a[key] == b[key], (key, a, b)
  assert [json.loads(l) for l in open(tmp_path / "killed" / "trajectories.jsonl")] == lines


@pytest.mark.slow
def test_rl_policy_exports_and_the_evaluation_runs_it(tmp_path):
  """The RL policy (LoRA folded in) and the starting policy export as Hugging Face folders; the evaluation's
  `llm_step_rl` variant runs the exported one on held-out tasks."""
  config = step_config(**{"train.num_steps": 1, "train.checkpoint_every": 1, "policy.lora_rank": 4})
  train_lib.train(config, str(tmp_path))
  after = export.export_policy(config, str(tmp_path))
  config.export.step = 0
  before = export.export_policy(config, str(tmp_path))
  assert after.endswith("export") and before.endswith("export_step0")
  trained, initial = weights.load_model(after)[0], weights.load_model(before)[0]
  deltas = [float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(nnx.state(trained, nnx.Param)),
                                                      jax.tree.leaves(nnx.state(initial, nnx.Param)))]
  assert max(deltas) > 0 and not any(isinstance(m, lora.LoRALinear) for _, m in nnx.iter_modules(trained))
  evaluation_config = config_lib.load_config("configs/agents/toolenv.py:llm_step_rl", [
      f"llm.source={after}", "tasks_per_cell=1", "progress_bar=false", "llm.generation.max_new_tokens=4"])
  evaluation.validate_config(evaluation_config)
  results = evaluation.evaluate(evaluation_config, str(tmp_path / "eval"))
  assert results["source"] == after and results["rows"][-1]["episodes"] == 4
  assert all(e["task_id"] >= 500_000 for e in map(json.loads, open(tmp_path / "eval" / "episodes.jsonl")))


def test_step_level_needs_an_environment_that_offers_it():
  config = config_lib.load_config("configs/agents/gridworld_grpo.py:quick", ["data.step_level=true"])
  with pytest.raises(config_lib.ConfigError, match="no step-level sampler"):
    train_lib.validate_config(config)
  train_lib.validate_config(step_config())
  assert train_lib.step_level_sampler(config_lib.load_config("configs/agents/toolenv_grpo.py:quick", [])) is None
