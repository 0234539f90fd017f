"""The commands the READMEs give still name modules that exist, and configs, variants and override keys that load.

A renamed config variant or key would otherwise leave a README command that fails at its first step. Placeholders
(`<variant>`, `$v`, `seed=S`) are skipped; everything else after `--config` is loaded with its overrides.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shlex

from core import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# `python -m module args...` up to the end of the inline code span, a blank line or a trailing shell comment;
# a command may wrap onto the next line of a paragraph
COMMAND = re.compile(r"python -m ([A-Za-z_][\w.]*\w)((?:[^`\n]|\n(?!\n))*?)(?=`|\n\n|$|  #)")


def _readme_commands() -> list[tuple[str, str, str]]:
  found = []
  for path in sorted(glob.glob(os.path.join(ROOT, "**", "README.md"), recursive=True)):
    rel = os.path.relpath(path, ROOT)
    if rel.split(os.sep)[0] in ("runs", "build") or ".egg-info" in rel:
      continue
    text = open(path, encoding="utf-8").read()
    for match in COMMAND.finditer(text):
      found.append((rel, match.group(1), match.group(2).replace("\\\n", " ").replace("\n", " ")))
  return found


def _is_placeholder(text: str) -> bool:
  return "<" in text or "$" in text or "..." in text or bool(re.fullmatch(r"[\w.]+=[A-Z]", text))


def _config_and_overrides(args: str) -> tuple[str | None, list[str]]:
  tokens = shlex.split(args, comments=True)
  spec, overrides = None, []
  for i, token in enumerate(tokens):
    if token == "--config" and i + 1 < len(tokens):
      spec = tokens[i + 1]
    elif token.startswith("--config="):
      spec = token.split("=", 1)[1]
    elif token.startswith("--config.") and "=" in token:
      overrides.append(token[len("--config."):])
  return spec, overrides


COMMANDS = _readme_commands()
# (README, module, config spec, overrides) of every command that names a config without placeholders
CONFIGURED = []
for _path, _module, _args in COMMANDS:
  _spec, _overrides = _config_and_overrides(_args) if "--config" in _args else (None, [])
  if _spec and not _is_placeholder(_spec) and not any(_is_placeholder(o) for o in _overrides):
    CONFIGURED.append((_path, _module, re.sub(r"\[.*?\]", "", _spec), _overrides))  # `:quick[,bp_snn]`: optional part out


def test_readme_commands_were_found():
  # the pattern still matches the READMEs' way of writing commands (else the tests below would check nothing)
  assert len(COMMANDS) > 100 and len({m for _, m, _ in COMMANDS}) > 20 and len(CONFIGURED) > 50, (
      len(COMMANDS), len(CONFIGURED))


def test_every_readme_module_exists():
  missing = sorted({(module, path) for path, module, _ in COMMANDS if importlib.util.find_spec(module) is None})
  assert not missing, missing


def test_every_readme_config_loads_with_its_overrides(monkeypatch):
  monkeypatch.chdir(ROOT)
  failures = []
  for path, module, spec, overrides in CONFIGURED:
    try:
      config_lib.load_config(spec, overrides)
    except Exception as e:  # noqa: BLE001 (collected, so one run lists every stale command)
      failures.append(f"{path}: python -m {module} --config {spec} {' '.join(overrides)}: {type(e).__name__}: {e}")
  assert not failures, "\n".join(failures)
