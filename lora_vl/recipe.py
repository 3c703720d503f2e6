"""Typed YAML recipes: dataclass schemas, safe loading, unknown keys rejected by name.

Every stage declares its recipe as (nested) dataclasses. `load_recipe` reads YAML with
`yaml.safe_load`, applies `key.sub=value` overrides from the command line, and builds the
dataclass, checking types. `describe` renders the schema for `--help`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from lora_vl.errors import InputError
from lora_vl.lock import pin_recipe


class RecipeError(InputError):
    """A recipe file or override is wrong; the message names the file and key."""


def field(default=dataclasses.MISSING, *, help: str, default_factory=dataclasses.MISSING,
          pins: tuple[str, str] | None = None):
    """A dataclass field that carries its `--help` text. `pins=(repo_type, key)` marks a hub
    revision field: it pins the model/dataset named by sibling `key` (read by `lora_vl.lock`)."""
    kwargs = {"metadata": {"help": help, "pins": pins}}
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
        for arg in args:
            if arg is type(None):
                continue
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
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{key_where}: required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(where)
    return obj


def apply_override(data: dict, override: str) -> None:
    """Apply one `a.b.c=value` override; the value is parsed as YAML (safe)."""
    if "=" not in override:
        raise RecipeError(f"override {override!r}: expected key=value")
    key, raw = override.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        if part.isdigit() and isinstance(node, list):
            node = node[int(part)]
            continue
        node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise RecipeError(f"override {override!r}: {part!r} is not a section")
    last = parts[-1]
    if last.isdigit() and isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); expected a YAML recipe") from e
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
        lines.append(f"{indent}{key} [{_type_name(tp)}]{default}: {help_text}")
        args = [a for a in get_args(tp) if dataclasses.is_dataclass(a)]
        for a in args:
            lines.append(describe(a, prefix=key + "[].", indent=indent + "  "))
    return "\n".join(lines)
