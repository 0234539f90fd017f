"""The declarative schema of VehicleWorld (arXiv 2509.06736, Sec. 3 "VehicleWorld": modules, APIs and properties;
Sec. 4 "State-based Function Call": the state the agent reads and writes).

A module (seat, air conditioner, music, ...) declares its properties and its APIs as data (`agents/vehicle/
catalog/`); nothing here knows a particular device. A property has a kind (bool, int, float, enum, text), a
default, a range or choice set, a description and a read-only flag; a property may be keyed (one value per seat,
window, contact, weekday, ...), and each key is one leaf of the state with its own path
`module.property[.key]`. Device logic that can be stated as data is stated here:

* `requires`: conditions that must hold for the property to take an *active* value (anything but its `off`
  value): "the seat heater needs the engine running". A write that breaks one fails with a message naming the
  condition; a change that breaks one later (engine off) resets the dependent to `off` (a cascade).
* `implies`: writes that follow an active value: "playing music takes the sound channel", "heating a seat stops
  its ventilation".
* `quantity="temperature"`: the value is in the unit of the shared `environment.temperature_unit`; the range
  is given in Celsius and converted.

An API is a list of writes whose values are small expressions over its arguments, never code:
`"{level}"` (an argument), `"@navigation.home_address"` (another property), `("add", "{by}")` (relative,
clamped to the range), `("next", 1)` (cycle an enum or wrap an int), `("toggle",)`, or a literal. A path
template may hold `{argument}`; a keyed argument given as "all" writes every key. Writes that need computation
(the next radio station) name a function of `logic.py` with `compute=`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Mapping, Sequence

KINDS = ("bool", "int", "float", "enum", "text")
SPLITS = ("multimedia", "touch_control", "car_control", "lights")
OPS = ("==", "!=", "in", "not_in", ">", ">=", "<", "<=")


class SchemaError(ValueError):
  """The catalog itself is inconsistent (a bug in the data, found when the schema is built)."""


# ---------------------------------------------------------------------------------------------------------------
# Declarations


@dataclasses.dataclass(frozen=True)
class Cond:
  """`path op value`; `path` may hold `{zone}` (the key of the leaf the condition belongs to)."""
  path: str
  op: str
  value: Any

  def holds(self, current: Any) -> bool:
    op, v = self.op, self.value
    if op == "==":
      return current == v
    if op == "!=":
      return current != v
    if op == "in":
      return current in v
    if op == "not_in":
      return current not in v
    if op == ">":
      return current > v
    if op == ">=":
      return current >= v
    if op == "<":
      return current < v
    return current <= v

  def text(self) -> str:
    if self.op in ("in", "not_in"):
      word = "one of" if self.op == "in" else "none of"
      return f"{self.path} is {word} {', '.join(map(_fmt, self.value))}"
    if self.op == "==":
      return f"{self.path} = {_fmt(self.value)}"
    return f"{self.path} {self.op} {_fmt(self.value)}"


@dataclasses.dataclass(frozen=True)
class Prop:
  module: str
  name: str
  kind: str
  default: Any
  description: str
  low: float | None = None
  high: float | None = None
  step: float | None = None
  choices: tuple[str, ...] = ()
  zones: tuple[str, ...] | None = None
  readonly: bool = False
  requires: tuple[Cond, ...] = ()
  implies: tuple[tuple[str, Any], ...] = ()
  off: Any = None
  active: tuple[Any, ...] | None = None  # when given, only these values are "on" (e.g. music source "bluetooth")
  quantity: str | None = None
  unit: str = ""

  @property
  def path(self) -> str:
    return f"{self.module}.{self.name}"

  def leaf_paths(self) -> list[str]:
    if self.zones is None:
      return [self.path]
    return [f"{self.path}.{z}" for z in self.zones]

  def is_active(self, value: Any) -> bool:
    """Whether `value` counts as "on": requirements are checked and implications follow only then."""
    if self.active is not None:
      return value in self.active
    return self.off is None or value != self.off

  def type_text(self) -> str:
    if self.kind == "enum":
      return "enum"
    return self.kind


@dataclasses.dataclass(frozen=True)
class Leaf:
  path: str
  prop: Prop
  zone: str | None


@dataclasses.dataclass(frozen=True)
class Param:
  name: str
  kind: str  # bool, int, float, enum, zone
  description: str = ""
  low: float | None = None
  high: float | None = None
  step: float | None = None
  choices: tuple[str, ...] = ()
  ref: str | None = None  # a property path whose kind/range this argument takes (range in the current unit)
  quantity: str | None = None
  allow_all: bool = False  # zone arguments: "all" writes every key


@dataclasses.dataclass(frozen=True)
class Api:
  name: str
  module: str
  doc: str
  params: tuple[Param, ...] = ()
  writes: tuple[tuple[str, Any], ...] = ()
  when: tuple[Cond, ...] = ()  # preconditions of the call itself (besides the written properties' own)
  compute: str | None = None  # name of a logic.COMPUTE function returning extra writes
  say: str = ""  # the user's request that this call fulfils, a template over the arguments
  query: bool = False  # returns information, changes nothing

  def signature(self) -> str:
    return f"{self.name}({', '.join(p.name for p in self.params)})"


@dataclasses.dataclass(frozen=True)
class Module:
  name: str
  description: str
  split: str
  props: tuple[Prop, ...]
  apis: tuple[Api, ...]


# ---------------------------------------------------------------------------------------------------------------
# Compact constructors used by the catalog files


def _conds(spec: Mapping[str, Any] | None) -> tuple[Cond, ...]:
  out = []
  for path, v in (spec or {}).items():
    if isinstance(v, tuple) and len(v) == 2 and v[0] in OPS:
      out.append(Cond(path, v[0], tuple(v[1]) if v[0] in ("in", "not_in") else v[1]))
    else:
      out.append(Cond(path, "==", v))
  return tuple(out)


def _prop(kind, name, default, description, **kw) -> dict[str, Any]:
  zones = kw.pop("zones", None)
  if "defaults" in kw:  # keyed property whose keys start from different values
    default = kw.pop("defaults")
  return dict(kind=kind, name=name, default=default, description=description,
              zones=tuple(zones) if zones is not None else None, requires=_conds(kw.pop("requires", None)),
              implies=tuple((kw.pop("implies", None) or {}).items()), **kw)


def B(name, default, description, **kw):
  """A boolean property (off value False)."""
  kw.setdefault("off", False)
  return _prop("bool", name, default, description, **kw)


def I(name, default, low, high, description, **kw):
  """An integer property in [low, high]."""
  return _prop("int", name, default, description, low=low, high=high, step=kw.pop("step", 1), **kw)


def F(name, default, low, high, step, description, **kw):
  """A float property in [low, high], stored rounded to `step`."""
  return _prop("float", name, default, description, low=low, high=high, step=step, **kw)


def E(name, default, choices, description, **kw):
  """An enum property; its off value is "off" or "none" when it is one of the choices."""
  choices = tuple(choices)
  if "off" not in kw:
    kw["off"] = next((c for c in ("off", "none") if c in choices), None)
  return _prop("enum", name, default, description, choices=choices, **kw)


def T(name, default, description, **kw):
  """A read-only text property (derived by the device)."""
  kw.setdefault("readonly", True)
  return _prop("text", name, default, description, **kw)


def A(name, doc, params=None, writes=None, *, say="", when=None, compute=None):
  """An API. `params` maps argument name to a spec: a property path (".x" is relative to the module) whose
  kind and range the argument takes, `Z(zones)`, or `("int"|"float", low, high)` / `("enum", choices)` /
  `("bool",)`."""
  return dict(name=name, doc=doc, params=dict(params or {}), writes=tuple((writes or {}).items()), say=say,
              when=_conds(when), compute=compute)


def Z(zones: Sequence[str], allow_all: bool = True, description: str = "") -> tuple:
  return ("zone", tuple(zones), allow_all, description)


def M(name, description, split, props, apis) -> dict[str, Any]:
  return dict(name=name, description=description, split=split, props=props, apis=apis)


# ---------------------------------------------------------------------------------------------------------------
# The built schema


class Schema:
  """All modules, their leaves and APIs, with the indexes the world needs."""

  def __init__(self, modules: Sequence[dict[str, Any]]):
    self.modules: dict[str, Module] = {}
    self.props: dict[str, Prop] = {}
    self.leaves: dict[str, Leaf] = {}
    self.apis: dict[str, Api] = {}
    raw_apis = []
    for m in modules:
      if m["split"] not in SPLITS:
        raise SchemaError(f"module {m['name']}: split {m['split']!r} is not one of {SPLITS}.")
      props = []
      for p in m["props"]:
        prop = Prop(module=m["name"], **p)
        _check_prop(prop)
        if prop.path in self.props:
          raise SchemaError(f"property {prop.path} declared twice.")
        self.props[prop.path] = prop
        props.append(prop)
        for path in prop.leaf_paths():
          self.leaves[path] = Leaf(path, prop, path[len(prop.path) + 1:] or None)
      status = dict(name=f"{m['name']}_get_status", doc=f"Returns the current state of the {m['name']} module "
                    "(every property and its value). Changes nothing.", params={}, writes=(), say="", when=(),
                    compute=None, query=True)
      raw_apis.append((m, [status] + list(m["apis"])))
      self.modules[m["name"]] = Module(m["name"], m["description"], m["split"], tuple(props), ())
    for m, apis in raw_apis:
      built = []
      for a in apis:
        api = self._build_api(m["name"], a)
        if api.name in self.apis:
          raise SchemaError(f"API {api.name} declared twice.")
        self.apis[api.name] = api
        built.append(api)
      self.modules[m["name"]] = dataclasses.replace(self.modules[m["name"]], apis=tuple(built))
    self._check_references()
    # Reverse index for cascades: property path -> the (prop, condition) pairs that depend on it.
    self.dependents: dict[str, list[tuple[Prop, Cond]]] = {}
    for prop in self.props.values():
      for cond in prop.requires:
        self.dependents.setdefault(_prop_path_of(cond.path), []).append((prop, cond))

  # -- lookups -------------------------------------------------------------------------------------------------
  def leaf(self, path: str) -> Leaf:
    if path in self.leaves:
      return self.leaves[path]
    raise KeyError(self.unknown_path_message(path))

  def unknown_path_message(self, path: str) -> str:
    parts = path.split(".")
    if parts[0] not in self.modules:
      close = difflib.get_close_matches(parts[0], list(self.modules), n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      return f"unknown module {parts[0]!r} in path {path!r}.{hint}"
    prop_path = ".".join(parts[:2])
    if prop_path not in self.props:
      names = [p.name for p in self.modules[parts[0]].props]
      given = parts[1] if len(parts) > 1 else ""
      close = [n for n in names if given and n.startswith(given)] or difflib.get_close_matches(given, names, n=1,
                                                                                              cutoff=0.5)
      hint = f" Did you mean {parts[0]}.{close[0]}?" if close else ""
      return f"unknown property {path!r}.{hint} Properties of {parts[0]}: {', '.join(names)}."
    prop = self.props[prop_path]
    if prop.zones is None:
      return f"{prop_path} has a single value; write it as {prop_path}, not {path!r}."
    if len(parts) == 2:
      return f"{prop_path} has one value per key; write {prop_path}.<key> with key one of {', '.join(prop.zones)}."
    return f"unknown key {parts[2]!r} of {prop_path}; keys: {', '.join(prop.zones)}."

  def module_of(self, api_name: str) -> str:
    return self.apis[api_name].module

  def counts(self) -> dict[str, int]:
    action = sum(1 for a in self.apis.values() if not a.query)
    return {"modules": len(self.modules), "apis": len(self.apis), "action_apis": action,
            "query_apis": len(self.apis) - action, "property_specs": len(self.props),
            "readonly_property_specs": sum(1 for p in self.props.values() if p.readonly),
            "properties": len(self.leaves), "readonly_properties": sum(1 for l in self.leaves.values()
                                                                       if l.prop.readonly)}

  def default_state(self) -> dict[str, Any]:
    return {path: (leaf.prop.default[leaf.zone] if isinstance(leaf.prop.default, dict) else leaf.prop.default)
            for path, leaf in self.leaves.items()}

  # -- building and checking -----------------------------------------------------------------------------------
  def _build_api(self, module: str, a: dict[str, Any]) -> Api:
    params = []
    for pname, spec in a["params"].items():
      params.append(self._build_param(module, a["name"], pname, spec))
    writes = []
    for path, value in a["writes"]:
      writes.append((path if not path.startswith(".") else module + path, value))
    return Api(name=a["name"], module=module, doc=a["doc"], params=tuple(params), writes=tuple(writes),
               when=a["when"], compute=a["compute"], say=a["say"], query=a.get("query", False))

  def _build_param(self, module: str, api: str, name: str, spec: Any) -> Param:
    if isinstance(spec, str):
      path = module + spec if spec.startswith(".") else spec
      if path not in self.props:
        raise SchemaError(f"API {api}: argument {name} refers to unknown property {path}.")
      p = self.props[path]
      return Param(name, p.kind if p.kind != "text" else "enum", p.description, p.low, p.high, p.step,
                   p.choices, path, p.quantity)
    kind = spec[0]
    if kind == "zone":
      return Param(name, "zone", spec[3], choices=spec[1], allow_all=spec[2])
    if kind in ("int", "float"):
      step = spec[3] if len(spec) > 3 else (1 if kind == "int" else 0.1)
      return Param(name, kind, "", spec[1], spec[2], step)
    if kind == "enum":
      return Param(name, "enum", "", choices=tuple(spec[1]))
    if kind == "bool":
      return Param(name, "bool")
    raise SchemaError(f"API {api}: argument {name} has an unknown spec {spec!r}.")

  def _check_references(self) -> None:
    for prop in self.props.values():
      for cond in prop.requires:
        self._check_template(cond.path, prop, f"{prop.path} requires")
      for path, value in prop.implies:
        target = self._check_template(path, prop, f"{prop.path} implies")
        if isinstance(value, str) or not isinstance(value, (list, tuple, dict)):
          if self.props[target].readonly:
            raise SchemaError(f"{prop.path} implies a write to read-only {target}.")
    for api in self.apis.values():
      names = {p.name for p in api.params}
      for path, value in api.writes:
        parts = path.split(".")
        prop_path = ".".join(parts[:2])
        if prop_path not in self.props:
          raise SchemaError(f"API {api.name} writes unknown property {prop_path}.")
        prop = self.props[prop_path]
        # APIs only write what SFC may write too: then a state patch can reach every state the APIs reach.
        if prop.readonly:
          raise SchemaError(f"API {api.name} writes read-only {prop_path}.")
        if (prop.zones is None) != (len(parts) == 2):
          raise SchemaError(f"API {api.name}: {path} does not match the keys of {prop_path}.")
        if len(parts) == 3 and parts[2].startswith("{"):
          arg = parts[2][1:-1]
          zone_param = next((p for p in api.params if p.name == arg), None)
          if zone_param is None or not set(zone_param.choices) <= set(prop.zones):
            raise SchemaError(f"API {api.name}: argument {arg} must be a zone argument over keys of {prop_path}.")
        elif len(parts) == 3 and parts[2] not in prop.zones:
          raise SchemaError(f"API {api.name}: {parts[2]} is not a key of {prop_path}.")
        for ref in _arg_refs(value):
          if ref not in names:
            raise SchemaError(f"API {api.name} uses argument {{{ref}}} it does not declare.")
      if not api.query and not api.writes and api.compute is None:
        raise SchemaError(f"API {api.name} changes nothing; mark it a query or give it writes.")
      if not api.query and not api.say:
        raise SchemaError(f"API {api.name} has no `say` template (the user request it fulfils).")

  def _check_template(self, path: str, owner: Prop, what: str) -> str:
    parts = path.split(".")
    prop_path = ".".join(parts[:2])
    if prop_path not in self.props:
      raise SchemaError(f"{what} unknown property {prop_path}.")
    target = self.props[prop_path]
    if len(parts) == 3 and parts[2] == "{zone}":
      if owner.zones is None or target.zones is None or not set(owner.zones) <= set(target.zones):
        raise SchemaError(f"{what} {path}: the keys of {owner.path} must be keys of {prop_path}.")
    elif (target.zones is None) != (len(parts) == 2):
      raise SchemaError(f"{what} {path}: does not match the keys of {prop_path}.")
    return prop_path


def _prop_path_of(path: str) -> str:
  return ".".join(path.split(".")[:2])


def _arg_refs(value: Any) -> list[str]:
  if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
    return [value[1:-1]]
  if isinstance(value, tuple):
    return [r for v in value[1:] for r in _arg_refs(v)]
  return []


def _check_prop(p: Prop) -> None:
  where = p.path
  if p.kind not in KINDS:
    raise SchemaError(f"{where}: kind {p.kind!r} is not one of {KINDS}.")
  if p.kind in ("int", "float"):
    if p.low is None or p.high is None or p.low >= p.high:
      raise SchemaError(f"{where}: numeric property needs low < high.")
  if p.kind == "enum" and not p.choices:
    raise SchemaError(f"{where}: enum property needs choices.")
  if p.zones is not None and (not p.zones or len(set(p.zones)) != len(p.zones)):
    raise SchemaError(f"{where}: keys must be distinct and non-empty.")
  if p.active is not None and p.off is None:
    raise SchemaError(f"{where}: a property with `active` values needs an `off` value for cascades.")
  if p.requires and p.off is None:
    raise SchemaError(f"{where}: a property with requirements needs an `off` value (the cascade resets it).")
  if p.requires and check_static(p, p.off):
    raise SchemaError(f"{where}: off value {p.off!r} is invalid.")
  defaults = p.default if isinstance(p.default, dict) else None
  values = list(defaults.values()) if defaults else [p.default]
  for v in values:
    error = check_static(p, v)
    if error:
      raise SchemaError(f"{where}: default {v!r} is invalid: {error}")
  if not p.description:
    raise SchemaError(f"{where}: every property needs a description.")


# ---------------------------------------------------------------------------------------------------------------
# Values


def to_unit(value: float, unit: str) -> float:
  """Celsius to `unit` (the catalog's temperature ranges are in Celsius)."""
  return value if unit == "celsius" else value * 9 / 5 + 32


def convert_temperature(value: float, old: str, new: str) -> int:
  if old == new:
    return int(value)
  celsius = value if old == "celsius" else (value - 32) * 5 / 9
  return int(math.floor(to_unit(celsius, new) + 0.5))


def bounds(prop: Prop, temperature_unit: str = "celsius") -> tuple[float, float]:
  """(low, high) of a numeric property in the unit it is currently stored in."""
  if prop.quantity == "temperature":
    return (math.floor(to_unit(prop.low, temperature_unit) + 0.5),
            math.floor(to_unit(prop.high, temperature_unit) + 0.5))
  return prop.low, prop.high


def coerce(kind: str, value: Any, choices: Sequence[str] = (), step: float | None = None) -> Any:
  """`value` as `kind`, or raise ValueError naming what was expected. Booleans are never numbers here."""
  if kind == "bool":
    if isinstance(value, bool):
      return value
    raise ValueError(f"expected true or false (a JSON boolean), got {_fmt(value)}")
  if kind == "int":
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and
                                                                          not value.is_integer()):
      raise ValueError(f"expected an integer, got {_fmt(value)}")
    return int(value)
  if kind == "float":
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ValueError(f"expected a number, got {_fmt(value)}")
    try:  # a 400-digit integer is a valid JSON number that no float holds
      if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {_fmt(value)}")
      if step:
        digits = max(0, -int(math.floor(math.log10(step))))
        return round(round(value / step) * step, digits)
      return float(value)
    except OverflowError:
      raise ValueError(f"{_fmt(value)} is out of range (too large for a number)") from None
  if kind in ("enum", "zone", "text"):
    if not isinstance(value, str):
      raise ValueError(f"expected a string, got {_fmt(value)}")
    if kind == "text" and not choices:
      return value
    for c in choices:
      if c == value:
        return c
    for c in choices:  # models vary case and spacing; the canonical spelling is stored
      if c.lower() == value.strip().lower().replace(" ", "_") or c.lower() == value.strip().lower():
        return c
    close = difflib.get_close_matches(value, list(choices), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"{_fmt(value)} is not one of {', '.join(map(repr, choices))}{hint}")
  raise ValueError(f"unknown kind {kind}")


def check_static(prop: Prop, value: Any, temperature_unit: str = "celsius") -> str | None:
  """None if `value` fits the property's kind and range/choices, else why not (for messages)."""
  try:
    v = coerce(prop.kind, value, prop.choices, prop.step)
  except ValueError as e:
    return str(e)
  if prop.kind in ("int", "float"):
    low, high = bounds(prop, temperature_unit)
    if not low <= v <= high:
      return f"{_fmt(v)} is out of range {_fmt(low)}..{_fmt(high)}"
  return None


def describe_range(prop: Prop, temperature_unit: str = "celsius") -> str:
  if prop.kind in ("int", "float"):
    low, high = bounds(prop, temperature_unit)
    unit = ("°C" if temperature_unit == "celsius" else "°F") if prop.quantity == "temperature" else prop.unit
    text = f"{_fmt(low)}..{_fmt(high)}"
    if prop.kind == "float" and prop.step:
      text += f" step {_fmt(prop.step)}"
    return text + (f" {unit}" if unit else "")
  if prop.kind == "enum":
    return "one of " + ", ".join(prop.choices)
  if prop.kind == "bool":
    return "true/false"
  return "text"


def _digits(v: int) -> int:
  """Decimal digits of `v` without `str` (which refuses ints of over 4,300 digits)."""
  n = int((abs(v).bit_length() - 1) * math.log10(2)) + 1
  return n + (abs(v) >= 10 ** n)


def _fmt(v: Any) -> str:
  if isinstance(v, bool):
    return "true" if v else "false"
  if isinstance(v, int) and v.bit_length() > 64:  # a model's 400-digit number: not echoed in full
    return f"{'a negative' if v < 0 else 'an'} integer of {_digits(v)} digits"
  if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:  # 1e308 stays 1e+308
    return str(int(v))
  if isinstance(v, str):
    return repr(v)
  return str(v)


def fmt_value(v: Any) -> str:
  return _fmt(v)
