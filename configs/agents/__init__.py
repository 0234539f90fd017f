"""Configs of agents/ (AgentGym-RL): environment servers, and later the RL experiments."""
