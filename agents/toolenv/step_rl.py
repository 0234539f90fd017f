"""Step-level RL samples for `agents.train` (arXiv 2508.08791, Sec. 3.3: intermediate states of the model's own
trajectories become training prompts; each prompt gets a group of single responses, each rewarded by the
per-response reward from that state; GRPO normalises within the group).

`python -m agents.train --config configs/agents/toolenv_grpo.py:real_step` sets `data.step_level = True`; the
trainer then asks the environment class for its sampler (`ToolEnv.step_level_sampler`) and each training step
calls it instead of the trajectory rollout:

  1. one trajectory per task of the step (`agents.rollout`, the current policy, sampling, the schedule's turn
     limit), through the same client as every rollout (in-process pool or HTTP server);
  2. `steps.step_prompts` replays each trajectory and returns its intermediate states (the conversation so far
     and which sub-questions are solved); one state per task is drawn (seeded by the step, so a resumed run draws
     the same), so a step always has `data.tasks_per_step` prompts and `algorithm.minibatches` divides its rows;
  3. `rollout.group_size` responses per prompt in one batched `core.llm` generation (`rollout.max_new_tokens`);
  4. each response is scored by `steps.step_result`: a fresh environment put into the prompt's state answers it
     (tool calls run as plain Python functions; no text is executed); a response the environment cannot read at
     all is scored as malformed tool-call text (-0.3) instead of stopping the step;
  5. the samples come back as `agents.rollout.Trajectory` rows, prompt-major (a prompt's group is consecutive):
     prompt tokens with loss mask 0, the sampled response tokens with mask 1 (an `<|im_end|>` closing a cut
     response is mask 0, as in rollouts), the per-response reward as the row's score. The trainer's update is
     unchanged: GRPO's (R - mean) / (std + eps) over each group is the paper's per-prompt normalisation.

Prompts are the ChatML encoding of the state's messages (`tokenizer.encode_chat`), what evaluation
(`core.llm.generate.chat`) feeds the model; with `toolenv.instructions_as_system = False` and an empty
`rollout.system_prompt` that is also how `agents.rollout` starts its trajectories (tested).
"""

from __future__ import annotations

import time
from typing import Sequence

import jax
import ml_collections
import numpy as np

from agents import rollout as rollout_lib
from agents.envs.base import StepResult
from agents.toolenv import reward, steps


class StepLevelSampler:
  """`sampler(current, client, task_ids, step=, turn_limit=, rng=) -> (samples, RolloutStats, metrics)`."""

  def __init__(self, config: ml_collections.ConfigDict, make_policy=rollout_lib.llm_policy):
    """`make_policy(pretrained, rollout_config)` -> the generation policy (`agents.rollout.Policy`) of both
    stages; tests pass a scripted one."""
    self.config = config
    self.make_policy = make_policy
    self.env_config = config.env_config
    if config.rollout.action_format != "whole":
      raise ValueError("step-level RL on toolenv needs rollout.action_format = 'whole' (a response is the action: "
                       "tool calls span lines). Fix: --config.rollout.action_format=whole")
    # Step 1 samples one trajectory per task: the rollout settings with a group of one.
    self.episode_rollout = ml_collections.ConfigDict(config.rollout.to_dict())
    self.episode_rollout.group_size = 1

  def prompts(self, episodes: Sequence[rollout_lib.Trajectory], step: int) -> list[steps.StepPrompt]:
    """One intermediate state per episode, drawn uniformly among its states (seeded by the step): the states
    before each of its responses, replayed from the responses in a fresh environment."""
    rng = np.random.default_rng([self.config.seed, step, 2])
    chosen = []
    for episode in episodes:
      states = steps.step_prompts(episode.task_id, [turn["action"] for turn in episode.turns], self.env_config)
      if not states:  # the episode failed before its first turn: its initial state is still a prompt
        states = [steps.first_prompt(episode.task_id, self.env_config)]
      chosen.append(states[int(rng.integers(len(states)))])
    return chosen

  def __call__(self, current, client, task_ids: Sequence[int], *, step: int, turn_limit: int, rng: jax.Array
               ) -> tuple[list[rollout_lib.Trajectory], rollout_lib.RolloutStats, dict[str, float]]:
    cfg = self.config.rollout
    tokenizer = current.tokenizer
    episode_key, group_key = jax.random.split(rng)
    episodes, stats = rollout_lib.rollout(self.make_policy(current, self.episode_rollout), tokenizer, client,
                                          task_ids, self.episode_rollout, max_turns=turn_limit, rng=episode_key)
    start = time.perf_counter()
    states = self.prompts(episodes, step)
    prompt_ids = [tokenizer.encode_chat(list(state.messages)) for state in states]
    too_long = [i for i, ids in enumerate(prompt_ids) if len(ids) + 2 > cfg.max_context_tokens]
    for i in too_long:  # the deepest states can outgrow the context: fall back to the task's first state
      states[i] = steps.first_prompt(states[i].task_id, self.env_config)
      prompt_ids[i] = tokenizer.encode_chat(list(states[i].messages))
      if len(prompt_ids[i]) + 2 > cfg.max_context_tokens:
        raise ValueError(f"task {states[i].task_id}'s first prompt has {len(prompt_ids[i])} tokens, more than "
                         f"rollout.max_context_tokens = {cfg.max_context_tokens} allows. Fix: raise it.")
    rows = [ids for ids in prompt_ids for _ in range(cfg.group_size)]
    budgets = [min(cfg.max_new_tokens, cfg.max_context_tokens - len(ids) - 1) for ids in rows]
    prep_s = time.perf_counter() - start
    start = time.perf_counter()
    out = self.make_policy(current, cfg)(rows, budgets, group_key)
    stats.generation_s += time.perf_counter() - start
    stats.generate_calls += 1
    start = time.perf_counter()
    end_of_turn = tokenizer.encode("<|im_end|>")
    samples, kinds = [], []
    for row, ids in enumerate(rows):
      state = states[row // cfg.group_size]
      new = [int(t) for t in out.tokens[row]]
      stats.generated_tokens += len(new)
      text = tokenizer.decode(new).strip()
      result, kind = _score(state, text, self.env_config)
      kinds.append(kind)
      tokens, mask, logprobs = list(ids) + new, [0] * len(ids) + [1] * len(new), \
          [0.0] * len(ids) + [float(x) for x in out.logprobs[row]]
      if new[-1:] != end_of_turn:  # close the turn for the chat format (a reply cut by the budget, or ended by
        # another stop token such as <|endoftext|>); not a model token
        tokens += end_of_turn
        mask.append(0)
        logprobs.append(0.0)
      samples.append(rollout_lib.Trajectory(
          state.task_id, tokens, mask, logprobs, len(ids),
          turns=[{"response": text, "action": text, "observation": result.observation, "reward": result.reward,
                  "done": result.done, "info": result.info, "state_step": state.step,
                  "state_solved": list(state.solved), "state_calls": state.calls,
                  "state_seen_calls": list(state.seen_calls)}],
          first_observation=state.messages[-1]["content"], score=float(result.reward),
          success=bool(result.info.get("success")), progress=float(result.info.get("progress", 0.0)),
          finish_reason="done" if result.done else "step"))
    stats.env_s += time.perf_counter() - start
    stats.turns += len(rows)
    scores = np.array([s.score for s in samples]).reshape(len(states), cfg.group_size)
    metrics = {
        "episode_score_mean": float(np.mean([e.score for e in episodes])),
        "episode_success_rate": float(np.mean([e.success for e in episodes])),
        "episode_turns_mean": float(np.mean([len(e.turns) for e in episodes])),
        "state_step_mean": float(np.mean([s.step for s in states])),
        "groups_with_signal": float(np.mean(scores.std(axis=1) > 0)),
        "tool_call_rate": kinds.count("tool_calls") / len(kinds),
        "malformed_rate": kinds.count("malformed") / len(kinds),
        "answer_rate": kinds.count("answer") / len(kinds),
        "step_prompt_s": prep_s}
    return samples, stats, metrics


def _score(state: steps.StepPrompt, text: str, env_config: ml_collections.ConfigDict) -> tuple[StepResult, str]:
  """The environment's answer to a sampled response and the response's kind. A response the environment cannot
  read at all (a RecursionError or ValueError escaping it) is scored as malformed tool-call text, -0.3, with an
  observation naming the problem (also in `info["error"]`), so no sampled text can stop a training step."""
  try:
    return steps.step_result(state, text, env_config), reward.parse_response(text).kind
  except (RecursionError, ValueError) as e:
    problem = f"{type(e).__name__}: {str(e)[:200]}"
    return StepResult(f"Invalid action: malformed tool call: the environment could not read this response "
                      f"({problem}).", reward.MALFORMED_REWARD, False,
                      {"invalid": True, "error": problem, "success": False, "progress": 0.0}), "malformed"
