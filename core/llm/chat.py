"""Chat CLI: `python -m core.llm.chat --prompt "..."` answers once; without --prompt it is interactive.

Settings come from configs/llm/chat.py (the default `--config`; `--config configs/llm/chat.py:fast`,
`--config.generation.temperature=0.7`). Like every entrypoint it goes through `core.entrypoint`, so an unknown key,
a bad value or a missing weights path is one line naming the fix, before any weights load.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import ml_collections

from core import config as config_lib
from core import entrypoint, files

DEFAULT_CONFIG = os.path.join(files.REPO_ROOT, "configs", "llm", "chat.py")


def validate_chat_config(config: ml_collections.ConfigDict) -> None:
  from core.llm import config as llm_config
  from core.llm import generate
  try:
    generate.GenerationConfig.from_dict(dict(config.generation))
  except (generate.GenerationError, ValueError) as e:  # sampling settings raise ValueError
    raise config_lib.ConfigError(f"config.generation: {e} Fix: pass a valid --config.generation.<key>.") from None
  numerics = {k: v for k, v in dict(config.model).items() if k in llm_config.NUMERICS}
  # LlamaConfig checks each numerics choice; its int4 group check needs the model's widths. Without a source the
  # bundled SmolLM2-135M-Instruct loads, whose widths are known here; another model's are checked when it loads,
  # so its stand-in has widths that any valid quant_group_size divides.
  try:
    if config.model.source:
      group = numerics.get("quant_group_size", llm_config.LlamaConfig.quant_group_size)
      valid = isinstance(group, int) and group > 0  # else LlamaConfig names the bad group itself
      llm_config.tiny(**(dict(hidden_size=8 * group, intermediate_size=8 * group) if valid else {}), **numerics)
    else:
      llm_config.smollm2_135m(**numerics)
  except ValueError as e:
    fix = "" if "Fix:" in str(e) else " Fix: pass one of those values."
    raise config_lib.ConfigError(f"config.model: {e}{fix}") from None
  config_lib.check_existing_path(config, "model.source")


def _split_prompt(argv: Sequence[str]) -> tuple[str | None, list[str]]:
  """Takes `--prompt TEXT` / `--prompt=TEXT` out of argv (the entrypoint parser knows only --config flags)."""
  prompt, rest, args = None, [], list(argv)
  while args:
    arg = args.pop(0)
    if arg == "--prompt":
      if not args:
        raise config_lib.ConfigError("--prompt needs a value: --prompt \"What is the capital of France?\".")
      prompt = args.pop(0)
    elif arg.startswith("--prompt="):
      prompt = arg[len("--prompt="):]
    else:
      rest.append(arg)
  if not any(a == "--config" or a.startswith("--config=") for a in rest):
    rest = ["--config", DEFAULT_CONFIG, *rest]
  return prompt, rest


def main(argv: Sequence[str] | None = None) -> None:
  try:
    prompt, args = _split_prompt(sys.argv[1:] if argv is None else argv)
  except config_lib.ConfigError as e:
    entrypoint.exit_with_config_error(e)

  def chat(config: ml_collections.ConfigDict, workdir: str | None) -> None:
    from core.llm import conversation
    session = conversation.from_config(config)
    if prompt is not None:
      print(session.reply(prompt))
    else:
      conversation.run_interactive(session)

  entrypoint.run(chat, validate=validate_chat_config, argv=args, require_workdir=False)


if __name__ == "__main__":
  main()
