"""Entrypoint: `python -m moiie.train --config configs/moiie/<exp>.py[:variant] [--config.k=v ...] --workdir DIR`."""

from core import entrypoint
from moiie import training

if __name__ == "__main__":
  entrypoint.run(training.train_and_evaluate, validate=training.validate_config)
