"""Benchmark readers, registered by `@benchmark_reader(...)` (readers/registry.py), and the two
things every run asks of them: the items (seeded subset) and the study category they measure.

Importing this package imports every reader module, which fills the registry.
"""
from __future__ import annotations

from lora_vl.evaluation.items import BenchmarkError, EvalItem, per_category_subset, seeded_subset
from lora_vl.evaluation.readers import helpfulness, mm_safety, over_refusal, text_safety, vqa  # noqa: F401
from lora_vl.evaluation.readers.registry import READERS


def study_category(spec) -> str:
    """The study category a benchmark spec measures: its own key, else what its reader (and
    subset) measures."""
    reader = READERS[spec.reader]
    return spec.category or reader.subset_categories.get(spec.subset, reader.category)


def read_benchmark(spec, seed: int) -> list[EvalItem]:
    """All items of `spec`, then the seeded subset it asks for (per category first, then total)."""
    reader = READERS[spec.reader]
    items = reader.read(spec)
    if not items:  # a typo in a selector reads as "0 items" and would score nothing
        chosen = ", ".join(f"{k} {getattr(spec, k)!r}" for k in ("subset", "config", "split", "data_files")
                           if getattr(spec, k) is not None) or "the default selection"
        raise BenchmarkError(f"{spec.name}: {chosen} selects no items from {spec.source}; expected a selection "
                             f"with items (reader {spec.reader!r} subsets: {reader.subsets or 'none'})")
    items = per_category_subset(items, spec.per_category, seed)
    return seeded_subset(items, spec.limit, seed)


__all__ = ["READERS", "read_benchmark", "study_category"]
