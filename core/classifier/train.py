"""Entrypoint: `python -m core.classifier.train --config configs/core/fashion_mlp.py --workdir DIR`."""

from core import entrypoint
from core.classifier import training

if __name__ == "__main__":
  entrypoint.run(training.train_and_evaluate, validate=training.validate_config)
