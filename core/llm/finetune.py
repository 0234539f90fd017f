"""Entrypoint: `python -m core.llm.finetune --config configs/llm/sft.py[:quick] --workdir DIR` (SFT, full or LoRA)."""

from core import entrypoint
from core.llm import sft

if __name__ == "__main__":
  entrypoint.run(sft.run, validate=sft.validate_sft_config)
