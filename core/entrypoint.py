"""The one entrypoint shape: `python -m <package>.<verb> --config path.py[:arg] [--config.k=v ...] --workdir DIR`.

An entrypoint module is a few lines:

    from core import entrypoint
    from mypaper import training

    if __name__ == "__main__":
      entrypoint.run(training.train_and_evaluate, validate=training.validate_config)

`run` parses the command line (override syntax as in `ml_collections.config_flags`: the value is read as the
type the key already holds), loads and locks the config, runs `validate(config)` so that bad keys, types and
values fail before any compilation, and then calls `main(config, workdir)`. Config errors print one line
naming the key, what is valid, and the fix, and exit with status 2 (no traceback: nothing went wrong in code).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

import ml_collections

from core import config as config_lib

USAGE = ("usage: python -m {prog} --config configs/<paper>/<exp>.py[:arg] [--config.key=value ...] "
         "--workdir DIR")


def parse_args(argv: Sequence[str], prog: str = "<package>.<verb>") -> tuple[str, list[str], str | None]:
  """Splits argv into (config spec, overrides 'k=v', workdir); any other flag is an error."""
  spec, workdir, overrides = None, None, []
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    name, has_value, value = arg.partition("=")
    if name in ("--config", "--workdir"):
      if not has_value:
        if i + 1 >= len(args):
          raise config_lib.ConfigError(f"{name} needs a value. {USAGE.format(prog=prog)}")
        value = args[i + 1]
        i += 1
      if name == "--config":
        spec = value
      else:
        workdir = value
    elif name.startswith("--config."):
      if not has_value:
        if i + 1 >= len(args):
          raise config_lib.ConfigError(f"{name} needs a value: write {name}=<value>.")
        value = args[i + 1]
        i += 1
      overrides.append(f"{name[len('--config.'):]}={value}")
    elif name in ("-h", "--help"):
      print(USAGE.format(prog=prog))
      raise SystemExit(0)
    else:
      raise config_lib.ConfigError(f"unknown argument {arg!r}. {USAGE.format(prog=prog)}")
    i += 1
  if spec is None:
    raise config_lib.ConfigError(f"--config is required. {USAGE.format(prog=prog)}")
  return spec, overrides, workdir


def load(argv: Sequence[str], validate: Callable[[ml_collections.ConfigDict], None] | None = None,
         prog: str = "<package>.<verb>") -> tuple[ml_collections.ConfigDict, str | None]:
  """Parses, loads and validates; raises ConfigError. Tests and notebooks call this directly."""
  spec, overrides, workdir = parse_args(argv, prog)
  config = config_lib.load_config(spec, overrides)
  if validate is not None:
    validate(config)
  return config, workdir


def run(main: Callable[[ml_collections.ConfigDict, str], Any],
        validate: Callable[[ml_collections.ConfigDict], None] | None = None,
        argv: Sequence[str] | None = None, require_workdir: bool = True) -> Any:
  prog = os.environ.get("ENTRYPOINT_PROG") or _module_name()
  try:
    config, workdir = load(sys.argv[1:] if argv is None else argv, validate, prog)
    if require_workdir and not workdir:
      raise config_lib.ConfigError(f"--workdir is required (checkpoints, metrics and plots go there). "
                                   f"{USAGE.format(prog=prog)}")
  except config_lib.ConfigError as e:
    print(f"config error: {e}", file=sys.stderr)
    raise SystemExit(2) from None
  if workdir:
    os.makedirs(workdir, exist_ok=True)
  return main(config, workdir)


def _module_name() -> str:
  main_module = sys.modules.get("__main__")
  spec = getattr(main_module, "__spec__", None)
  return spec.name if spec is not None else os.path.basename(sys.argv[0])
