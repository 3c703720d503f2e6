"""Typed YAML recipes: dataclass schemas, safe loading, unknown keys rejected by name.

Every stage declares its recipe as (nested) dataclasses. `load_recipe` reads YAML with a safe
loader that also refuses a key given twice, applies `key.sub=value` overrides from the command
line, and builds the dataclass, checking types and each numeric field's declared `Range`, all
before anything loads. `describe` renders the schema (ranges included) for `--help`.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from lora_vl.errors import InputError
from lora_vl.lock import pin_recipe


class RecipeError(InputError):
    """A recipe file or override is wrong; the message names the file and key."""


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric field may take: a lower and/or upper bound, each open or closed."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):  # NaN compares False with every bound; inf means nothing here
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
FRACTION = Range(0, 1, high_open=True)        # [0, 1): a share that may be zero but not all
UNIT_INTERVAL = Range(0, 1, low_open=True)    # (0, 1]: a share that keeps something
SHARE = Range(0, 1)                           # [0, 1]: any share, none and all included


def field(default=dataclasses.MISSING, *, help: str, default_factory=dataclasses.MISSING,
          range: Range | None = None, pins: tuple[str, str] | None = None):
    """A dataclass field that carries its `--help` text and, if numeric, its allowed `range`
    (checked by `build` for the value, or for every item of a list; None always passes).
    `pins=(repo_type, key)` marks a hub revision field: it pins the model/dataset named by
    sibling `key` (read by `lora_vl.lock`)."""
    kwargs = {"metadata": {"help": help, "range": range, "pins": pins}}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, **kwargs)
    return dataclasses.field(default=default, **kwargs)


def _type_name(tp) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "|".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        return f"list[{_type_name(get_args(tp)[0])}]"
    if origin is dict:
        k, v = get_args(tp)
        return f"dict[{_type_name(k)}, {_type_name(v)}]"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:  # `X | None`: X's own error names the inner key and what was expected
            return _convert(value, members[0], where)
        for arg in members:
            try:
                return _convert(value, arg, where)
            except RecipeError:
                continue  # try the next member; the error below names the whole union
        raise RecipeError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise RecipeError(f"{where}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        (item_tp,) = get_args(tp)[:1]
        return [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        k_tp, v_tp = get_args(tp)
        return {_convert(k, k_tp, where): _convert(v, v_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise RecipeError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise RecipeError(f"{where}: unsupported schema type {tp!r}")


def build(cls, data: Any, where: str = "recipe"):
    """Build dataclass `cls` from a mapping, naming `where` in every error."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RecipeError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, f in fields.items():
        key_where = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], key_where)
            check_range(kwargs[name], f.metadata.get("range"), key_where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{key_where}: required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(where)
    return obj


def check_range(value: Any, allowed: Range | None, where: str) -> None:
    """A field's declared range, for its value or each item of a list value."""
    if allowed is None or value is None:
        return
    for i, v in enumerate(value) if isinstance(value, list) else [(None, value)]:
        if v not in allowed:
            at = where if i is None else f"{where}[{i}]"
            raise RecipeError(f"{at}: expected a value {allowed}, got {v!r}")


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping key given twice (it would keep the last silently),
    and reading `1e-5` as a number as YAML 1.2 does (PyYAML follows YAML 1.1, where a float needs a
    dot: `1e-5` was the string '1e-5', refused as "expected float")."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {seen[key]} and {line}); "
                    "expected each key once", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


UniqueKeyLoader.add_implicit_resolver(  # PyYAML copies the resolver table for the subclass
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def parse_yaml(text: str):
    """YAML text to Python objects, safely (plain data only) and with unique keys."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 — a SafeLoader subclass


def _override_step(node, part: str, override: str):
    """The child `part` of `node` while walking an override's key path (a missing section is made)."""
    if isinstance(node, list):
        if not part.isdigit():
            raise RecipeError(f"override {override!r}: {part!r} indexes a list; expected a number")
        if int(part) >= len(node):
            raise RecipeError(f"override {override!r}: index {part} is out of range; the list has "
                              f"{len(node)} item(s)")
        return node[int(part)]
    if not isinstance(node, dict):
        raise RecipeError(f"override {override!r}: the value before {part!r} is not a section")
    return node.setdefault(part, {})


def apply_override(data: dict, override: str) -> None:
    """Apply one `a.b.c=value` override; the value is parsed as YAML (safe)."""
    if "=" not in override:
        raise RecipeError(f"override {override!r}: expected key=value")
    key, raw = override.split("=", 1)
    try:
        value = parse_yaml(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise RecipeError(f"override {override!r}: the value is not valid YAML "
                          f"({getattr(e, 'problem', None) or e}); quote it if it is a string") from e
    parts = key.strip().split(".")
    if not all(parts):
        raise RecipeError(f"override {override!r}: expected a key path like stage2.optim.lr")
    node = data
    for part in parts[:-1]:
        node = _override_step(node, part, override)
    last = parts[-1]
    if isinstance(node, list):
        _override_step(node, last, override)  # the index must exist: an override replaces, never appends
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise RecipeError(f"override {override!r}: the value before {last!r} is not a section")


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"{path}: is a directory; expected a YAML recipe file")
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); expected a YAML recipe") from e
    except OSError as e:
        raise RecipeError(f"{path}: cannot be read ({e.strerror}); expected a readable YAML recipe") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping at the top level")
    return data


def load_recipe(cls, path: str | Path | None, overrides: list[str] = (), pin: bool = True):
    """Read a YAML recipe (or start empty), apply overrides, and build `cls`; with `pin`, unset hub
    revisions come from lora-vl.lock (so every stage, and each run's manifest, has the commit)."""
    data = read_yaml(path) if path is not None else {}
    for ov in overrides:
        apply_override(data, ov)
    where = str(path) if path else "recipe"
    recipe = build(cls, data, where=where)
    return pin_recipe(recipe, where=where) if pin else recipe


def describe(cls, prefix: str = "", indent: str = "  ") -> str:
    """The schema of `cls` as text for `--help`: key, type, default and help, nested."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        help_text = f.metadata.get("help", "")
        if dataclasses.is_dataclass(tp):
            lines.append(f"{indent}{key}: {help_text}")
            lines.append(describe(tp, prefix=key + ".", indent=indent))
            continue
        if f.default is not dataclasses.MISSING:
            default = f" (default: {f.default!r})"
        elif f.default_factory is not dataclasses.MISSING:
            default = f" (default: {f.default_factory()!r})"
        else:
            default = " (required)"
        allowed = f.metadata.get("range")
        kind = f"{_type_name(tp)}, {allowed}" if allowed else _type_name(tp)
        lines.append(f"{indent}{key} [{kind}]{default}: {help_text}")
        args = [a for a in get_args(tp) if dataclasses.is_dataclass(a)]
        for a in args:
            lines.append(describe(a, prefix=key + "[].", indent=indent + "  "))
    return "\n".join(lines)
