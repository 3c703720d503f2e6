"""The benchmark-reader registry: a suite's `reader:` name -> its reader and what it measures.

A reader registers itself with `@benchmark_reader(...)`, naming the study category its items
measure (and the subsets that measure another one: benign probes measure over-refusal, harmful
ones safety). The suite schema, `lora-vl eval --help`, error messages and `study_category` all
come from this one dict. Every reader takes a `BenchmarkSpec` and returns `EvalItem`s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class BenchmarkReader:
    name: str
    read: Callable
    category: str                      # the study category (suite.Category) by default
    help: str
    subsets: str = ""                  # what `subset:` means to this reader, for --help
    subset_categories: dict[str, str] = field(default_factory=dict)  # subset -> its other category


READERS: dict[str, BenchmarkReader] = {}


def benchmark_reader(name: str, *, category: str, help: str, subsets: str = "",
                     subset_categories: dict[str, str] | None = None):
    def register(read: Callable) -> Callable:
        if name in READERS:
            raise ValueError(f"benchmark reader {name!r} registered twice")
        READERS[name] = BenchmarkReader(name, read, category, help, subsets, dict(subset_categories or {}))
        return read
    return register


def names() -> list[str]:
    return sorted(READERS)


def describe() -> str:
    return "; ".join(f"{r.name} ({r.help})" for r in sorted(READERS.values(), key=lambda r: r.name))


def describe_subsets() -> str:
    return "; ".join(f"{r.name}: {r.subsets}" for r in sorted(READERS.values(), key=lambda r: r.name)
                     if r.subsets)
