"""Generated tool-use environments (arXiv 2508.08791): `python -m agents.toolenv.evaluate --config
configs/agents/toolenv.py:<variant> --workdir DIR`.

Variants: `oracle` (the scripted ceiling), `naive` (knows the entities, reads tool names only), `random` (random
tool, schema-valid random arguments: a floor), `llm` (the core.llm model as the base policy, few tasks: CPU
generation is slow). Each evaluates `tasks_per_cell` tasks per (scenario type, complexity level) cell.
"""

import ml_collections

from agents.toolenv.env import toolenv_config
from core.llm.generate import generation_config


def get_config(variant: str = "oracle") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.policy = variant
  config.tasks_per_cell = {"llm": 1}.get(variant, 25)  # 4 types x 5 levels cells
  config.seed = 0  # of the random policy
  config.env = toolenv_config(max_steps=3 if variant == "llm" else 8)
  config.progress_bar = True
  config.llm = ml_collections.ConfigDict()
  config.llm.source = ""  # a .gguf file or Hugging Face folder; empty: the bundled SmolLM2-135M-Instruct
  config.llm.generation = generation_config(max_new_tokens=96, temperature=0.0, truncate_prompt=True)
  return config
