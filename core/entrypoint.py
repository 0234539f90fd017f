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

Every run with a workdir appends its command line and resolved config to `workdir/commands.jsonl` (what produced
the files there), and says on stderr which keys changed since the same verb last ran there: a training run that
resumes from a checkpoint continues under the new settings, so a changed learning rate should not pass unseen.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import sys
from typing import Any, Callable, NoReturn, Sequence

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
        if i + 1 >= len(args) or args[i + 1].startswith("--"):
          raise config_lib.ConfigError(f"{name} needs a value. {USAGE.format(prog=prog)}")
        value = args[i + 1]
        i += 1
      if name == "--config":
        spec = value
      else:
        workdir = value
    elif name.startswith("--config."):
      if not has_value:
        # (a value never starts with "--": `--config.seed --workdir X` forgot the seed, it is not the seed)
        if i + 1 >= len(args) or args[i + 1].startswith("--"):
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
    if workdir and os.path.exists(workdir) and not os.path.isdir(workdir):
      raise config_lib.ConfigError(f"--workdir {workdir} is a file, not a folder. Fix: pass a folder (new or one "
                                   "an earlier run of this command wrote).")
  except config_lib.ConfigError as e:
    exit_with_config_error(e)
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    changes = record_command(config, workdir, prog, sys.argv[1:] if argv is None else argv)
    if changes:
      shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
      print(f"note: {prog} last ran in {workdir} with another config ({shown}). A run that resumes from a "
            f"checkpoint there continues under the new settings; use a new --workdir to start afresh. Every run's "
            f"config is in {os.path.join(workdir, COMMANDS_FILE)}.", file=sys.stderr)
  try:
    return main(config, workdir)
  except config_lib.ConfigError as e:  # a check that needs the run's files (a server, checkpoints): as above
    exit_with_config_error(e)
  except Exception as e:
    # Errors about the user's inputs (a missing dataset, weights, a checkpoint of another model) carry their fix in
    # the message; a traceback through JAX and orbax would only bury it.
    if not getattr(e, "names_its_fix", False) or os.environ.get(TRACEBACK_ENV_VAR):
      raise
    print(f"error: {e}\n(the traceback: rerun with {TRACEBACK_ENV_VAR}=1)", file=sys.stderr)
    raise SystemExit(1) from None


def exit_with_config_error(error: config_lib.ConfigError) -> NoReturn:
  """A config error as every entrypoint reports it: one line on stderr, exit status 2, no traceback."""
  print(f"config error: {error}", file=sys.stderr)
  raise SystemExit(2) from None


COMMANDS_FILE = "commands.jsonl"
TRACEBACK_ENV_VAR = "ENTRYPOINT_TRACEBACK"


def record_command(config: ml_collections.ConfigDict, workdir: str, prog: str, argv: Sequence[str]) -> list[str]:
  """Appends this run (time, command line, resolved config) to `workdir/commands.jsonl` and returns the config
  keys that differ from the last run of `prog` there, as "key: old -> new" (empty on a first run). Only the
  first process of a multi-process run writes."""
  import jax  # here, not at import time: the entrypoint parses and validates configs without JAX

  if jax.process_index() != 0:
    return []
  values = json.loads(json.dumps(config.to_dict(), default=repr))  # tuples as lists, as they read back
  path = os.path.join(workdir, COMMANDS_FILE)
  previous = None
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut by a kill mid-write; the records before and after it still count
        if isinstance(record, dict) and record.get("prog") == prog:
          previous = record.get("config")
  record = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "prog": prog,
            "command": shlex.join(["python", "-m", prog, *argv]), "config": values}
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")
  if not isinstance(previous, dict):
    return []
  old, new = config_lib.flat_keys(previous), config_lib.flat_keys(values)

  def shown(flat: dict[str, Any], key: str) -> str:
    text = json.dumps(flat[key]) if key in flat else "(absent)"
    return text if len(text) <= 60 else text[:57] + "..."
  return [f"{key}: {shown(old, key)} -> {shown(new, key)}" for key in sorted(set(old) | set(new))
          if key not in old or key not in new or old[key] != new[key]]


def _module_name() -> str:
  main_module = sys.modules.get("__main__")
  spec = getattr(main_module, "__spec__", None)
  return spec.name if spec is not None else os.path.basename(sys.argv[0])
