"""The policy an agent RL run trains: a `core/llm` model and its tokenizer.

Two kinds (config `policy.kind`):
  pretrained  real weights through `core.llm.weights` (default SmolLM2-135M-Instruct; a .gguf path or a Hugging
              Face directory), trained in full or with LoRA adapters (`lora_rank > 0`). This is the paper's setting
              (AgentGym-RL trains Qwen2.5-3B/7B-Instruct without SFT).
  scratch     a small random-init Llama with a word-level tokenizer over the environment's own vocabulary (the
              words of its instructions, observations and oracle actions on `vocab_tasks` tasks). A CPU-scale
              stand-in used by the tests and the quick report: a few hundred tokens instead of ~50k BPE pieces.

Optional stage 0 (`policy.warm_start_steps > 0`, off by default as in the paper): supervised steps on scripted-
oracle episodes of tasks outside the RL task range, the stand-in for the prior knowledge a pretrained LLM brings
(a from-scratch policy never finds a reward otherwise). `warm_start_max_turns` > 0 keeps only each episode's first
turns (a policy that knows short plans but not long ones).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from agents.envs import make_env
from core import config as config_lib
from core import sharding as sharding_lib
from core.config import section
from core.llm import config as llm_config
from core.llm import lora, sft, weights
from core.llm.model import Llama
from core.llm.tokenizer import Tokenizer
from core.train import loop, optim
from core.train.state import create_train_state, make_train_step, model_from_state

KINDS = ("pretrained", "scratch")


def policy_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The `policy` section: which model, its numerics or sizes, LoRA, and the optional warm start."""
  return section("policy", dict(
      kind="pretrained", source="", param_dtype="float32",
      hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4, num_kv_heads=2, max_seq_len=2048,
      tie_embeddings=True, vocab_tasks=200, lora_rank=0, lora_alpha=16.0,
      warm_start_steps=0, warm_start_tasks=256, warm_start_task_offset=1_000_000, warm_start_max_turns=0,
      warm_start_batch_size=16, warm_start_learning_rate=1e-3), overrides)


def validate_policy_config(config: ml_collections.ConfigDict) -> None:
  config_lib.check_choice(config, "policy.kind", KINDS)
  config_lib.check_choice(config, "policy.param_dtype", ("float32", "bfloat16"))
  for key in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "max_seq_len",
              "vocab_tasks", "warm_start_batch_size", "warm_start_learning_rate", "lora_alpha"):
    config_lib.check_positive(config, f"policy.{key}")
  for key in ("lora_rank", "warm_start_steps", "warm_start_tasks", "warm_start_max_turns"):
    config_lib.check_positive(config, f"policy.{key}", allow_zero=True)
  config_lib.check(config, "policy.num_heads", lambda h: h % config.policy.num_kv_heads == 0,
                   "must be a multiple of policy.num_kv_heads (grouped-query attention)")
  if config.policy.kind == "pretrained":
    config_lib.check_existing_path(config, "policy.source", allow_empty=True)
    return
  # A from-scratch policy loads no weights: a source given with it would be ignored without a word.
  config_lib.check(config, "policy.source", lambda s: not s,
                   "is ignored by a from-scratch policy (policy.kind = 'scratch' builds a random-init model)",
                   "set --config.policy.kind=pretrained to load these weights, or leave policy.source empty")
  # Checked here, not by LlamaConfig, whose message asks for a head_dim that the policy config does not have: the
  # from-scratch model's head width is hidden_size / num_heads, and rotary embeddings need it even.
  heads = config.policy.num_heads
  config_lib.check(config, "policy.hidden_size", lambda d: d % heads == 0 and (d // heads) % 2 == 0,
                   f"must be a multiple of 2 x policy.num_heads = {2 * heads}: each of the {heads} heads takes "
                   "hidden_size / num_heads dimensions, an even number for rotary embeddings",
                   f"pass --config.policy.hidden_size=<a multiple of {2 * heads}, e.g. "
                   f"{max(2 * heads, config.policy.hidden_size // (2 * heads) * 2 * heads)}> or change "
                   "--config.policy.num_heads")


@dataclasses.dataclass
class Policy:
  model: Llama
  tokenizer: Tokenizer
  trainable: Any  # the NNX filter of what RL updates: nnx.Param, or nnx.LoRAParam for adapters only

  @property
  def config(self) -> llm_config.LlamaConfig:
    return self.model.config


def oracle_episode(env, task_id: int, max_turns: int = 0) -> list[dict[str, str]]:
  """The chat messages of the environment's scripted oracle solving `task_id` (user = observation, assistant =
  action), cut after `max_turns` turns when > 0."""
  result = env.reset(task_id)
  oracle = env.oracle(task_id)
  messages = [{"role": "user", "content": result.observation}]
  turns = 0
  while not result.done and (max_turns <= 0 or turns < max_turns):
    action = oracle.act(result.observation)
    result = env.step(action)
    messages.append({"role": "assistant", "content": action})
    turns += 1
    if not result.done and (max_turns <= 0 or turns < max_turns):
      messages.append({"role": "user", "content": result.observation})
  return messages


def environment_vocabulary(env_name: str, env_cfg: ml_collections.ConfigDict, num_tasks: int,
                           task_offset: int = 0) -> list[str]:
  """Texts covering the environment's words: oracle episodes of `num_tasks` tasks plus its instructions."""
  env = make_env(env_name, env_cfg)
  texts = []
  for task_id in range(task_offset, task_offset + num_tasks):
    texts.extend(m["content"] for m in oracle_episode(env, task_id))
  return texts


def build_policy(config: ml_collections.ConfigDict) -> Policy:
  """The initial policy of `config` (before any warm start)."""
  p = config.policy
  if p.kind == "pretrained":
    pre = weights.load_pretrained(p.source or None, param_dtype=p.param_dtype)
    # The window comes with the weights, so this is checked here rather than in train's validation (the scratch
    # policy's max_seq_len is checked there): a rollout budget past it would fail mid-rollout.
    if config.rollout.max_context_tokens > pre.config.max_seq_len:
      raise config_lib.ConfigError(
          f"config.rollout.max_context_tokens = {config.rollout.max_context_tokens} is longer than the pretrained "
          f"policy's context window, {pre.config.max_seq_len} tokens (max_position_embeddings of {pre.source}): "
          f"generation past it fails mid-rollout. Fix: --config.rollout.max_context_tokens="
          f"{pre.config.max_seq_len} or less")
    model = nnx.merge(pre.graphdef, jax.tree.map(jnp.copy, pre.state))
    tokenizer = pre.tokenizer
  else:
    tokenizer = Tokenizer.word_level(environment_vocabulary(config.env, config.env_config, p.vocab_tasks))
    model_config = llm_config.tiny(
        vocab_size=tokenizer.vocab_size, hidden_size=p.hidden_size, intermediate_size=p.intermediate_size,
        num_layers=p.num_layers, num_heads=p.num_heads, num_kv_heads=p.num_kv_heads, max_seq_len=p.max_seq_len,
        param_dtype=p.param_dtype, tie_embeddings=p.tie_embeddings)
    model = Llama(model_config, nnx.Rngs(config.seed))
  trainable = nnx.Param
  if p.lora_rank > 0:
    lora.add_lora(model, rank=p.lora_rank, alpha=p.lora_alpha, targets=lora.TARGETS, seed=config.seed)
    trainable = nnx.LoRAParam
  return Policy(model, tokenizer, trainable)


def check_actions_fit_the_reply_budget(records: list[list[dict[str, str]]], tokenizer: Tokenizer,
                                       max_new_tokens: int) -> None:
  """Fails when an oracle action of the warm-start episodes, with its end-of-turn token, is longer than the
  rollout's reply budget: the rollout would cut exactly the actions the warm start teaches (a cut craft command or
  search query is always invalid), capping success below what the policy learned."""
  lengths = [len(tokenizer.encode(m["content"])) + 1 for messages in records for m in messages
             if m["role"] == "assistant"]
  too_long = sum(n > max_new_tokens for n in lengths)
  if too_long:
    raise config_lib.ConfigError(
        f"{too_long} of the {len(lengths)} oracle actions in the warm-start episodes need more than "
        f"rollout.max_new_tokens = {max_new_tokens} tokens (the longest: {max(lengths)}, with the end-of-turn "
        f"token), so the rollout would cut actions the warm start teaches. Fix: "
        f"--config.rollout.max_new_tokens={max(lengths)} (or more).")


def warm_start_batch_size(config: ml_collections.ConfigDict) -> int:
  """Episodes per warm-start batch: `policy.warm_start_batch_size`, at most the `warm_start_tasks` episodes."""
  return min(config.policy.warm_start_batch_size, config.policy.warm_start_tasks)


def warm_start_episodes(config: ml_collections.ConfigDict) -> list[list[dict[str, str]]]:
  """The warm start's oracle episodes as chat messages, in the rollout's format (its system prompt first, if any)."""
  p = config.policy
  env = make_env(config.env, config.env_config)
  records = [oracle_episode(env, p.warm_start_task_offset + i, p.warm_start_max_turns)
             for i in range(p.warm_start_tasks)]
  if config.rollout.system_prompt:
    records = [[{"role": "system", "content": config.rollout.system_prompt}, *messages] for messages in records]
  return records


def warm_start(policy: Policy, config: ml_collections.ConfigDict) -> dict[str, float]:
  """Stage 0: `warm_start_steps` supervised steps on oracle episodes (assistant tokens only). Updates
  `policy.model` in place; returns the first and last batch losses."""
  p = config.policy
  records = warm_start_episodes(config)
  check_actions_fit_the_reply_budget(records, policy.tokenizer, config.rollout.max_new_tokens)
  examples = [sft.tokenize_chat(policy.tokenizer, messages) for messages in records]
  buckets = sft.padded_lengths(max(len(ids) for ids, _ in examples), config.data.buckets_per_doubling)
  # shard_count=1: the warm-start step below is not sharded over processes, so each process takes whole batches.
  batches = sft.BucketedBatches(examples, buckets, warm_start_batch_size(config),
                                pad_id=policy.tokenizer.pad_id, seed=config.seed, shard_index=0, shard_count=1)
  tx = optim.make_optimizer(optim.optimizer_config(learning_rate=p.warm_start_learning_rate), p.warm_start_steps)
  graphdef, state = create_train_state(policy.model, tx, policy.trainable)
  # On the RL update's mesh: batch rows split over every device, the state laid out as the update's.
  mesh = sharding_lib.mesh_from_config(config.mesh)
  state_sharding = sharding_lib.state_sharding(mesh, state, config.mesh.fsdp_min_size)
  step = loop.jit_on_mesh(make_train_step(graphdef, sft.assistant_nll, tx, policy.trainable), mesh, state_sharding)
  state = jax.device_put(state, state_sharding)
  key = jax.random.key(config.seed)
  losses = []
  for i in range(p.warm_start_steps):
    state, metrics = step(state, sharding_lib.shard_batch(next(batches), mesh), jax.random.fold_in(key, i))
    losses.append(float(metrics["loss"]))
  policy.model = model_from_state(graphdef, state)
  return {"warm_start_first_loss": losses[0], "warm_start_last_loss": losses[-1],
          "warm_start_episodes": len(records)}
