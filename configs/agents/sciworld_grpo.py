"""sciworld with grpo (AgentGym-RL). Variants: real (SmolLM2-135M-Instruct), quick (CPU-scale); see rl_common."""

from configs.agents.rl_common import rl_config


def get_config(variant: str = "real"):
  return rl_config("sciworld", "grpo", variant)
