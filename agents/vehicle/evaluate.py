"""Evaluates a policy on VehicleWorld under FC, SFC and FC+SFC (arXiv 2509.06736, Sec. 5):

    python -m agents.vehicle.evaluate --config configs/agents/vehicle.py:oracle --workdir runs/vehicle_oracle
"""

from agents.vehicle.evaluation import evaluate, markdown, validate_config
from core import entrypoint


def main(config, workdir):
  results = evaluate(config, workdir)
  print(markdown(results))
  return results


if __name__ == "__main__":
  entrypoint.run(main, validate=validate_config)
