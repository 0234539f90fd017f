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
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`]+)`")  # an inline code span, which may wrap onto the next line of its paragraph
MODULE = re.compile(r"python -m ([A-Za-z_][\w.]*\w)(.*)", re.S)


def _readmes() -> list[tuple[str, str]]:
  out = []
  for path in sorted(glob.glob(os.path.join(ROOT, "**", "README.md"), recursive=True)):
    rel = os.path.relpath(path, ROOT)
    if rel.split(os.sep)[0] not in ("runs", "build") and ".egg-info" not in rel:
      out.append((rel, open(path, encoding="utf-8").read()))
  return out


def _commands_in(text: str) -> list[tuple[str, str]]:
  """(module, arguments) of each `python -m` command: one per line of a fenced block (backslash continuations
  joined, `#` comments dropped), one per inline code span outside those blocks."""
  found = []
  pieces = []
  for block in FENCE.findall(text):
    pieces.extend(line.split(" #")[0] for line in block.replace("\\\n", " ").splitlines())
  pieces.extend(span.replace("\n", " ") for span in INLINE.findall(FENCE.sub("", text)))
  for piece in pieces:
    for part in piece.split("python -m ")[1:]:
      match = MODULE.match("python -m " + part)
      if match:
        found.append((match.group(1), match.group(2).split("&&")[0].split(";")[0]))
  return found


def _readme_commands() -> list[tuple[str, str, str]]:
  return [(path, module, args) for path, text in _readmes() for module, args in _commands_in(text)]


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
  # every `python -m` in the READMEs' code is extracted as its own command (else the tests below would skip it)
  in_code = sum(len(re.findall(r"python\s+-m\s+[A-Za-z_]", block)) for _, text in _readmes() for block in
                FENCE.findall(text) + INLINE.findall(FENCE.sub("", text)))
  assert len(COMMANDS) == in_code and len(CONFIGURED) > 50, (len(COMMANDS), in_code, len(CONFIGURED))
  assert _commands_in("```bash\npython -m pkg.a --config x.py  # one\npython -m pkg.b --config y.py \\\n  --config.k=1\n"
                      "```\nand `python -m\npkg.c --config z.py`") == [
      ("pkg.a", " --config x.py "), ("pkg.b", " --config y.py    --config.k=1"), ("pkg.c", " --config z.py")]


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
