"""Judge registry: suite `kind` -> implementation. Model judges load lazily, one at a time."""
from __future__ import annotations

from lora_vl.evaluation.judges.base import Judge, Verdict
from lora_vl.evaluation.judges.harmbench import HarmBenchClassifier
from lora_vl.evaluation.judges.llama_guard import LlamaGuard
from lora_vl.evaluation.judges.refusal import RefusalMatcher
from lora_vl.evaluation.judges.sorry_bench import SorryBenchJudge
from lora_vl.evaluation.judges.wildguard import WildGuard

JUDGES = {"refusal": RefusalMatcher, "llama_guard": LlamaGuard, "wildguard": WildGuard,
          "harmbench": HarmBenchClassifier, "sorry_bench": SorryBenchJudge}


def build_judge(spec) -> Judge:
    return JUDGES[spec.kind](spec)


__all__ = ["JUDGES", "Judge", "Verdict", "build_judge"]
