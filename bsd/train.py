"""Entrypoint: `python -m bsd.train --config configs/bsd/<exp>.py[:variant] [--config.k=v ...] --workdir DIR`."""

from bsd import training
from core import entrypoint

if __name__ == "__main__":
  entrypoint.run(training.train_and_evaluate, validate=training.validate_config)
