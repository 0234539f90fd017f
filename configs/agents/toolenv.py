"""Generated tool-use environments (arXiv 2508.08791): `python -m agents.toolenv.evaluate --config
configs/agents/toolenv.py:<variant> --workdir DIR`.

Variants: `oracle` (the scripted ceiling), `naive` (knows the entities, reads tool names only), `random` (random
tool, schema-valid random arguments: a floor), `llm` (the core.llm model as the base policy, few tasks: CPU
generation is slow), `http` (any OpenAI-compatible endpoint: --config.http.url=http://host:port/v1
--config.http.model=NAME). Each evaluates `tasks_per_cell` tasks per (scenario type, complexity level) cell.

The "after RL" comparison (configs/agents/toolenv_grpo.py:cpu_step, agents/toolenv/README.md) evaluates on the
same held-out tasks (ids from 500,000, the RL config's `data.eval_task_offset`; RL trains on ids below 10,000),
level 0, with the prompt the RL run used (no second copy of the instructions as a system message):
  `llm_step`     the base SmolLM2-135M-Instruct;
  `llm_step_rl`  a policy exported by `python -m agents.export` (`llm.source`, default the RL run's
                 export folder; the stage-0 warm start alone: --config.llm.source=runs/toolenv_step_rl/export_step0).
"""

import ml_collections

from agents.chat_model import http_policy_config
from agents.toolenv.env import toolenv_config
from core.llm.generate import generation_config

VARIANTS = ("oracle", "naive", "random", "llm", "http", "llm_step", "llm_step_rl")


def get_config(variant: str = "oracle") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}.")
  step = variant.startswith("llm_step")
  config = ml_collections.ConfigDict()
  config.policy = "llm" if step else variant
  config.tasks_per_cell = 16 if step else {"llm": 1, "http": 5}.get(variant, 25)  # per (type, level) cell
  config.task_offset = 500_000 if step else 0  # first task id (a multiple of 4 x len(env.levels))
  config.seed = 0  # of the random policy
  config.env = toolenv_config(max_steps=3 if variant == "llm" or step else 8)  # CPU generation is slow
  if step:
    config.env.update(levels=(0,), instructions_as_system=False)
  config.progress_bar = True
  config.llm = ml_collections.ConfigDict()
  # a .gguf file or Hugging Face folder; empty: the bundled SmolLM2-135M-Instruct
  config.llm.source = "runs/toolenv_step_rl/export" if variant == "llm_step_rl" else ""
  config.llm.generation = generation_config(max_new_tokens=128 if step else 96, temperature=0.0,
                                            truncate_prompt=True)
  config.http = http_policy_config()
  return config
