"""The merge-method registry: a recipe's `method:` name -> its implementation.

A method registers itself with `@merge_method(...)`; the recipe's allowed values, `--help` and the
error for an unknown name come from this one dict. Two kinds:
- factor methods combine the LoRA factors exactly: `combine([(λ_i, factors_i), ...]) -> LoraFactors`;
- dense methods combine one module's dense deltas and are factored back to a rank:
  `combine(deltas, weights, density, generators) -> Tensor` (generators: one seeded
  `torch.Generator` per input, for methods that draw at random).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class MergeMethod:
    name: str
    combine: Callable
    dense: bool
    help: str


METHODS: dict[str, MergeMethod] = {}


def merge_method(name: str, *, dense: bool, help: str):
    def register(combine: Callable) -> Callable:
        if name in METHODS:
            raise ValueError(f"merge method {name!r} registered twice")
        METHODS[name] = MergeMethod(name, combine, dense, help)
        return combine
    return register


def describe() -> str:
    return "; ".join(f"{m.name}: {m.help}" for m in METHODS.values())
