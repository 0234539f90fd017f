"""Entrypoint: `python -m sft_knowledge.mastery --config configs/sft_knowledge/<exp>.py --workdir DIR` (stage
`mastery` of sft_knowledge/pipeline.py, with the stages before it; every stage reuses its cached output)."""

from core import entrypoint
from sft_knowledge import pipeline

if __name__ == "__main__":
  entrypoint.run(pipeline.mastery, validate=pipeline.validate_config)
