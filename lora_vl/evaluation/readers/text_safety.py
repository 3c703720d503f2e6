"""Text-only harmful-prompt benchmarks: SORRY-Bench, WildJailbreak, AdvBench, HarmBench, StrongREJECT.

Schemas are the published ones (dataset cards / repos), noted per reader.
"""
from __future__ import annotations

from lora_vl.evaluation.items import BenchmarkError, EvalItem
from lora_vl.evaluation.readers.registry import benchmark_reader
from lora_vl.evaluation.readers.source import is_local, load_rows


def _col(row: dict, names: tuple[str, ...], benchmark: str, i: int):
    for n in names:
        if n in row:
            return row[n]
    raise BenchmarkError(f"{benchmark}: row {i} has none of the columns {names}; got {sorted(row)}")


@benchmark_reader("sorry_bench", category="text_safety",
                  subsets="prompt style (base default, or a mutation such as slang)",
                  help="SORRY-Bench question.jsonl (45 categories x 10; gated hub dataset)")
def read_sorry_bench(spec) -> list[EvalItem]:
    """sorry-bench/sorry-bench-202406 `question.jsonl` (base, 450 = 45 categories x 10) or
    `question_<style>.jsonl` (linguistic mutations): question_id, category, turns, prompt_style."""
    style = spec.subset or "base"
    fname = "question.jsonl" if style == "base" else f"question_{style}.jsonl"
    rows, _ = load_rows(spec, spec.name, [fname], data_files=spec.data_files or fname,
                        split=spec.split or "train")
    items = []
    for i, r in enumerate(rows):
        turns = _col(r, ("turns",), spec.name, i)
        items.append(EvalItem(id=str(r["question_id"]), prompt=turns[0], benchmark=spec.name,
                              category=str(r.get("category", "")),
                              meta={"prompt_style": r.get("prompt_style", style)}))
    return items


@benchmark_reader("wildjailbreak", category="text_safety",
                  subsets="data_type: adversarial_harmful (default) | adversarial_benign",
                  subset_categories={"adversarial_benign": "over_refusal"},
                  help="allenai/wildjailbreak eval.tsv (gated hub dataset)")
def read_wildjailbreak(spec) -> list[EvalItem]:
    """allenai/wildjailbreak `eval` config (eval.tsv): adversarial, label, data_type.
    subset: adversarial_harmful (default) or adversarial_benign (an over-refusal probe)."""
    want = spec.subset or "adversarial_harmful"
    rows, _ = load_rows(spec, spec.name, ["eval.tsv"], config=spec.config or "eval",
                        split=spec.split or "train", delimiter="\t", keep_default_na=False)
    items = []
    for i, r in enumerate(rows):
        if r.get("data_type") != want:
            continue
        items.append(EvalItem(id=str(i), prompt=_col(r, ("adversarial",), spec.name, i),
                              benchmark=spec.name, category=want))
    return items


@benchmark_reader("advbench", category="text_safety",
                  help="AdvBench harmful_behaviors.csv or walledai/AdvBench")
def read_advbench(spec) -> list[EvalItem]:
    """AdvBench harmful_behaviors.csv (goal, target) or walledai/AdvBench (prompt, target)."""
    rows, _ = load_rows(spec, spec.name, ["harmful_behaviors.csv"])
    return [EvalItem(id=str(i), prompt=_col(r, ("goal", "prompt"), spec.name, i), benchmark=spec.name,
                     category="harmful_behavior", meta={"target": r.get("target")})
            for i, r in enumerate(rows)]


HARMBENCH_SPLITS = {"test": "harmbench_behaviors_text_test.csv", "val": "harmbench_behaviors_text_val.csv",
                    "all": "harmbench_behaviors_text_all.csv"}


@benchmark_reader("harmbench", category="text_safety",
                  subsets="FunctionalCategory: standard (default) | contextual | copyright | all",
                  help="HarmBench text behaviours; split: test (default; 159 standard, the leaderboard's) | val | all")
def read_harmbench(spec) -> list[EvalItem]:
    """HarmBench harmbench_behaviors_text_<split>.csv: Behavior, FunctionalCategory, SemanticCategory,
    Tags, ContextString, BehaviorID. In a HarmBench clone `split` picks the file: test (default,
    what its leaderboard reports), val or all (= test + val). subset: a FunctionalCategory
    (standard default, contextual, copyright) or all. Contextual prompts are
    '<context>\n\n---\n\n<behavior>', as HarmBench builds them."""
    want = spec.subset or "standard"
    if is_local(spec.source):
        split = spec.split or "test"
        if split not in HARMBENCH_SPLITS:
            raise BenchmarkError(f"{spec.name}: split {split!r}: expected one of {sorted(HARMBENCH_SPLITS)}")
        rows, _ = load_rows(spec, spec.name, [HARMBENCH_SPLITS[split]])
    else:
        rows, _ = load_rows(spec, spec.name, [])
    items = []
    for i, r in enumerate(rows):
        if want != "all" and r.get("FunctionalCategory", want) != want:
            continue
        behavior = _col(r, ("Behavior", "prompt"), spec.name, i)
        context = r.get("ContextString") or ""
        prompt = f"{context}\n\n---\n\n{behavior}" if context else behavior
        items.append(EvalItem(id=str(r.get("BehaviorID") or i), prompt=prompt, benchmark=spec.name,
                              category=str(r.get("SemanticCategory") or r.get("category") or ""),
                              meta={"behavior": behavior, "context": context}))
    return items


@benchmark_reader("strongreject", category="text_safety", help="StrongREJECT strongreject_dataset.csv")
def read_strongreject(spec) -> list[EvalItem]:
    """StrongREJECT strongreject_dataset.csv (or _small): category, source, forbidden_prompt."""
    rows, _ = load_rows(spec, spec.name, ["strongreject_dataset.csv", "strongreject_small_dataset.csv"])
    return [EvalItem(id=str(i), prompt=_col(r, ("forbidden_prompt",), spec.name, i), benchmark=spec.name,
                     category=str(r.get("category", "")), meta={"source": r.get("source")})
            for i, r in enumerate(rows)]
