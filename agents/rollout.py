"""Batched multi-turn rollout of an LLM agent against text environments (AgentGym-RL, arXiv 2509.08755: the
agent and the environments alternate; all live trajectories' next turns come from one batched generation, the
environments are stepped in parallel, up to a turn limit; the loss mask covers only the model's own tokens).

A trajectory is built as one token sequence in ChatML, turn by turn, never re-tokenised, so the tokens the loss
sees are exactly the tokens the model sampled:

    <|im_start|>user\\n{instructions + first observation}<|im_end|>\\n<|im_start|>assistant\\n   mask 0
    {response 1}<|im_end|>                                                                  mask 1 (sampled)
    \\n<|im_start|>user\\n{observation 1}<|im_end|>\\n<|im_start|>assistant\\n                   mask 0
    {response 2}<|im_end|> ...

`logprobs[t]` is log pi(tokens[t] | tokens[:t]) under the sampling model's own distribution for mask-1 tokens
(0 elsewhere), the same convention as `core.llm.scoring.token_logprobs`. A response that does not end on
`<|im_end|>` (cut by the token budget, or ended by another stop token such as `<|endoftext|>`) gets an
`<|im_end|>` appended with mask 0 (the model did not produce it). The action is the text after the last
"Action:" in the response, else the response's first non-empty line; the environment judges it (bad actions are
observations, not errors). A trajectory ends when its environment says done, at the turn limit (ScalingInter-RL
sets it per training step, agents/schedule.py), when its context is full, or on an environment error (recorded).
Rewards: the environment's rewards summed into one outcome score, which `to_batch` places on the last model token.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import time
from typing import Any, Callable, Protocol, Sequence

import jax
import ml_collections
import numpy as np

from agents.envs.client import EnvClient, EnvSession
from core.config import section


def rollout_config(**overrides: Any) -> ml_collections.ConfigDict:
  """Every number of a rollout: per-turn token budget, context size, sampling, group size, env threads, and how
  the action is read from a reply (`action_format`: "react" = `extract_action`, "whole" = the whole reply, for
  environments whose actions span lines, such as tool calls), and whether each trajectory's KV cache is kept
  between turns (`kv_cache_reuse`, see `llm_policy`)."""
  return section("rollout", dict(max_new_tokens=64, max_context_tokens=2048, temperature=1.0, top_k=0, top_p=1.0,
                                 group_size=1, env_workers=16, system_prompt="",
                                 action_format="react", kv_cache_reuse=True), overrides)


class GenerationResult(Protocol):
  tokens: list[np.ndarray]
  logprobs: list[np.ndarray]
  finish_reasons: list[str]


# A policy: token-id prompts, per-row new-token budgets and a PRNG key -> generated ids and their log-probs.
Policy = Callable[[list[list[int]], list[int], jax.Array], GenerationResult]


ROLLOUT_PROMPT_BUCKETS = (16, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
                          1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 6144, 8192)


def llm_policy(pretrained, config: ml_collections.ConfigDict) -> Policy:
  """The policy of a `core.llm.weights.Pretrained` (or anything with graphdef/state/config/tokenizer), sampling
  with the rollout config's settings through `core.llm.generate.generate` (one batched call per turn).

  With `rollout.kv_cache_reuse` the policy also offers `session(num_rows)`: a `core.llm.session`
  `GenerationSession` whose rows keep their KV cache between turns, so a turn prefills only the tokens added
  since the last one (the environment's observation), not the whole dialogue again.

  Weights laid out on a device mesh (the learner's `config.mesh`) take the trajectories' rows over the same
  mesh: each device generates for its share of the rows (data-parallel rollout).
  """
  from core.llm.generate import GenerationConfig, generate, weights_mesh
  from core.llm.session import GenerationSession

  # One decode length: every turn's budget is at most max_new_tokens, and a longer bucket would only add cache
  # slots that session rows leave empty. Prompt (chunk) widths in steps of 1/4 to 1/8 of a power of two: a few
  # more compiled programs, much less padding to prefill and attend over (1.5x faster batched gridworld rollouts
  # than power-of-two widths).
  gen = GenerationConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                         top_k=config.top_k, top_p=config.top_p, new_token_buckets=(config.max_new_tokens,),
                         prompt_buckets=ROLLOUT_PROMPT_BUCKETS)
  tokenizer = pretrained.tokenizer
  mesh = weights_mesh(pretrained.state)

  def policy(prompts, budgets, rng):
    return generate(pretrained.graphdef, pretrained.state, pretrained.config, prompts, gen,
                    stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id, max_new_tokens=budgets, rng=rng, mesh=mesh)

  def session(num_rows: int):
    if num_rows > gen.batch_buckets[-1]:  # more trajectories than one batch: plain generate runs them in chunks
      return None
    return GenerationSession(pretrained.graphdef, pretrained.state, pretrained.config, gen, num_rows,
                             stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id, mesh=mesh).generate

  if config.get("kv_cache_reuse", True):
    policy.session = session
  return policy


def extract_action(response: str) -> str:
  """The action in a model's reply: after the last "Action:" if there is one (AgentGym's ReAct format), else
  the first non-empty line."""
  text = response.rsplit("Action:", 1)[-1] if "Action:" in response else response
  for line in text.splitlines():
    if line.strip():
      return line.strip()
  return ""


@dataclasses.dataclass
class Trajectory:
  task_id: int
  tokens: list[int]
  loss_mask: list[int]
  logprobs: list[float]
  prompt_length: int
  turns: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  first_observation: str = ""
  score: float = 0.0
  success: bool = False
  progress: float = 0.0
  finish_reason: str = ""  # "done" | "turn_limit" | "context" | "error"
  error: str | None = None

  @property
  def finished(self) -> bool:
    return bool(self.finish_reason)

  def record(self) -> dict[str, Any]:
    """What a person reads in trajectories.jsonl: the dialogue, the outcome, and the token counts."""
    return {"task_id": self.task_id, "score": self.score, "success": self.success, "progress": self.progress,
            "finish_reason": self.finish_reason, "error": self.error, "num_turns": len(self.turns),
            "num_tokens": len(self.tokens), "num_model_tokens": int(sum(self.loss_mask)),
            "first_observation": self.first_observation, "turns": self.turns}


@dataclasses.dataclass
class RolloutStats:
  """Where a rollout's time went, and how much it produced."""
  generation_s: float = 0.0
  env_s: float = 0.0
  generate_calls: int = 0
  generated_tokens: int = 0
  turns: int = 0

  def as_dict(self) -> dict[str, float]:
    return dataclasses.asdict(self)


class _Chat:
  """The ChatML pieces a rollout appends, encoded once."""

  def __init__(self, tokenizer, system_prompt: str):
    self.tokenizer = tokenizer
    self.system_prompt = system_prompt
    self.end_of_turn = tokenizer.encode("<|im_end|>")
    if len(self.end_of_turn) != 1:
      raise ValueError("the tokenizer has no single <|im_end|> token: the rollout needs a ChatML tokenizer.")

  # `encode_chat` reads special-token strings in the environment's text as plain characters: an observation that
  # echoes the agent's words (or a remote server's reply) cannot open or close a ChatML turn.
  def prompt(self, observation: str) -> list[int]:
    messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
    return self.tokenizer.encode_chat(messages + [{"role": "user", "content": observation}])

  def observation(self, observation: str) -> list[int]:
    """The next user turn after the agent's reply, which ended with its generated `<|im_end|>`."""
    return self.tokenizer.encode_chat([{"role": "user", "content": observation}], continues=True)


def rollout(policy: Policy, tokenizer, client: EnvClient, task_ids: Sequence[int],
            config: ml_collections.ConfigDict, *, max_turns: int, rng: jax.Array) -> tuple[list[Trajectory],
                                                                                         RolloutStats]:
  """Runs `config.group_size` trajectories of each task (consecutively: task 0's group first) to the end.

  One `policy` call per turn holds every live trajectory; environment steps of a turn run in parallel threads
  (`config.env_workers`), which is what overlaps HTTP round trips to environment servers.
  """
  if max_turns < 1:
    raise ValueError(f"max_turns must be >= 1, got {max_turns}.")
  chat = _Chat(tokenizer, config.system_prompt)
  if config.action_format not in ("react", "whole"):
    raise ValueError(f"rollout.action_format must be 'react' or 'whole', got {config.action_format!r}.")
  if config.max_new_tokens < 1:
    raise ValueError(f"rollout.max_new_tokens must be >= 1, got {config.max_new_tokens}.")
  stats = RolloutStats()
  trajectories: list[Trajectory] = []
  sessions: list[EnvSession] = []
  for task_id in task_ids:
    for _ in range(config.group_size):
      sessions.append(EnvSession(client, int(task_id)))
  # Policies that can keep a KV cache per trajectory (llm_policy) get one session for the whole rollout.
  make_session = getattr(policy, "session", None)
  cached_policy = make_session(len(sessions)) if make_session is not None else None
  with concurrent.futures.ThreadPoolExecutor(config.env_workers, thread_name_prefix="rollout-env") as pool:
    try:  # from the first create on: whatever fails, every environment opened here is closed
      start = time.perf_counter()
      first = list(pool.map(lambda s: s.start(), sessions))
      stats.env_s += time.perf_counter() - start
      for session, result in zip(sessions, first):
        prompt = chat.prompt(result.observation)
        trajectory = Trajectory(session.task_id, list(prompt), [0] * len(prompt), [0.0] * len(prompt), len(prompt),
                                first_observation=result.observation)
        if result.done:  # the environment failed before the first turn
          trajectory.finish_reason, trajectory.error = "error", result.info.get("error", "ended at reset")
        elif len(prompt) + 2 > config.max_context_tokens:
          trajectory.finish_reason = "context"
        trajectories.append(trajectory)
      for _ in range(max_turns):
        live = [i for i, t in enumerate(trajectories) if not t.finished]
        if not live:
          break
        rng, key = jax.random.split(rng)
        # One slot stays free for an <|im_end|> that closes a cut reply: a trajectory never outgrows the context.
        budgets = [min(config.max_new_tokens, config.max_context_tokens - len(trajectories[i].tokens) - 1)
                   for i in live]
        start = time.perf_counter()
        prompts = [trajectories[i].tokens for i in live]
        out = (cached_policy(live, prompts, budgets, key) if cached_policy is not None
               else policy(prompts, budgets, key))
        stats.generation_s += time.perf_counter() - start
        stats.generate_calls += 1
        responses, actions = [], []
        for row, i in enumerate(live):
          trajectory, ids = trajectories[i], [int(t) for t in out.tokens[row]]
          stats.generated_tokens += len(ids)
          trajectory.tokens += ids
          trajectory.loss_mask += [1] * len(ids)
          trajectory.logprobs += [float(x) for x in out.logprobs[row]]
          if ids[-1:] != chat.end_of_turn:  # close the turn for the chat format; not a model token
            trajectory.tokens += chat.end_of_turn
            trajectory.loss_mask.append(0)
            trajectory.logprobs.append(0.0)
          responses.append(tokenizer.decode(ids).strip())
          actions.append(responses[-1] if config.action_format == "whole" else extract_action(responses[-1]))
        start = time.perf_counter()
        results = list(pool.map(lambda ia: sessions[ia[0]].step(ia[1]), zip(live, actions)))
        stats.env_s += time.perf_counter() - start
        stats.turns += len(live)
        for i, response, action, result in zip(live, responses, actions, results):
          trajectory = trajectories[i]
          trajectory.turns.append({"response": response, "action": action, "observation": result.observation,
                                   "reward": result.reward, "done": result.done, "info": result.info})
          trajectory.score += result.reward
          trajectory.success = trajectory.success or bool(result.info.get("success"))
          trajectory.progress = float(result.info.get("progress", trajectory.progress))
          if "error" in result.info:
            trajectory.finish_reason, trajectory.error = "error", str(result.info["error"])
          elif result.done:
            trajectory.finish_reason = "done"
          elif len(trajectory.turns) >= max_turns:
            trajectory.finish_reason = "turn_limit"
          else:
            ids = chat.observation(result.observation)
            if len(trajectory.tokens) + len(ids) + 2 > config.max_context_tokens:  # no room for a reply
              trajectory.finish_reason = "context"
              continue
            trajectory.tokens += ids
            trajectory.loss_mask += [0] * len(ids)
            trajectory.logprobs += [0.0] * len(ids)
      for trajectory in trajectories:
        if not trajectory.finished:
          trajectory.finish_reason = "turn_limit"
    finally:
      list(pool.map(lambda s: s.close(), sessions))
  return trajectories, stats


def to_batch(trajectories: Sequence[Trajectory], pad_id: int, length: int | None = None) -> dict[str, np.ndarray]:
  """Right-padded [B, T] arrays for the RL update: tokens, attention_mask, loss_mask, logprobs (old policy),
  rewards (the outcome score on each row's last model token), and scores [B]. `length` fixes T (>= the longest
  trajectory), so every update step compiles once. A trajectory that an environment error ended keeps its tokens
  but gets an empty loss mask: it does not learn, and the group baselines leave it out (`agents.algorithms`)."""
  longest = max(len(t.tokens) for t in trajectories)
  length = longest if length is None else length
  if length < longest:
    raise ValueError(f"length {length} is shorter than the longest trajectory ({longest} tokens).")
  batch = {"tokens": np.full((len(trajectories), length), pad_id, np.int32),
           "attention_mask": np.zeros((len(trajectories), length), np.int32),
           "loss_mask": np.zeros((len(trajectories), length), np.int32),
           "logprobs": np.zeros((len(trajectories), length), np.float32),
           "rewards": np.zeros((len(trajectories), length), np.float32),
           "scores": np.array([t.score for t in trajectories], np.float32)}
  for row, t in enumerate(trajectories):
    n = len(t.tokens)
    batch["tokens"][row, :n] = t.tokens
    batch["attention_mask"][row, :n] = 1
    if t.finish_reason != "error":
      batch["loss_mask"][row, :n] = t.loss_mask
    batch["logprobs"][row, :n] = t.logprobs
    model_positions = np.flatnonzero(batch["loss_mask"][row])
    if model_positions.size:
      batch["rewards"][row, model_positions[-1]] = t.score
  return batch


def write_trajectories(path: str | os.PathLike, trajectories: Sequence[Trajectory], **fields: Any) -> None:
  """Appends one JSON line per trajectory to `path` (e.g. workdir/trajectories.jsonl), with `fields` (training
  step, turn limit, ...) on every line."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "a", encoding="utf-8") as f:
    for t in trajectories:
      f.write(json.dumps({**fields, **t.record()}, ensure_ascii=False) + "\n")
