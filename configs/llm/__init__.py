"""Configs of core/llm: chat CLI and the generation benchmark."""
