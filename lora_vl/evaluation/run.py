"""`lora-vl eval`: read benchmarks -> answers (cache first) -> judges -> metrics -> results files.

Under a multi-process launcher (`accelerate launch` / `torchrun`) each process generates every
N-th missing item into its own shard of the cache; rank 0 merges the shards into the one JSONL
cache, judges and writes the results — the same results as one process (greedy decoding, each
answer independent of its batch-mates). Shards left by a killed run are merged on the next one.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Callable

from accelerate.utils import gather_object

from lora_vl import distributed as dist
from lora_vl.artifacts import atomic_write_json, atomic_write_text
from lora_vl.evaluation.cache import GenerationCache
from lora_vl.handoff import check_output
from lora_vl.evaluation.judges import build_judge
from lora_vl.evaluation.model_io import check_model_inputs, load_eval_model, model_fingerprint
from lora_vl.evaluation.readers import read_benchmark, study_category
from lora_vl.evaluation.respond import cached_answers, generate_missing, missing
from lora_vl.evaluation.results import benchmark_result, render_markdown, skip_groups, summarize
from lora_vl.evaluation.suite import JudgeSpec, Suite, judge_specs


@dataclasses.dataclass
class Bench:
    spec: object
    category: str
    items: list
    max_new: int
    answers: dict = dataclasses.field(default_factory=dict)
    errors: list = dataclasses.field(default_factory=list)
    status: str = "ok"
    n_read: int = 0        # items read (after subsetting); the answered ones stay in `items`
    n_skipped: int = 0     # read but not answered (unreadable image, ...)
    failure: str | None = None


def read_all(suite: Suite, is_vlm: bool) -> list[Bench]:
    benches = []
    for spec in suite.benchmarks:
        items = read_benchmark(spec, suite.seed)
        b = Bench(spec, study_category(spec), items, spec.max_new_tokens or suite.generation.max_new_tokens)
        if not is_vlm and any(it.has_image for it in items):
            b.status = "skipped: image benchmark, but the model is a text-only LLM"
            print(f"note: {spec.name}: {b.status}", file=sys.stderr)
            b.items = []
        b.n_read = len(b.items)
        benches.append(b)
    return benches


def check_skips(suite: Suite, b: Bench) -> None:
    """Say once per benchmark how many items were skipped and why; past `max_skipped` the
    benchmark is 'failed' and keeps no items, so no number rests on part of it."""
    n_skipped = b.n_skipped = b.n_read - len(b.items)
    if not n_skipped:
        return
    allowed = b.spec.max_skipped if b.spec.max_skipped is not None else suite.max_skipped
    reasons = "; ".join(f"{g['count']} {g['reason']} (items {', '.join(g['items'])}"
                        f"{', ...' if g['count'] > len(g['items']) else ''})" for g in skip_groups(b.errors))
    what = f"{b.spec.name}: {n_skipped} of {b.n_read} items skipped: {reasons}"
    if n_skipped > allowed * b.n_read:
        b.status, b.items = "failed", []
        b.failure = f"{what}. Over max_skipped {allowed:g} ({int(allowed * b.n_read)} items): numbers not used."
        print(f"error: {b.failure} Example: {b.errors[0]['error'] if b.errors else '-'}", file=sys.stderr)
    else:
        print(f"warning: {what} (within max_skipped {allowed:g})", file=sys.stderr)


def load_model(suite: Suite, base: str, adapters: list[str], device):
    if suite.generation.backend == "vllm":
        from lora_vl.evaluation.vllm_backend import load_engine
        return load_engine(base, adapters, suite.generation)
    return load_eval_model(base, adapters, suite.generation, device=device)


def shard_path(cache: GenerationCache, rank: int) -> Path:
    return cache.path.with_name(f"{cache.path.name}.rank{rank}")


def merge_shards(cache: GenerationCache) -> GenerationCache:
    """Rank 0 appends every process's cache shard to the cache (then deletes it); all reload it."""
    dist.barrier()  # every process has finished writing its shard
    if dist.is_main():
        for shard in sorted(cache.path.parent.glob(f"{cache.path.name}.rank*")):
            records = list(GenerationCache(shard).records.values())
            if records:
                cache.append(records)
            shard.unlink()
    dist.barrier()
    return GenerationCache(cache.path)


def answer_all(suite, benches, base, adapters, fp, cache, device, on_batch) -> GenerationCache:
    rank, world = dist.rank(), dist.world_size()
    if world > 1:
        cache = merge_shards(cache)
    mine = cache if world == 1 else GenerationCache(shard_path(cache, rank))
    em = None
    for b in benches:
        todo = missing(cache, fp, b.items, b.max_new)[rank::world]
        if todo:
            if em is None:
                em = load_model(suite, base, adapters, device)
                if em.fingerprint != fp:
                    raise RuntimeError(f"fingerprint changed while loading {base}: {fp} -> {em.fingerprint}")
            print(f"{b.spec.name}: generating {len(todo)} of {len(b.items)} answers", file=sys.stderr)
            b.errors = generate_missing(em, mine, todo, batch_size=suite.generation.batch_size,
                                        max_new_tokens=b.max_new, on_batch=on_batch,
                                        backend=suite.generation.backend)
    if world > 1:
        cache = merge_shards(cache)
        for b, errors in zip(benches, zip(*gather_object([[b.errors for b in benches]]))):
            b.errors = [e for rank_errors in errors for e in rank_errors]
    for b in benches:
        b.answers = cached_answers(cache, fp, b.items, b.max_new)
        b.items = [it for it in b.items if it.id in b.answers]
        if dist.is_main():
            check_skips(suite, b)
    return cache


def judge_all(suite: Suite, benches: list[Bench]) -> dict[tuple[str, str], list]:
    """{(judge name, benchmark name): verdicts}; each judge model is loaded once, then freed."""
    work: dict[str, tuple[JudgeSpec, list[Bench]]] = {}
    for b in benches:
        for js in judge_specs(suite, b.spec, b.category):
            work.setdefault(js.name, (js, []))[1].append(b)
    out = {}
    for name, (js, bs) in work.items():
        judge = build_judge(js)
        items = [it for b in bs for it in b.items]
        answers = [b.answers[it.id] for b in bs for it in b.items]
        verdicts = judge.judge(items, answers) if items else []
        judge.close()
        pos = 0
        for b in bs:
            out[(name, b.spec.name)] = verdicts[pos:pos + len(b.items)]
            pos += len(b.items)
    return out


def run_suite(suite: Suite, base: str, adapters: list[str], out_dir: str | Path, *, device=None,
              suite_path: str | None = None, on_batch: Callable[[list[str]], None] | None = None) -> dict | None:
    """Evaluate; the results dict (None on processes other than rank 0)."""
    out_dir = check_output(out_dir, [("--model", base), *[("--adapter", a) for a in adapters],
                                     *[(f"benchmark {b.name} source", b.source) for b in suite.benchmarks]],
                           command="eval")
    is_vlm = check_model_inputs(base, adapters, suite.generation)
    fp = model_fingerprint(base, adapters, suite.generation.revision, suite.generation.quantization)
    cache = GenerationCache(suite.cache or out_dir / "generations.jsonl")
    benches = read_all(suite, is_vlm)
    cache = answer_all(suite, benches, base, adapters, fp, cache, device, on_batch)
    if not dist.is_main():
        return None  # rank 0 judges and writes the results
    verdicts = judge_all(suite, benches)
    results = {
        "suite": suite.name, "suite_file": suite_path, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": suite.seed, "model": {"base": base, "adapters": list(adapters), "fingerprint": fp,
                                      "quantization": suite.generation.quantization, "is_vlm": is_vlm},
        "generation": dataclasses.asdict(suite.generation), "cache": str(cache.path),
        "benchmarks": [benchmark_result(b, suite, verdicts) for b in benches],
    }
    results["summary"] = summarize(results["benchmarks"])
    write_outputs(out_dir, results, benches, verdicts)
    return results


def write_outputs(out_dir: Path, results: dict, benches: list[Bench], verdicts: dict) -> None:
    atomic_write_json(out_dir / "results.json", results)
    atomic_write_text(out_dir / "results.md", render_markdown(results))
    lines = []
    for (judge, bench), vs in verdicts.items():
        b = next(x for x in benches if x.spec.name == bench)
        for it, v in zip(b.items, vs):
            lines.append(json.dumps({"judge": judge, "benchmark": bench, "id": it.id, "unsafe": v.unsafe,
                                     "refused": v.refused, "parsed": v.parsed, "categories": v.categories,
                                     "raw": v.raw[:2000]}))
    atomic_write_text(out_dir / "judgments.jsonl", "\n".join(lines) + ("\n" if lines else ""))
