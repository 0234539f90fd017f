"""AgentGym-RL (arXiv 2509.08755) and its ScalingInter-RL horizon curriculum: text environments served
in-process or over HTTP (`agents.envs`), batched multi-turn rollout (`agents.rollout`), and the turn-limit
schedule (`agents.schedule`). See agents/README.md."""
