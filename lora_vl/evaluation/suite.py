"""The evaluation suite schema (YAML in eval/), built and validated by `lora_vl.recipe`.

Which judge kinds and benchmark readers exist (and what their variants and subsets mean) comes
from the two registries (judges/registry.py, readers/registry.py): the help text and the
validation below are derived from them, never listed here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lora_vl.evaluation import judges as _judges, readers as _readers  # noqa: F401  (fill the registries)
from lora_vl.evaluation.judges import registry as judge_registry
from lora_vl.evaluation.readers import registry as reader_registry
from lora_vl.recipe import AT_LEAST_ONE, SHARE, RecipeError, field

Category = Literal["text_safety", "mm_safety", "over_refusal", "helpfulness"]


@dataclass
class JudgeSpec:
    name: str = field(help="label stored beside every number this judge produces")
    kind: str = field(help="judge implementation, one of: " + judge_registry.describe())
    model: str | None = field(None, help="hub id or local dir of a model judge (not for "
                                           "'refusal'); toy_oracle: the world's judge/knowledge.json")
    revision: str | None = field(None, help="hub revision (commit/tag) of the judge model (default: lora-vl.lock)",
                                 pins=("model", "model"))
    quantization: Literal["none", "4bit"] = field("none", help="load the judge in 4-bit (bitsandbytes NF4)")
    batch_size: int = field(8, help="judge prompts per generate() call", range=AT_LEAST_ONE)
    max_new_tokens: int | None = field(None, help="judge output budget (default: the judge's upstream one)",
                                           range=AT_LEAST_ONE)
    variant: str | None = field(None, help="judge-specific variant: " + judge_registry.describe_variants())

    def validate(self, where: str) -> None:
        kind = judge_registry.JUDGES.get(self.kind)
        if kind is None:
            raise RecipeError(f"{where}.kind: unknown judge {self.kind!r}; expected one of {judge_registry.names()}")
        if self.variant is not None and self.variant not in kind.variants:
            expected = f"one of {list(kind.variants)}" if kind.variants else "none (this judge has no variants)"
            raise RecipeError(f"{where}.variant: {self.variant!r} is not a variant of judge {self.kind!r}; "
                              f"expected {expected}")


@dataclass
class BenchmarkSpec:
    name: str = field(help="label in results and in the generation cache key")
    reader: str = field(help="benchmark family, one of: " + reader_registry.describe())
    source: str = field(help="hub dataset id, or a local file/folder in the benchmark's own layout")
    revision: str | None = field(None, help="hub revision to pin (commit sha or tag; default: lora-vl.lock)",
                                 pins=("dataset", "source"))
    config: str | None = field(None, help="hub config name (e.g. MMBench 'en', LMMs-Eval-Lite 'mme')")
    split: str | None = field(None, help="hub split (reader default if unset)")
    data_files: str | None = field(None, help="hub data_files (e.g. SORRY-Bench question.jsonl)")
    subset: str | None = field(None, help="reader-specific subset: " + reader_registry.describe_subsets())
    limit: int | None = field(None, help="seeded subset size (all items if unset; MME counts images)",
                              range=AT_LEAST_ONE)
    per_category: int | None = field(None, help="seeded subset size per item category (before limit)",
                                     range=AT_LEAST_ONE)
    category: Category | None = field(None, help="study category override (reader default if unset)")
    judges: list[str] = field(default_factory=list, help="judge names (safety/over-refusal); the first "
                              "is primary; two or more report agreement and Cohen's kappa")
    max_new_tokens: int | None = field(None, help="generation budget override for this benchmark",
                                       range=AT_LEAST_ONE)
    max_skipped: float | None = field(None, help="share of this benchmark's items that may be skipped "
                                      "(unreadable image, ...) before it fails (default: the suite's)",
                                      range=SHARE)


@dataclass
class GenerationSpec:
    batch_size: int = field(8, help="prompts per generate() call (left padding; same output as 1)",
                            range=AT_LEAST_ONE)
    max_new_tokens: int = field(256, help="greedy decoding budget per answer", range=AT_LEAST_ONE)
    quantization: Literal["none", "4bit"] = field("none", help="load the evaluated LLM in 4-bit")
    device: str | None = field(None, help="torch device (auto: cuda if available else cpu)")
    backend: Literal["hf", "vllm"] = field("hf", help="hf: transformers generate; vllm: optional extra")
    revision: str | None = field(None, help="hub revision of the evaluated base model")
    check_adapter_base: bool = field(True, help="refuse adapters whose recorded base differs from --model")


@dataclass
class Suite:
    name: str = field(help="suite name, written into results")
    seed: int = field(0, help="seed for subsets and bootstrap CIs")
    bootstrap: int = field(1000, help="bootstrap resamples for CIs of non-rate scores (MME score)",
                           range=AT_LEAST_ONE)
    generation: GenerationSpec = field(default_factory=GenerationSpec, help="how answers are generated")
    judges: list[JudgeSpec] = field(default_factory=list, help="judges available to benchmarks")
    benchmarks: list[BenchmarkSpec] = field(default_factory=list, help="benchmarks to run")
    cache: str | None = field(None, help="generation cache JSONL (default: <out>/generations.jsonl)")
    max_skipped: float = field(0.01, help="share of a benchmark's items that may be skipped (unreadable "
                               "image, ...); above it the benchmark is 'failed' and its numbers unused",
                               range=SHARE)

    def validate(self, where: str) -> None:
        judge_names = [j.name for j in self.judges]
        if len(set(judge_names)) != len(judge_names):
            raise RecipeError(f"{where}.judges: duplicate judge names {judge_names}")
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise RecipeError(f"{where}.benchmarks: duplicate benchmark names {names}")
        for i, b in enumerate(self.benchmarks):
            if b.reader not in reader_registry.READERS:
                raise RecipeError(f"{where}.benchmarks[{i}].reader: unknown {b.reader!r} (not a benchmark reader); "
                                  f"expected one of {reader_registry.names()}")
            for j in b.judges:
                if j not in judge_names:
                    raise RecipeError(f"{where}.benchmarks[{i}].judges: {j!r} is not a judge of this "
                                      f"suite; defined: {judge_names}")


DEFAULT_JUDGE = JudgeSpec(name="refusal-matcher", kind="refusal")


def judge_specs(suite: Suite, bench: BenchmarkSpec, category: str) -> list[JudgeSpec]:
    """The judges of a safety / over-refusal benchmark (offline refusal matcher if none named)."""
    if category == "helpfulness":
        return []
    by_name = {j.name: j for j in suite.judges}
    return [by_name[n] for n in bench.judges] or [DEFAULT_JUDGE]
