"""Tool-use RL environment construction with a verifiable reward (arXiv 2508.08791): the five-stage pipeline
(`pipeline`, `runtime`), the reward and Solve metrics (`reward`), the environment (`env`) and step-level prompts
(`steps`). See agents/toolenv/README.md."""
