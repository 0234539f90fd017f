"""Experiment configs: loading, command-line overrides and validation.

Every experiment is an `ml_collections.ConfigDict` returned by `get_config()` in `configs/<paper>/<exp>.py`
(optionally `get_config(arg)` selected with `--config path.py:arg`, as in big_vision). Overrides arrive as
`--config.a.b=value`. Everything here runs before any JAX compilation, so a mistyped key, a value of the wrong
type or an invalid value fails in milliseconds with a message naming the key, what is allowed, and the fix.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import ml_collections

from core import files


class ConfigError(ValueError):
  """A config key is unknown, has the wrong type, or holds an invalid value."""


def section(name: str, defaults: dict[str, Any], overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """A config section with every field present: `defaults` updated by `overrides` (unknown keys raise).

  Library modules expose their section as `<name>_config(**overrides)` built with this, so that
  `print(config)` shows every number an experiment uses and a misspelt override fails at once.
  """
  unknown = sorted(set(overrides) - set(defaults))
  if unknown:
    raise ConfigError(f"unknown {name} field(s) {', '.join(map(repr, unknown))}; valid: "
                      f"{', '.join(sorted(defaults))}.")
  return ml_collections.ConfigDict({**defaults, **overrides})


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Loads `path.py[:arg]`, applies `a.b=value` overrides, and returns the locked config.

  Locking means no code can add a key by typo later on: reading or writing an unknown key raises.
  """
  path, _, arg = spec.partition(":")
  in_repo = os.path.join(files.REPO_ROOT, path)
  if not os.path.isfile(path) and not os.path.isabs(path) and os.path.isfile(in_repo):
    path = in_repo  # `configs/<paper>/...` from any working directory (reports and notebooks name them so)
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist. Fix: pass --config configs/<paper>/<exp>.py "
                      f"(relative to the repository root, or an absolute path).")
  module_spec = importlib.util.spec_from_file_location(f"_config_{Path(path).stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path!r} defines no get_config(). Fix: add `def get_config(): ...` "
                      "returning an ml_collections.ConfigDict.")
  if arg and not inspect.signature(module.get_config).parameters:
    raise ConfigError(f"config file {path!r} has no variants (its get_config() takes no argument), got "
                      f"':{arg}'. Fix: pass --config {path} without ':{arg}'.")
  if arg:
    try:
      config = module.get_config(arg)
    except ConfigError:
      raise
    except ValueError as error:  # the config's own check of its variant string
      raise ConfigError(f"{path}:{arg}: {error}. Fix: pass one of the valid variants after ':'.") from error
  else:
    config = module.get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"get_config() in {path!r} returned {type(config).__name__}, expected "
                      "ml_collections.ConfigDict.")
  apply_overrides(config, overrides)
  config.lock()
  return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
  """Applies `key.path=value` strings, parsing each value as the type the config already holds."""
  for item in overrides:
    key, sep, text = item.partition("=")
    if not sep:
      raise ConfigError(f"override {item!r} has no '='. Fix: write --config.{key}=<value>.")
    set_value(config, key, text)


def _walk_to_parent(config: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str]:
  parts = key.split(".")
  node, walked = config, []
  for part in parts[:-1]:
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise _unknown_key(node, ".".join(walked + [part]), part)
    node = node[part]
    walked.append(part)
  if not isinstance(node, ml_collections.ConfigDict) or parts[-1] not in node:
    raise _unknown_key(node, key, parts[-1])
  return node, parts[-1]


def _unknown_key(node: Any, full_key: str, leaf: str) -> ConfigError:
  valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
  close = difflib.get_close_matches(leaf, valid, n=1)
  hint = f" Did you mean {close[0]!r}?" if close else ""
  return ConfigError(f"unknown config key {full_key!r}.{hint} Valid keys here: {', '.join(valid) or '(none)'}.")


def get_value(config: ml_collections.ConfigDict, key: str) -> Any:
  """Reads a dotted key, with the same unknown-key error as overrides."""
  parent, leaf = _walk_to_parent(config, key)
  return parent[leaf]


def set_value(config: ml_collections.ConfigDict, key: str, text: str) -> None:
  parent, leaf = _walk_to_parent(config, key)
  current = parent[leaf]
  parent[leaf] = _parse_like(current, text, key)


def _parse_like(current: Any, text: str, key: str) -> Any:
  """Parses `text` as the type of `current`; a None field accepts any Python literal or a bare string."""
  def fail(expected: str) -> ConfigError:
    return ConfigError(f"config.{key}: cannot read {text!r} as {expected} (the type this key holds). "
                       f"Fix: --config.{key}=<{expected}>.")

  if isinstance(current, ml_collections.ConfigDict):
    raise ConfigError(f"config.{key} is a section, not a value. Fix: set one of its keys: "
                      f"{', '.join(f'{key}.{k}' for k in sorted(current.keys()))}.")
  if isinstance(current, bool):
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
      return True
    if lowered in ("false", "0", "no"):
      return False
    raise fail("bool (true/false)")
  if isinstance(current, int):
    try:
      return int(text)
    except ValueError:
      raise fail("int") from None
  if isinstance(current, float):
    try:
      return float(text)
    except ValueError:
      raise fail("float") from None
  if isinstance(current, str):
    return text
  if isinstance(current, (tuple, list)):
    kind = _item_kind(current)
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      if kind is not str:
        raise fail(f"a tuple literal such as {_example(kind)}") from None
      # Bare words for a tuple of strings (the shell has eaten the quotes): `fc`, `fc,sfc` or `(q_proj,v_proj)`.
      value = tuple(w.strip() for w in text.strip().strip("()[]").split(",") if w.strip())
    if isinstance(value, (int, float, str)):
      value = (value,)
    if not isinstance(value, (tuple, list)):
      raise fail("a tuple literal such as (1, 2)")
    return type(current)(_items_like(current, value, fail))
  # None or another type: take a Python literal (lower-case JSON/YAML spellings too), else the bare string.
  words = {"true": True, "false": False, "none": None, "null": None}
  if text.strip().lower() in words:
    return words[text.strip().lower()]
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _items_like(current: tuple | list, value: tuple | list, fail: Callable[[str], ConfigError]) -> list:
  """The items of an overriding tuple, checked against the one type the default's items share (a float item
  takes an int; bool is not an int here). A default that is empty or mixes types takes any literal items."""
  kind = _item_kind(current)
  if kind is None:
    return list(value)
  items = []
  for item in value:
    if kind is float and type(item) is int:
      item = float(item)
    if type(item) is not kind:
      raise fail(f"a tuple of {kind.__name__}s such as {_example(kind)}")
    items.append(item)
  return items


def _item_kind(current: tuple | list) -> type | None:
  """The one plain type (bool, int, float, str) of a default tuple's items; None if empty or mixed."""
  kinds = {type(item) for item in current}
  kind = kinds.pop() if len(kinds) == 1 else None
  return kind if kind in (bool, int, float, str) else None


def _example(kind: type | None) -> str:
  return {bool: "(True, False)", int: "(1, 2)", float: "(0.5, 1.0)", str: "('a', 'b')"}.get(kind, "(1, 2)")


# ---- validation rules; each raises ConfigError naming the key, the value, what is valid, and the fix ----

def _invalid(key: str, value: Any, requirement: str, fix: str) -> ConfigError:
  return ConfigError(f"config.{key} = {value!r} is invalid: {requirement}. Fix: {fix}.")


def flat_keys(tree: Any, prefix: str = "") -> dict[str, Any]:
  """A nested dict (a config's `to_dict()`, or its JSON) as dotted keys -> leaf values (`{"train.num_steps": 5}`),
  so that a difference between two configs names the one override that changes it. An empty section is a leaf
  `{}`, so that it is not lost."""
  if isinstance(tree, dict):
    return {k: v for key, value in tree.items() for k, v in flat_keys(value, f"{prefix}{key}.").items()} or {
        prefix[:-1]: {}}
  return {prefix[:-1]: tree}


def check(config: ml_collections.ConfigDict, key: str, predicate: Callable[[Any], bool], requirement: str,
          fix: str | None = None) -> Any:
  """General rule: `predicate(value)` must hold. Returns the value."""
  value = get_value(config, key)
  if not predicate(value):
    raise _invalid(key, value, requirement, fix or f"pass --config.{key}=<value that {requirement}>")
  return value


def check_positive(config: ml_collections.ConfigDict, key: str, allow_zero: bool = False) -> Any:
  value = get_value(config, key)
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0))
  if not ok:
    bound = ">= 0" if allow_zero else "> 0"
    raise _invalid(key, value, f"must be a finite number {bound}", f"pass --config.{key}=<number {bound}>")
  return value


def check_choice(config: ml_collections.ConfigDict, key: str, choices: Iterable[Any]) -> Any:
  value = get_value(config, key)
  choices = list(choices)
  if value not in choices:
    raise _invalid(key, value, f"valid choices are {', '.join(map(repr, choices))}",
                   f"pass --config.{key}=<one of those>")
  return value


def check_seed(config: ml_collections.ConfigDict, key: str, below: int = 2**32,
               requirement: str = "must be an integer in [0, 2**32)") -> int:
  """A seed: an integer in [0, `below`) (numpy's generators and the data pipeline take [0, 2**32); a run that also
  draws with seed + k needs a lower bound, said in `requirement`). A bad one would fail only on first use."""
  return check(config, key, lambda s: isinstance(s, int) and not isinstance(s, bool) and 0 <= s < below,
               requirement, f"pass --config.{key}=<a non-negative integer, e.g. 0>")


def check_divisible(config: ml_collections.ConfigDict, key: str, divisor: int, what: str) -> Any:
  value = check_positive(config, key)
  if divisor <= 0:  # the divisor is often another key's value: that key is the one to fix
    raise ConfigError(f"{what} is {divisor}, so config.{key} cannot be checked against it: it must be positive. "
                      f"Fix: set {what} to a positive value.")
  if value % divisor:
    lower, upper = (value // divisor) * divisor, (value // divisor + 1) * divisor
    choices = ", ".join(str(v) for v in (lower, upper) if v > 0)
    raise _invalid(key, value, f"must be divisible by {what} ({divisor})",
                   f"pass --config.{key}=<a multiple of {divisor}, e.g. {choices}>")
  return value


def check_existing_path(config: ml_collections.ConfigDict, key: str, allow_empty: bool = True) -> Any:
  """A path-valued key must exist; empty/None means 'use the built-in default' when `allow_empty`."""
  value = get_value(config, key)
  if allow_empty and not value:
    return value
  if not value or not os.path.exists(os.path.expanduser(str(value))):
    raise _invalid(key, value, "the path does not exist",
                   f"pass --config.{key}=<an existing path>" + (" or leave it empty for the default"
                                                                if allow_empty else ""))
  return value


def apply_variant_tokens(config: ml_collections.ConfigDict, variant: str, quick: Callable[[Any], None],
                         choices: Iterable[str], choose: Callable[[Any, str], None], what: str):
  """Applies a comma-separated `:variant` of an experiment config: "full" or "" change nothing, "quick" calls
  `quick(config)` (shrink to CPU scale), and a token in `choices` calls `choose(config, token)` (pick a method or a
  variant). Anything else fails naming the valid tokens."""
  choices = tuple(choices)
  tokens = [t for t in (t.strip() for t in variant.split(",")) if t]
  # one size and one choice at most: with two, the last would win without a word (":quick,bsd,bp_snn" trained
  # BP-SNN under a command that names BSD)
  for group in (("full", "quick"), choices):
    given = [t for t in tokens if t in group]
    if len(given) > 1:
      raise ValueError(f"variant {variant!r} combines {' and '.join(map(repr, given))}, of which it takes one "
                       "(the last would win without a word)")
  for token in tokens:
    if token == "full":
      continue
    if token == "quick":
      quick(config)
    elif token in choices:
      choose(config, token)
    else:
      raise ValueError(f"unknown variant {token!r}; valid: 'full', 'quick', or {what} {choices}")
  return config
