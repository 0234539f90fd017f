"""Chat CLI: `python -m core.llm.chat --prompt "..."` answers once; without --prompt it is interactive.

Settings come from configs/llm/chat.py (`--config configs/llm/chat.py:fast`, `--config.generation.temperature=0.7`).
"""

from absl import app, flags
from ml_collections import config_flags

from core.llm import conversation

_CONFIG = config_flags.DEFINE_config_file("config", "configs/llm/chat.py", "chat config file")
_PROMPT = flags.DEFINE_string("prompt", None, "answer this one message and exit; omit for an interactive chat")


def main(argv):
  del argv
  chat = conversation.from_config(_CONFIG.value)
  if _PROMPT.value is not None:
    print(chat.reply(_PROMPT.value))
  else:
    conversation.run_interactive(chat)


if __name__ == "__main__":
  app.run(main)
