"""The merge-method registry: a recipe's `method:` name -> its implementation and its settings.

A method registers itself with `@merge_method(...)`, declaring the settings it takes (name ->
`Setting`: default, help, allowed range) as keyword-only arguments of its function. The recipe's
keys and allowed values, `--help`, validation and the error for an unknown name all come from this
one dict (`merge/recipe.py` derives the schema from it), so a method with a new knob is one
function. Methods that share a setting name share its declaration (e.g. `density`). Two kinds:
- factor methods combine the LoRA factors exactly:
  `combine([(λ_i, factors_i), ...], **settings) -> LoraFactors`;
- dense methods combine one module's dense deltas and are factored back to a rank:
  `combine(deltas, weights, generators, **settings) -> Tensor` (generators: one seeded
  `torch.Generator` per input, for methods that draw at random).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Setting:
    default: float
    help: str
    low: float | None = None  # the allowed range; `low_open`: low itself is excluded
    high: float | None = None
    low_open: bool = False

    def problem(self, value: float) -> str | None:
        """Why `value` is not allowed (None when it is)."""
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and value > self.high
        if not (below or above):
            return None
        lo = "" if self.low is None else f"{self.low} {'<' if self.low_open else '<='} "
        hi = "" if self.high is None else f" <= {self.high}"
        return f"expected {lo}value{hi}, got {value}"


@dataclass(frozen=True)
class MergeMethod:
    name: str
    combine: Callable
    dense: bool
    help: str
    settings: dict[str, Setting] = field(default_factory=dict)
    check: Callable[[dict], str | None] | None = None  # a constraint between settings: why not, or None

    def values(self, recipe) -> dict[str, float]:
        """This method's settings as the recipe sets them."""
        return {k: getattr(recipe, k) for k in self.settings}


METHODS: dict[str, MergeMethod] = {}


def merge_method(name: str, *, dense: bool, help: str, settings: dict[str, Setting] | None = None,
                 check: Callable[[dict], str | None] | None = None):
    """Register the decorated function as method `name`; `settings` are its keyword-only arguments."""
    settings = dict(settings or {})

    def register(combine: Callable) -> Callable:
        if name in METHODS:
            raise ValueError(f"merge method {name!r} registered twice")
        takes = {n for n, p in inspect.signature(combine).parameters.items() if p.kind is p.KEYWORD_ONLY}
        if takes != set(settings):
            raise ValueError(f"merge method {name!r}: declares settings {sorted(settings)}, but its function "
                             f"takes keyword-only arguments {sorted(takes)}")
        for other in METHODS.values():
            for key in set(settings) & set(other.settings):
                if settings[key] != other.settings[key]:
                    raise ValueError(f"merge method {name!r}: setting {key!r} is declared differently "
                                     f"by {other.name!r}")
        METHODS[name] = MergeMethod(name, combine, dense, help, settings, check)
        return combine
    return register


def all_settings() -> dict[str, tuple[Setting, list[str]]]:
    """Every registered method's settings, each name once: (declaration, the methods using it)."""
    out: dict[str, tuple[Setting, list[str]]] = {}
    for m in METHODS.values():
        for key, setting in m.settings.items():
            out.setdefault(key, (setting, []))[1].append(m.name)
    return out


def describe() -> str:
    return "; ".join(f"{m.name}: {m.help}" + (f" (settings: {', '.join(m.settings)})" if m.settings else "")
                     for m in METHODS.values())
