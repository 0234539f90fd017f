"""toolenv with grpo (AgentGym-RL trainer, arXiv 2508.08791's environments).

Variants:
  real        SmolLM2-135M-Instruct, whole multi-turn trajectories (see rl_common).
  quick       a CPU-scale from-scratch policy, whole trajectories (see rl_common).
  real_step   `real` with the paper's step-level RL (`data.step_level`, agents/toolenv/step_rl.py): intermediate
              states of the policy's own trajectories become prompts, `rollout.group_size` single responses each,
              rewarded by the per-response reward from that state, GRPO-normalised per prompt.
  quick_step  `quick` with step-level RL.
  cpu_step    what this CPU can run in about 45 minutes (the "after RL" row of agents/toolenv/README.md):
              SmolLM2-135M-Instruct with LoRA adapters (rank 16), complexity level 0 only, 128 new tokens per
              response, 512-token context, turn limit 3, step-level GRPO over 4 prompts x 4 responses per step
              (8 minibatch updates of 2 rows, learning rate 5e-5), 15 steps. Stage 0 is a short supervised format
              warm start (10 steps of 2 whole scripted-oracle episodes of tasks outside the training and
              evaluation ranges, `policy.warm_start_*`). It is NOT in the paper: the untrained 135M model never writes a
              <tool_call> block, so RL alone would never see a tool reward.

`python -m agents.export` (the `export` section every `rl_config` has) writes the RL policy as a Hugging Face
folder, which `configs/agents/toolenv.py:llm_step_rl` evaluates.
"""

from configs.agents.rl_common import rl_config


def get_config(variant: str = "real"):
  base = {"real": "real", "quick": "quick", "real_step": "real", "quick_step": "quick", "cpu_step": "real"}
  if variant not in base:
    raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(base)}.")
  config = rl_config("toolenv", "grpo", base[variant])
  if variant in ("real", "quick"):
    return config
  config.data.step_level = True
  # The same prompt at every stage: rollouts (empty rollout.system_prompt), step prompts, warm start, evaluation.
  config.env_config.instructions_as_system = False
  if variant == "cpu_step":
    config.env_config.levels = (0,)
    config.env_config.max_steps = 3
    # Batches of 2: a whole level-0 episode can pass 512 tokens, and 4 rows of 1024 exhaust this machine's memory.
    config.policy.update(lora_rank=16, lora_alpha=32.0, warm_start_steps=10, warm_start_tasks=20,
                         warm_start_max_turns=0, warm_start_batch_size=2, warm_start_learning_rate=1e-3)
    # 128 new tokens: the oracle's parallel calls take up to 109 (a 64-token budget cuts them into malformed
    # calls). A 512-token context keeps the update at 512-token rows: a reply's budget shrinks to what fits, and
    # deeper states that do not fit fall back to their task's first state (step_rl.py).
    config.rollout.update(max_new_tokens=128, max_context_tokens=512, temperature=1.0, group_size=4)
    config.schedule.update(turn_limits=(3,), steps_per_stage=1000)
    config.data.update(tasks_per_step=4, eval_every=0)
    # 2 rows per update: the actor step holds ~3.3 GB per 512-token row on CPU (a 49k vocabulary's logits,
    # log-softmax, entropy and their gradients at every position; 8 rows of 1024 asked for 53 GB).
    config.algorithm.minibatches = 8
    config.optimizer.update(learning_rate=5e-5)
    # Checkpoints hold the frozen base weights too (386 MB each): every 5 steps, the last 3 kept (steps 5, 10, 15).
    config.train.update(num_steps=15, checkpoint_every=5, keep_checkpoints=3, progress_bar=False,
                        tensorboard=False)
  return config
