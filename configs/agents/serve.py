"""An environment server: `python -m agents.serve --config configs/agents/serve.py:gridworld`.

The variant names the environment (gridworld, textcraft, search, sciworld). Every number the server and the environments
use is here; the shared token is not (it comes from $AGENTS_ENV_TOKEN or `server.token_file`).
"""

import ml_collections

from agents.envs import env_config, pool_config
from agents.envs.server import server_config


def get_config(env: str = "gridworld") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.env = env
  config.env_config = env_config(env)
  config.pool = pool_config()
  config.server = server_config()
  return config
