"""Evaluates a policy on VehicleWorld under FC, SFC and FC+SFC (arXiv 2509.06736, Sec. 5):

    python -m agents.vehicle.evaluate --config configs/agents/vehicle.py:oracle --workdir runs/vehicle_oracle
"""

import sys

from agents.vehicle.evaluation import evaluate, markdown, validate_config
from core import config as config_lib
from core import entrypoint


def main(config, workdir):
  try:
    results = evaluate(config, workdir)
  except config_lib.ConfigError as e:  # the env_url server's check: reported as the entrypoint reports config errors
    print(f"config error: {e}", file=sys.stderr)
    raise SystemExit(2) from None
  print(markdown(results))
  return results


if __name__ == "__main__":
  entrypoint.run(main, validate=validate_config)
