"""`lora-vl study RECIPE [key=value ...] [--seeds 0 1 2] [--report-only]`: the study, with a claims report.

Per seed: VL adaptation with stage-2 snapshots (the ASR curve), post-hoc safety SFT and DPO on
top of it, the mixed (simultaneous) setting, a merge sweep of the VL and safety adapters plus a
dense (TIES/DARE) merge; every run evaluated on the suite; the safety-layer analysis of the LLM,
VL, safety-tuned and merged models. The aligned LLM alone is evaluated once. Then claims.json /
claims.md (each finding with its numbers, CIs and computed verdict) and the plots. Every stage
skips work already done (same recipe), and generations are cached, so a re-run only reports.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from lora_vl.artifacts import atomic_write_json, atomic_write_text
from lora_vl.errors import InputError
from lora_vl.handoff import read_manifest
from lora_vl.recipe import describe, load_recipe
from lora_vl.study import claims as C
from lora_vl.study import report, stages
from lora_vl.study.measure import Run, analyse, evaluate, load_suite
from lora_vl.study.recipe import StudyRecipe

RUNS = "runs.json"


class Timer:
    """Wall time of each stage, with the machine's 1-minute load average before and after (the
    machine may be shared: the load says how much of it the study had)."""

    def __init__(self):
        self.rows: list[dict] = []

    @contextlib.contextmanager
    def __call__(self, stage: str):
        load, t0 = os.getloadavg()[0], time.time()
        print(f"[study] {stage} ...", flush=True)
        yield
        self.rows.append({"stage": stage, "seconds": round(time.time() - t0, 2), "load_before": load,
                          "load_after": os.getloadavg()[0]})


def llm_run(r: StudyRecipe, suite, timer: Timer) -> dict:
    run = Run("llm", r.llm)
    out = Path(r.output_dir) / "shared" / "eval" / "llm"
    with timer("eval llm"):
        evaluate(run, suite, r.suite, out)
    return {**run.as_dict(), "results": str(out / "results.json")}


def train_seed(r: StudyRecipe, seed: int, d: Path, timer: Timer) -> tuple[list[Run], dict, dict]:
    """Train and merge everything of one seed; (runs to evaluate, safety run names, adapters by name)."""
    with timer(f"seed {seed}: adapt (stage 1 + stage 2 with snapshots)"):
        vl = stages.train_adapt(r.adapt, d / "adapt", seed, r.snapshots, r.snapshot_every)
    with timer(f"seed {seed}: mixed setting (safety data in stage 2)"):
        mixed = stages.train_mixed(r.adapt_mixed, d / "adapt_mixed", seed, vl.projector)
    safety = {}
    for path in (r.safety_sft, r.safety_dpo):
        with timer(f"seed {seed}: safety {Path(path).stem}"):
            method, adapter = stages.train_safety(path, d / f"safety_{Path(path).stem}", seed, vl.adapter)
        safety[method] = adapter
    if r.merge.safety not in safety:
        raise InputError(f"study recipe merge.safety={r.merge.safety!r}, but the safety recipes train "
                         f"{sorted(safety)}")
    with timer(f"seed {seed}: merges"):
        points = stages.merge_sweep(r.merge, vl.adapter, safety[r.merge.safety], d / "merge_sweep")
        dense = None if r.merge.dense_method == "none" else stages.merge_dense(
            r.merge, vl.adapter, safety[r.merge.safety], d / f"merge_{r.merge.dense_method}", seed)
    final_step = int(read_manifest(vl.adapter)["steps"])
    runs = [Run(f"vl@step-{step}", vl.base, [str(p)], step=step) for step, p in vl.snapshots if step != final_step]
    runs.append(Run("vl", vl.base, [str(vl.adapter)], step=final_step))
    names = {m: f"vl+{m}" for m in safety}
    runs += [Run(names[m], vl.base, [str(vl.adapter), str(a)]) for m, a in safety.items()]
    runs.append(Run("mixed", vl.base, [str(mixed)]))
    runs += [Run(f"merge@{w:g}", vl.base, [str(p)], merge_weight=w, is_merge=True) for w, p in points]
    if dense is not None:
        runs.append(Run(r.merge.dense_method, vl.base, [str(dense)], is_merge=True))
    adapters = {"vl": str(vl.adapter), **{m: str(a) for m, a in safety.items()}, "mixed": str(mixed)}
    return runs, names, adapters


def middle_merge(r: StudyRecipe, runs: list[Run]) -> Run:
    merges = [x for x in runs if x.merge_weight is not None]
    want = r.analysis.merge_weight if r.analysis.merge_weight is not None else merges[len(merges) // 2].merge_weight
    for x in merges:
        if x.merge_weight == want:
            return x
    raise InputError(f"study recipe analysis.merge_weight={want}: not a coefficient of the sweep "
                     f"{[x.merge_weight for x in merges]}")


def run_seed(r: StudyRecipe, seed: int, suite, llm: dict, timer: Timer) -> dict:
    d = Path(r.output_dir) / f"seed-{seed}"
    runs, names, adapters = train_seed(r, seed, d, timer)
    record = {"seed": seed, "runs": [llm], "safety": names, "merge_safety": r.merge.safety, "analysis": None}
    for run in runs:
        out = d / "eval" / run.name
        with timer(f"seed {seed}: eval {run.name}"):
            evaluate(run, suite, r.suite, out)
        record["runs"].append({**run.as_dict(), "results": str(out / "results.json")})
    if r.analysis is not None:
        by_name = {x.name: x for x in runs}
        merged = middle_merge(r, runs)
        models = [Run("llm", r.llm), by_name["vl"], *[by_name[n] for n in names.values()], by_name["mixed"], merged]
        if r.merge.dense_method != "none":
            models.append(by_name[r.merge.dense_method])
        weights = {**adapters, merged.name: merged.adapters[0]}
        with timer(f"seed {seed}: analyze"):
            analyse(r.analysis, r.suite, suite.generation.quantization, models, weights, d / "analysis")
        record["analysis"] = str(d / "analysis" / "analysis.json")
    record["timing"] = [t for t in timer.rows if t["stage"].startswith(f"seed {seed}:")]
    record["seconds"] = round(sum(t["seconds"] for t in record["timing"]), 1)
    atomic_write_json(d / RUNS, record)
    return record


def seed_data(record: dict) -> C.SeedData:
    """What the claims read from one seed's runs.json: summaries, analysis, curve, merge points."""
    runs, curve, merges = {}, [], []
    sweep = sorted((x["merge_weight"], x["name"]) for x in record["runs"] if x.get("merge_weight") is not None)
    for x in record["runs"]:
        runs[x["name"]] = report.summaries_only(json.loads(Path(x["results"]).read_text()))
        if x.get("step") is not None:
            curve.append((x["step"], x["name"]))
        if x.get("is_merge"):
            merges.append(x["name"])
    analysis = json.loads(Path(record["analysis"]).read_text()) if record.get("analysis") else None
    return C.SeedData(record["seed"], runs, analysis, sorted(curve), merges, [name for _, name in sweep])


def write_report(r: StudyRecipe, records: list[dict], timer_rows: list[dict], command: str) -> dict:
    out = Path(r.output_dir)
    seeds = [seed_data(rec) for rec in records]
    claims = C.study_claims(seeds[0], records[0]["safety"], records[0]["merge_safety"])
    results = C.evaluate(claims, seeds)
    plots = [("ASR, over-refusal and helpfulness along stage 2", report.plot_curve(seeds, out / "asr_over_steps.png")),
             ("safety vs helpfulness, with the merge sweep",
              report.plot_pareto(seeds, out / "pareto.png", ["vl", *records[0]["safety"].values(), "mixed"]))]
    if records[0].get("analysis"):
        a = Path(records[0]["analysis"]).parent
        plots += [(f"layer analysis, seed {records[0]['seed']}: {n}", a / f"{n}.png")
                  for n in ("separation", "refusal_direction", "delta_w") if (a / f"{n}.png").is_file()]
    per_seed = {rec["seed"]: rec.get("seconds") for rec in records}
    suite_name = json.loads(Path(records[0]["runs"][0]["results"]).read_text())["suite"]
    meta = {"title": f"the {suite_name!r} suite", "command": command,
            "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seeds": [s.seed for s in seeds],
            "setup": setup_text(records), "timing": timer_rows,
            "machine": f"{os.cpu_count()} CPU cores visible; seconds per seed (training + evaluation + analysis): "
                       f"{per_seed}.",
            "plots": [(t, os.path.relpath(p, out)) for t, p in plots], "agreement": judge_agreement(records[0])}
    doc = {"kind": "study_claims", "recipe": dataclasses.asdict(r), "meta": meta, "claims": results,
           "runs": {rec["seed"]: rec for rec in records}}
    atomic_write_json(out / "claims.json", doc)
    atomic_write_text(out / "claims.md", report.render_claims(results, seeds, meta))
    return doc


def judge_agreement(record: dict) -> list[dict]:
    """Per run and benchmark, how often two judges agree and Cohen's kappa (one seed's runs)."""
    rows = []
    for x in record["runs"]:
        for b in json.loads(Path(x["results"]).read_text())["benchmarks"]:
            rows += [{"run": x["name"], "benchmark": b["name"], **a} for a in b["agreement"]]
    return rows


def setup_text(records: list[dict]) -> str:
    """Which judges and how many items stand behind the numbers (read from a results file)."""
    res = json.loads(Path(records[0]["runs"][1]["results"]).read_text())
    parts = [f"{cat}: {s['metric']} over {', '.join(s['benchmarks'])} (n={s['n']}, judge {', '.join(s['judges'])})"
             for cat, s in res["summary"].items() if cat != "safety"]
    return "Measured per run: " + "; ".join(parts) + "."


def run_study(r: StudyRecipe, command: str, report_only: bool = False) -> dict:
    out = Path(r.output_dir)
    timer = Timer()
    if report_only:
        records = [json.loads((out / f"seed-{s}" / RUNS).read_text()) for s in r.seeds]
    else:
        suite = load_suite(r.suite, r.eval_overrides, out / "generations.jsonl")
        llm = llm_run(r, suite, timer)
        records = [run_seed(r, s, suite, llm, timer) for s in r.seeds]
        atomic_write_json(out / "timing.json", timer.rows)
    return write_report(r, records, timer.rows or [t for rec in records for t in rec.get("timing", [])], command)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="lora-vl study", formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description=__doc__,
                                 epilog="recipe keys (override any with key.sub=value):\n" + describe(StudyRecipe))
    ap.add_argument("recipe", help="study recipe YAML, e.g. recipes/toy/study.yaml")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. snapshot_every=20")
    ap.add_argument("--seeds", nargs="+", type=int, help="training seeds (replaces the recipe's `seeds`)")
    ap.add_argument("--report-only", action="store_true", help="rebuild claims and plots from finished runs")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own; on a busy shared "
                    "CPU, 1 can be much faster for the toy's small models)")
    a = ap.parse_intermixed_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    overrides = list(a.overrides) + ([f"seeds={json.dumps(a.seeds)}"] if a.seeds else [])
    recipe = load_recipe(StudyRecipe, a.recipe, overrides)
    command = "lora-vl study " + " ".join(argv)
    doc = run_study(recipe, command, a.report_only)
    for c in doc["claims"]:
        print(f"{c['id']:>16}  {c['verdict']:<12}  {c['statement']}")
    print(f"wrote {Path(recipe.output_dir) / 'claims.md'} and claims.json")
    return 0
