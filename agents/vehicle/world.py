"""The executable VehicleWorld (arXiv 2509.06736, Sec. 3): a deterministic state machine over the catalog.

State is a flat dict `path -> value` (one entry per leaf property); `tree()` gives the JSON-able nested view
`{module: {property: value | {key: value}}}`. Two ways change it, sharing one write path and so one device logic:

* `call(api, arguments)`, the function-call (FC) way: arguments are checked against the API's parameters
  (types, ranges in the current unit, enum values, keys), then its writes run in order.
* `apply_patch(patch)`, the State-based Function Call (SFC, Sec. 4) way: the agent writes the target values of
  properties as JSON. The original executes model-written Python to do this; here a patch is data, validated
  against the schema (unknown paths, read-only properties, types, enum values and ranges are rejected with a
  message naming the problem), and each accepted value goes through the same write as an API's, so side
  effects and requirements hold. A patch is read as a target state: operations whose requirement is met by a
  later one are retried, the unit properties are applied first (values are read in the units the patch sets),
  side effects never overwrite a property the patch names, and a named property that a later side effect
  changed is written again at the end.

Every call or patch operation is a transaction: if any write in it fails, the state is restored exactly.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from typing import Any, Iterable, Iterator, Mapping, Sequence

from agents.vehicle import logic
from agents.vehicle.catalog import load_schema
from agents.vehicle.schema import (Api, Cond, Leaf, Param, Schema, bounds, check_static, coerce, describe_range,
                                   fmt_value)

MAX_DEPTH = 40  # nested side effects; the catalog's chains are a few deep, so this only catches a cycle
UNIT_PATHS = ("environment.temperature_unit", "environment.distance_unit")


class WorldError(ValueError):
  """A call or a patch operation that the car refuses; the message is shown to the agent."""


class UnknownPathError(WorldError):
  pass


class ReadOnlyError(WorldError):
  pass


class BadValueError(WorldError):
  pass


class RequirementError(WorldError):
  """A requirement of a property or an API is not met; `cond` says which (the task generator plans with it)."""

  def __init__(self, message: str, cond: Cond | None = None):
    super().__init__(message)
    self.cond = cond


class UnknownApiError(WorldError):
  pass


class ArgumentError(WorldError):
  pass


@dataclasses.dataclass(frozen=True)
class Change:
  path: str
  old: Any
  new: Any
  cause: str


@dataclasses.dataclass
class _Txn:
  explicit: frozenset[str] = frozenset()
  changes: list[Change] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)
  depth: int = 0


@dataclasses.dataclass
class CallResult:
  api: str
  changes: list[Change]
  notes: list[str]
  output: Any = None  # what a query API returns

  def message(self) -> str:
    if self.output is not None:
      return json.dumps(self.output, separators=(", ", ": "))
    return _changes_text(self.changes, self.notes)


@dataclasses.dataclass
class PatchResult:
  applied: list[str]
  errors: list[str]
  changes: list[Change]

  def message(self) -> str:
    text = _changes_text(self.changes, [])
    if self.errors:
      text += "\nRejected:\n" + "\n".join(f"- {e}" for e in self.errors)
    return text


def _changes_text(changes: Sequence[Change], notes: Sequence[str]) -> str:
  net = net_changes(changes)
  if not net:
    lines = ["OK, nothing changed (the state already matched)."]
  else:
    lines = ["OK. Changed:"] + [f"- {c.path}: {fmt_value(c.old)} -> {fmt_value(c.new)}"
                                + ("" if c.cause in ("call", "patch") else f" ({c.cause})") for c in net]
  return "\n".join(lines + [f"Note: {n}" for n in notes])


def net_changes(changes: Sequence[Change]) -> list[Change]:
  """One entry per path from its first old value to its last new value, dropping paths that came back."""
  first: dict[str, Change] = {}
  last: dict[str, Change] = {}
  for c in changes:
    first.setdefault(c.path, c)
    last[c.path] = c
  return [Change(p, first[p].old, last[p].new, first[p].cause) for p in first if first[p].old != last[p].new]


class VehicleWorld:
  """One car. Deterministic: the same calls from the same state give the same state."""

  def __init__(self, state: Mapping[str, Any] | None = None, schema: Schema | None = None):
    self.schema = schema or load_schema()
    self.state: dict[str, Any] = dict(state) if state is not None else self.schema.default_state()
    if state is None:
      logic.derive(self, _Txn())
    missing = set(self.schema.leaves) - set(self.state)
    if missing:
      raise ValueError(f"state lacks {len(missing)} properties, e.g. {sorted(missing)[:3]}.")

  def copy(self) -> "VehicleWorld":
    return VehicleWorld(self.state, self.schema)

  # -- views -------------------------------------------------------------------------------------------------
  @property
  def temperature_unit(self) -> str:
    return self.state["environment.temperature_unit"]

  def tree(self, modules: Iterable[str] | None = None) -> dict[str, Any]:
    """The JSON-able state `{module: {property: value | {key: value}}}` of `modules` (all by default)."""
    wanted = set(modules) if modules is not None else None
    out: dict[str, Any] = {}
    for name, module in self.schema.modules.items():
      if wanted is not None and name not in wanted:
        continue
      node = out.setdefault(name, {})
      for prop in module.props:
        if prop.zones is None:
          node[prop.name] = self.state[prop.path]
        else:
          node[prop.name] = {z: self.state[f"{prop.path}.{z}"] for z in prop.zones}
    return out

  def describe(self, modules: Iterable[str]) -> str:
    """The SFC view of `modules`: every property with its value, type, range or choices, read-only flag and
    description, one line each."""
    unit = self.temperature_unit
    lines = []
    for name in modules:
      module = self.schema.modules[name]
      lines.append(f"## {name}: {module.description}")
      for prop in module.props:
        value = (self.state[prop.path] if prop.zones is None
                 else {z: self.state[f"{prop.path}.{z}"] for z in prop.zones})
        tags = [prop.kind, describe_range(prop, unit)]
        if prop.zones is not None:
          tags.append("one value per key")
        if prop.readonly:
          tags.append("read-only")
        lines.append(f"{prop.name} = {json.dumps(value)}  [{'; '.join(tags)}] {prop.description}")
    return "\n".join(lines)

  def violations(self) -> list[str]:
    """Active properties whose requirement does not hold: empty in every state the device logic reaches."""
    out = []
    for path, leaf in self.schema.leaves.items():
      prop = leaf.prop
      if prop.requires and prop.is_active(self.state[path]):
        for cond in prop.requires:
          cpath = cond.path.replace("{zone}", leaf.zone or "")
          if not cond.holds(self.state[cpath]):
            out.append(self._requirement_text(path, self.state[path], cond, cpath))
    return out

  # -- the one write path ------------------------------------------------------------------------------------
  def set_raw(self, path: str, value: Any, txn: _Txn, cause: str) -> None:
    """Sets a leaf without device logic (derived readings, unit conversion); records the change."""
    old = self.state[path]
    if old != value:
      self.state[path] = value
      txn.changes.append(Change(path, old, value, cause))

  def check_value(self, leaf: Leaf, value: Any) -> Any:
    """`value` coerced to the leaf's kind and checked against its range in the current unit."""
    prop = leaf.prop
    try:
      v = coerce(prop.kind, value, prop.choices, prop.step)
    except ValueError as e:
      raise BadValueError(f"{leaf.path}: {e}; it takes {describe_range(prop, self.temperature_unit)}.") from None
    if prop.kind in ("int", "float"):
      low, high = bounds(prop, self.temperature_unit)
      if not low <= v <= high:
        raise BadValueError(f"{leaf.path}: {fmt_value(v)} is out of range; it takes "
                            f"{describe_range(prop, self.temperature_unit)}.")
    return v

  def write(self, path: str, value: Any, txn: _Txn, cause: str, implied: bool = False) -> None:
    """Writes one leaf with its device logic: implications, hooks, requirement check, cascades."""
    if implied and path in txn.explicit:
      return  # a patch names this property: the patch's value wins over side effects
    if txn.depth > MAX_DEPTH:
      raise WorldError(f"device logic did not settle while writing {path} (a dependency cycle in the catalog).")
    leaf = self.schema.leaves.get(path)
    if leaf is None:
      raise UnknownPathError(self.schema.unknown_path_message(path))
    if leaf.prop.readonly:
      raise ReadOnlyError(f"{path} is read-only: the car sets it ({leaf.prop.description}).")
    value = self.check_value(leaf, value)
    old = self.state[path]
    if old == value:
      return
    prop = leaf.prop
    self.set_raw(path, value, txn, cause)
    txn.depth += 1
    try:
      active = prop.is_active(value)
      if active:
        for template, implied_value in prop.implies:
          target = template.replace("{zone}", leaf.zone or "")
          try:
            self.write(target, implied_value, txn, f"because {path} = {fmt_value(value)}", implied=True)
          except RequirementError as e:
            raise RequirementError(f"{path} = {fmt_value(value)} also sets {target} = {fmt_value(implied_value)}, "
                                   f"but {e}", e.cond) from None
      for hook in logic.HOOKS.get(prop.path, ()):
        hook(self, txn, leaf, old, value)
      if active:
        for cond in prop.requires:
          cpath = cond.path.replace("{zone}", leaf.zone or "")
          if not cond.holds(self.state[cpath]):
            raise RequirementError(self._requirement_text(path, value, cond, cpath), Cond(cpath, cond.op, cond.value))
      self._cascade(leaf, txn)
    finally:
      txn.depth -= 1

  def _requirement_text(self, path: str, value: Any, cond: Cond, cpath: str) -> str:
    shown = Cond(cpath, cond.op, cond.value)
    return (f"{path} = {fmt_value(value)} needs {shown.text()} (it is {fmt_value(self.state[cpath])}); "
            f"change that first.")

  def _cascade(self, changed: Leaf, txn: _Txn) -> None:
    """Dependents of the changed leaf whose requirement no longer holds go to their off value."""
    for dep, cond in self.schema.dependents.get(changed.prop.path, ()):
      for dep_path in dep.leaf_paths():
        zone = dep_path[len(dep.path) + 1:]
        if cond.path.replace("{zone}", zone) != changed.path:
          continue
        if dep.is_active(self.state[dep_path]) and not cond.holds(self.state[changed.path]):
          self.write(dep_path, dep.off, txn, f"turned off: {changed.path} = {fmt_value(self.state[changed.path])}")

  # -- function calls (FC) -----------------------------------------------------------------------------------
  def api(self, name: Any) -> Api:
    if not isinstance(name, str) or name not in self.schema.apis:
      close = difflib.get_close_matches(str(name), list(self.schema.apis), n=3)
      hint = f" Did you mean {', '.join(close)}?" if close else ""
      raise UnknownApiError(f"unknown API {name!r}.{hint} List a module's APIs to see their names.")
    return self.schema.apis[name]

  def check_arguments(self, api: Api, arguments: Any) -> dict[str, Any]:
    if arguments is None:
      arguments = {}
    if not isinstance(arguments, dict):
      raise ArgumentError(f"{api.name}: arguments must be a JSON object of name: value, got "
                          f"{type(arguments).__name__}.")
    names = [p.name for p in api.params]
    problems = []
    unknown = sorted(set(arguments) - set(names))
    if unknown:
      problems.append(f"unknown argument(s) {', '.join(unknown)}")
    missing = [n for n in names if n not in arguments]
    if missing:
      problems.append(f"missing argument(s) {', '.join(missing)}")
    out = {}
    for p in api.params:
      if p.name in arguments:
        try:
          out[p.name] = self._check_param(p, arguments[p.name])
        except ValueError as e:
          problems.append(f"{p.name}: {e}")
    if problems:
      raise ArgumentError(f"{api.signature()}: {'; '.join(problems)}. "
                          f"{param_help(api, self.temperature_unit, self.schema)}")
    return out

  def _check_param(self, p: Param, value: Any) -> Any:
    if p.kind == "zone":
      return coerce("enum", value, p.choices + (("all",) if p.allow_all else ()))
    if p.ref is not None:
      prop = self.schema.props[p.ref]
      v = coerce(prop.kind, value, prop.choices, prop.step)
      error = check_static(prop, v, self.temperature_unit)
      if error:
        raise ValueError(error)
      return v
    v = coerce(p.kind, value, p.choices, p.step)
    if p.kind in ("int", "float") and not p.low <= v <= p.high:
      raise ValueError(f"{fmt_value(v)} is out of range {fmt_value(p.low)}..{fmt_value(p.high)}")
    return v

  def call(self, name: str, arguments: Any = None) -> CallResult:
    """Runs one API call; raises WorldError (state unchanged) if the car refuses it."""
    api = self.api(name)
    args = self.check_arguments(api, arguments)
    if api.query:
      return CallResult(api.name, [], [], output=self.tree([api.module])[api.module])
    snapshot = dict(self.state)
    txn = _Txn()
    try:
      for cond in api.when:
        if not cond.holds(self.state[cond.path]):
          raise RequirementError(f"{api.name} needs {cond.text()} (it is {fmt_value(self.state[cond.path])}).", cond)
      for path, value in self._planned_writes(api, args, txn):
        self.write(path, value, txn, "call")
      if api.compute is not None:
        for path, value in logic.COMPUTE[api.compute](self, args):
          self.write(path, value, txn, "call")
      logic.derive(self, txn)
    except WorldError:
      self.state = snapshot
      raise
    return CallResult(api.name, txn.changes, txn.notes)

  def _planned_writes(self, api: Api, args: dict[str, Any], txn: _Txn) -> Iterator[tuple[str, Any]]:
    # Values are evaluated lazily, so "@path" and relative values see the writes before them.
    for template, expr in api.writes:
      for path in self._expand_path(template, args):
        yield path, self._evaluate(expr, args, path, txn)

  def _expand_path(self, template: str, args: dict[str, Any]) -> list[str]:
    parts = template.split(".")
    if len(parts) == 3 and parts[2].startswith("{"):
      key = args[parts[2][1:-1]]
      if key == "all":
        return self.schema.props[f"{parts[0]}.{parts[1]}"].leaf_paths()
      return [f"{parts[0]}.{parts[1]}.{key}"]
    return [template]

  def _evaluate(self, expr: Any, args: dict[str, Any], path: str, txn: _Txn) -> Any:
    if isinstance(expr, str) and expr.startswith("{") and expr.endswith("}"):
      return args[expr[1:-1]]
    if isinstance(expr, str) and expr.startswith("-{") and expr.endswith("}"):
      return -args[expr[2:-1]]
    if isinstance(expr, str) and expr.startswith("@"):
      ref = expr[1:]
      for name, value in args.items():
        ref = ref.replace("{" + name + "}", str(value))
      return self.state[ref]
    if isinstance(expr, tuple):
      leaf = self.schema.leaves[path]
      prop, current = leaf.prop, self.state[path]
      if expr[0] == "toggle":
        return not current
      if expr[0] == "add":
        low, high = bounds(prop, self.temperature_unit)
        target = current + self._evaluate(expr[1], args, path, txn)
        clamped = min(max(target, low), high)
        if clamped != target:
          txn.notes.append(f"{path} stops at its {'maximum' if target > high else 'minimum'} "
                           f"{fmt_value(clamped)}.")
        return clamped
      if expr[0] == "next":
        step = expr[1]
        if prop.kind == "enum":
          i = prop.choices.index(current)
          return prop.choices[(i + step) % len(prop.choices)]
        low, high = int(prop.low), int(prop.high)
        return low + (current - low + step) % (high - low + 1)
      raise ValueError(f"unknown value expression {expr!r}")
    return expr

  # -- state-based function calls (SFC) ----------------------------------------------------------------------
  def flatten_patch(self, patch: Any) -> tuple[list[tuple[str, Any]], list[str]]:
    """(path, value) operations of a patch and the errors of its shape.

    Accepted shapes: nested objects `{"seat": {"heater_level": {"driver": 2}}}`, dotted keys at any level
    (`{"seat.heater_level.driver": 2}`), a leaf given as `{"value": v, ...}` (the shape the state is shown in),
    and a JSON Patch list `[{"op": "replace", "path": "/seat/heater_level/driver", "value": 2}]`.
    """
    ops: list[tuple[str, Any]] = []
    errors: list[str] = []
    if isinstance(patch, list):
      for i, op in enumerate(patch):
        if not isinstance(op, dict) or "path" not in op or "value" not in op:
          errors.append(f"operation {i}: a JSON Patch operation is {{\"op\": \"replace\", \"path\": \"/module/"
                        f"property[/key]\", \"value\": ...}}.")
          continue
        if op.get("op", "replace") not in ("replace", "add"):
          errors.append(f"operation {i}: only 'replace' is supported (the car has a fixed set of properties).")
          continue
        ops.append((str(op["path"]).strip("/").replace("/", "."), op["value"]))
      return ops, errors
    if not isinstance(patch, dict):
      return [], [f"a patch is a JSON object of target values, got {type(patch).__name__}."]

    deepest = max(path.count(".") for path in self.schema.leaves)

    def walk(node: Any, prefix: str) -> None:
      if isinstance(node, dict) and prefix and prefix in self.schema.leaves and "value" in node:
        ops.append((prefix, node["value"]))
        return
      if isinstance(node, dict) and prefix.count(".") > deepest:  # no leaf below: stop before recursion does
        errors.append(self.schema.unknown_path_message(prefix))
        return
      if isinstance(node, dict) and (not prefix or prefix not in self.schema.leaves):
        if not node and prefix:
          errors.append(f"{prefix}: empty object; give target values.")
        for key, value in node.items():
          walk(value, f"{prefix}.{key}" if prefix else str(key))
        return
      ops.append((prefix, node))

    walk(patch, "")
    return ops, errors

  def apply_patch(self, patch: Any, modules: Sequence[str] | None = None) -> PatchResult:
    """Applies a state patch (see the module docstring); `modules` limits which modules it may write
    (the environment block is always writable)."""
    ops, errors = self.flatten_patch(patch)
    valid: list[tuple[str, Any]] = []
    for path, value in ops:
      leaf = self.schema.leaves.get(path)
      if leaf is None:
        errors.append(self.schema.unknown_path_message(path))
      elif modules is not None and leaf.prop.module not in modules and leaf.prop.module != "environment":
        errors.append(f"{path}: module {leaf.prop.module} is not selected; select it before writing its state.")
      elif leaf.prop.readonly:
        errors.append(f"{path} is read-only: the car sets it ({leaf.prop.description}).")
      else:
        try:
          valid.append((path, coerce(leaf.prop.kind, value, leaf.prop.choices, leaf.prop.step)))
        except ValueError as e:
          errors.append(f"{path}: {e}; it takes {describe_range(leaf.prop, self.temperature_unit)}.")
    seen: dict[str, Any] = {}
    for path, value in valid:
      if path in seen and seen[path] != value:
        errors.append(f"{path} is given twice with different values; the last one ({fmt_value(value)}) is used.")
      seen[path] = value
    valid = sorted(seen.items(), key=lambda pv: pv[0] not in UNIT_PATHS)  # stable: units first
    txn = _Txn(explicit=frozenset(seen))
    applied: list[str] = []
    pending = valid
    while pending:
      failed: list[tuple[str, Any, WorldError]] = []
      for path, value in pending:
        if self._try_write(path, value, txn):
          applied.append(path)
        else:
          failed.append((path, value, self._last_error))
      if len(failed) == len(pending):
        errors.extend(str(e) for _, _, e in failed)
        break
      pending = [(p, v) for p, v, _ in failed]
    for _ in range(3):  # a side effect of a later operation may have moved a named property: write it again
      drift = [(p, v) for p, v in valid if p in applied and self.state[p] != v]
      if not drift:
        break
      for path, value in drift:
        if not self._try_write(path, value, txn):
          errors.append(f"{path}: {self._last_error}")
    logic.derive(self, txn)
    return PatchResult(applied, errors, txn.changes)

  def _try_write(self, path: str, value: Any, txn: _Txn) -> bool:
    snapshot, n = dict(self.state), len(txn.changes)
    try:
      self.write(path, value, txn, "patch")
      return True
    except WorldError as e:
      self.state = snapshot
      del txn.changes[n:]
      self._last_error = e
      return False


def param_help(api: Api, temperature_unit: str = "celsius", schema: Schema | None = None) -> str:
  """One line per argument of `api`: name, kind, range/choices."""
  if not api.params:
    return f"{api.name}() takes no arguments."
  schema = schema or load_schema()
  return f"{api.name} takes " + "; ".join(f"{p.name}: {param_text(p, schema, temperature_unit)}"
                                          for p in api.params) + "."


def param_text(p: Param, schema: Schema, temperature_unit: str = "celsius") -> str:
  if p.kind == "zone":
    keys = ", ".join(p.choices) + (", all" if p.allow_all else "")
    return f"one of {keys}"
  if p.ref is not None:
    prop = schema.props[p.ref]
    return f"{prop.kind} {describe_range(prop, temperature_unit)}"
  if p.kind in ("int", "float"):
    return f"{p.kind} {fmt_value(p.low)}..{fmt_value(p.high)}"
  if p.kind == "enum":
    return "one of " + ", ".join(p.choices)
  return "true/false"


def api_doc(api: Api, temperature_unit: str = "celsius", schema: Schema | None = None) -> str:
  """The docstring an FC agent sees for one API."""
  return f"{api.signature()}: {api.doc}" + (" " + param_help(api, temperature_unit, schema) if api.params else "")


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
  return {p: (before[p], after[p]) for p in before if before[p] != after[p]}


__all__ = ["ArgumentError", "BadValueError", "CallResult", "Change", "PatchResult", "ReadOnlyError",
           "RequirementError", "UnknownApiError", "UnknownPathError", "VehicleWorld", "WorldError", "api_doc",
           "diff", "net_changes", "param_help"]
