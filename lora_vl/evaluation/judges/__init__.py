"""Judges, registered by `@judge(...)` (judges/registry.py). Model judges load lazily, one at a time.

Importing this package imports every judge module, which fills the registry.
"""
from __future__ import annotations

from lora_vl.evaluation.judges import (  # noqa: F401  (each module registers its judge)
    harmbench, llama_guard, refusal, sorry_bench, toy_oracle, wildguard)
from lora_vl.evaluation.judges.base import Judge, Verdict
from lora_vl.evaluation.judges.registry import JUDGES


def build_judge(spec) -> Judge:
    return JUDGES[spec.kind].cls(spec)


__all__ = ["JUDGES", "Judge", "Verdict", "build_judge"]
