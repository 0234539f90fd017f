"""Configs of BSD (arXiv 2509.20284) and its baselines: one file per task; the method is a key or a variant."""
