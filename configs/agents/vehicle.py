"""VehicleWorld evaluation (arXiv 2509.06736): `python -m agents.vehicle.evaluate --config
configs/agents/vehicle.py:<variant> --workdir DIR`.

Variants: `oracle` (the scripted ceiling, all 1,000 tasks), `random` (the floor, all 1,000 tasks), `quick`
(oracle on 10 tasks per split), `llm` (the core.llm model, SmolLM2-135M-Instruct by default, on 1 task per split
with short episodes: CPU generation is slow), `http` (an OpenAI-compatible endpoint: set --config.http.url and
--config.http.model).
"""

import ml_collections

from agents.vehicle.env import vehicle_config
from agents.chat_model import http_policy_config
from core.llm.generate import generation_config


def get_config(variant: str = "oracle") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.policy = {"quick": "oracle"}.get(variant, variant)
  config.interfaces = ("fc", "sfc", "fc_sfc")
  config.splits = ("multimedia", "touch_control", "car_control", "lights")
  config.tasks_per_split = {"quick": 10, "llm": 1, "http": 25}.get(variant, 250)
  config.first_task = 0
  config.seed = 0  # of the random policy
  config.env = vehicle_config()
  if variant == "llm":  # CPU generation takes ~5-30 s a step for the 135M model: short episodes
    config.env.max_steps, config.env.max_steps_per_turn = 4, 2
  config.env_url = ""  # a running `python -m agents.serve --config configs/agents/serve.py:vehicle`, or in-process
  config.progress_bar = True
  config.llm = ml_collections.ConfigDict()
  config.llm.source = ""  # a .gguf file or Hugging Face folder; empty: the bundled SmolLM2-135M-Instruct
  config.llm.generation = generation_config(max_new_tokens=64 if variant == "llm" else 256, temperature=0.0,
                                            truncate_prompt=True)
  config.http = http_policy_config()
  return config
