"""The evaluation suite schema (YAML in eval/), built and validated by `lora_vl.recipe`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lora_vl.recipe import RecipeError, field

JudgeKind = Literal["refusal", "llama_guard", "wildguard", "harmbench", "sorry_bench"]
Category = Literal["text_safety", "mm_safety", "over_refusal", "helpfulness"]


@dataclass
class JudgeSpec:
    name: str = field(help="label stored beside every number this judge produces")
    kind: JudgeKind = field(help="judge implementation")
    model: str | None = field(None, help="hub id or local dir of a model judge (not for 'refusal')")
    revision: str | None = field(None, help="hub revision (commit/tag) of the judge model")
    quantization: Literal["none", "4bit"] = field("none", help="load the judge in 4-bit (bitsandbytes NF4)")
    batch_size: int = field(8, help="judge prompts per generate() call")
    max_new_tokens: int = field(16, help="judge output budget (verdict lines only)")
    variant: str | None = field(None, help="llama_guard: 1b | 8b | vision (category list and format); "
                                           "refusal: prefix | substring | both")


@dataclass
class BenchmarkSpec:
    name: str = field(help="label in results and in the generation cache key")
    reader: str = field(help="benchmark family: " + "sorry_bench, wildjailbreak, advbench, harmbench, "
                        "strongreject, figstep, mm_safetybench, siuo, vlguard, xstest, mossbench, "
                        "mmbench, mme, seedbench, pope, scienceqa")
    source: str = field(help="hub dataset id, or a local file/folder in the benchmark's own layout")
    revision: str | None = field(None, help="hub revision to pin (commit sha or tag)")
    config: str | None = field(None, help="hub config name (e.g. MMBench 'en', LMMs-Eval-Lite 'mme')")
    split: str | None = field(None, help="hub split (reader default if unset)")
    data_files: str | None = field(None, help="hub data_files (e.g. SORRY-Bench question.jsonl)")
    subset: str | None = field(None, help="reader-specific subset: SORRY-Bench prompt style, FigStep "
                               "'tiny', MM-SafetyBench SD|TYPO|SD_TYPO, VLGuard unsafes|safe_unsafes|"
                               "safe_safes, XSTest safe|unsafe|all, WildJailbreak data_type, HarmBench "
                               "FunctionalCategory")
    limit: int | None = field(None, help="seeded subset size (all items if unset; MME counts images)")
    per_category: int | None = field(None, help="seeded subset size per item category (before limit)")
    category: Category | None = field(None, help="study category override (reader default if unset)")
    judges: list[str] = field(default_factory=list, help="judge names (safety/over-refusal); the first "
                              "is primary; two or more report agreement and Cohen's kappa")
    max_new_tokens: int | None = field(None, help="generation budget override for this benchmark")


@dataclass
class GenerationSpec:
    batch_size: int = field(8, help="prompts per generate() call (left padding; same output as 1)")
    max_new_tokens: int = field(256, help="greedy decoding budget per answer")
    quantization: Literal["none", "4bit"] = field("none", help="load the evaluated LLM in 4-bit")
    device: str | None = field(None, help="torch device (auto: cuda if available else cpu)")
    backend: Literal["hf", "vllm"] = field("hf", help="hf: transformers generate; vllm: optional extra")
    revision: str | None = field(None, help="hub revision of the evaluated base model")
    check_adapter_base: bool = field(True, help="refuse adapters whose recorded base differs from --model")


@dataclass
class Suite:
    name: str = field(help="suite name, written into results")
    seed: int = field(0, help="seed for subsets and bootstrap CIs")
    bootstrap: int = field(1000, help="bootstrap resamples for CIs of non-rate scores (MME score)")
    generation: GenerationSpec = field(default_factory=GenerationSpec, help="how answers are generated")
    judges: list[JudgeSpec] = field(default_factory=list, help="judges available to benchmarks")
    benchmarks: list[BenchmarkSpec] = field(default_factory=list, help="benchmarks to run")
    cache: str | None = field(None, help="generation cache JSONL (default: <out>/generations.jsonl)")
    toy_data: str | None = field(None, help="write the offline toy benchmarks here first (toy suite)")

    def validate(self, where: str) -> None:
        from lora_vl.evaluation.readers import READERS

        judge_names = [j.name for j in self.judges]
        if len(set(judge_names)) != len(judge_names):
            raise RecipeError(f"{where}.judges: duplicate judge names {judge_names}")
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise RecipeError(f"{where}.benchmarks: duplicate benchmark names {names}")
        for i, b in enumerate(self.benchmarks):
            if b.reader not in READERS:
                raise RecipeError(f"{where}.benchmarks[{i}].reader: unknown {b.reader!r}; "
                                  f"expected one of {sorted(READERS)}")
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
