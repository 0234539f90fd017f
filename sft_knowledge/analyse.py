"""Entrypoint: `python -m sft_knowledge.analyse --config configs/sft_knowledge/<exp>.py --workdir DIR` (stage
`analyse` of sft_knowledge/pipeline.py, with the stages before it; every stage reuses its cached output)."""

from core import entrypoint
from sft_knowledge import pipeline

if __name__ == "__main__":
  entrypoint.run(pipeline.analyse, validate=pipeline.validate_config)
