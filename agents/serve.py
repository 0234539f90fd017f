"""Serves one environment over HTTP (AgentGym's env-server API):

    python -m agents.serve --config configs/agents/serve.py:gridworld [--config.server.port=8765]
"""

from agents.envs.server import serve, validate_serve_config
from core import entrypoint

if __name__ == "__main__":
  entrypoint.run(lambda config, workdir: serve(config), validate=validate_serve_config, require_workdir=False)
