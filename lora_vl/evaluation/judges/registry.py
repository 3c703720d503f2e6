"""The judge registry: a suite's `kind:` name -> its implementation.

A judge class registers itself with `@judge(...)`; the suite schema's allowed kinds and
variants, `lora-vl eval --help` and the error for an unknown name all come from this one dict.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JudgeKind:
    name: str
    cls: type
    help: str
    variants: tuple[str, ...]  # allowed `variant` values, the default first; () if none


JUDGES: dict[str, JudgeKind] = {}


def judge(name: str, *, help: str, variants: tuple[str, ...] = ()):
    def register(cls: type) -> type:
        if name in JUDGES:
            raise ValueError(f"judge {name!r} registered twice")
        JUDGES[name] = JudgeKind(name, cls, help, tuple(variants))
        return cls
    return register


def names() -> list[str]:
    return sorted(JUDGES)


def describe() -> str:
    return "; ".join(f"{k.name} ({k.help})" for k in sorted(JUDGES.values(), key=lambda k: k.name))


def describe_variants() -> str:
    return "; ".join(f"{k.name}: {' | '.join(k.variants)} (default {k.variants[0]})"
                     for k in sorted(JUDGES.values(), key=lambda k: k.name) if k.variants)
