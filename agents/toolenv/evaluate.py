"""Evaluates a policy on generated tool environments, by scenario type and complexity level (arXiv 2508.08791,
Sec. 4):

    python -m agents.toolenv.evaluate --config configs/agents/toolenv.py:oracle --workdir runs/toolenv_oracle
"""

from agents.toolenv.evaluation import evaluate, markdown, validate_config
from core import entrypoint


def main(config, workdir):
  results = evaluate(config, workdir)
  print(markdown(results))
  return results


if __name__ == "__main__":
  entrypoint.run(main, validate=validate_config)
