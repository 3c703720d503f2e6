"""Memory-planner benchmark: how long `lora-vl plan` takes on this machine for a 7B-shaped recipe,
and the breakdown it predicts. Prints measured numbers (wall time, the planner's own peak RSS,
the machine's load) beside the plan's output; nothing here is a GPU measurement.

  python bench/bench_plan.py                                   # stage 2 of the paper adapt recipe
  python bench/bench_plan.py --recipe recipes/paper/adapt_llama2_chat_7b.yaml --plan-args "--stage 1"
  python bench/bench_plan.py ... --save PLAN.json              # keep the plan, then:
  python bench/bench_plan.py --table PLAN.json ...             # "what fits where" from saved plans

The plan runs in a child process (`lora-vl plan ... --json`), so its time and peak RSS are the
planner's alone. Target: ≤ 10 min on 2 CPU cores for the 7B stage-2 plan.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 2 ** 30
CARDS = ("12", "16", "24", "80")


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpus": os.cpu_count(), "cpu": cpu, "load_avg_1m": round(os.getloadavg()[0], 2)}


def run_plan(recipe: str, plan_args: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plan.json"
        cmd = [sys.executable, "-m", "lora_vl.cli", "plan", recipe, *shlex.split(plan_args), "--json", str(out)]
        before = machine()
        t0 = time.time()
        res = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        if res.returncode:
            sys.exit(f"plan failed ({res.returncode}):\n{res.stderr[-3000:]}")
        print(res.stdout)
        return {"command": " ".join(cmd[2:]), "wall_s": round(wall, 1),
                "planner_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20, 2),
                "machine_before": before, "load_avg_1m_after": round(os.getloadavg()[0], 2),
                "plan": json.loads(out.read_text())}


def summary(r: dict) -> dict:
    p = r["plan"]
    pred = p["prediction"]
    return {"wall_s": r["wall_s"], "planner_peak_rss_gib": r["planner_peak_rss_gib"],
            "machine": r["machine_before"], "load_avg_1m_after": r["load_avg_1m_after"],
            "measured_peaks_gib": {m["layers"]: round(m["peak_bytes"] / GIB, 3) for m in p["measured"]},
            "measured_seconds": {m["layers"]: m["seconds"] for m in p["measured"]},
            "fit_residual": round(p["fit_residual"], 5),
            "predicted_breakdown_gib": {k: round(v / GIB, 3) for k, v in
                                        sorted(pred["breakdown"].items(), key=lambda kv: -kv[1])},
            "predicted_tracked_gib": round(pred["allocator_bytes"] / GIB, 2),
            "predicted_card_gib": round(pred["card_bytes"] / GIB, 2), "peak_phase": pred["phase"]}


def cell(fits: dict, length: int, wanted: int, what: str) -> str:
    best = fits.get(str(length), 0)
    if best == 0:
        return "no"
    return f"yes (≤ {best})" if best >= wanted else f"{what} ≤ {best}"


MEMORY_KEYS = ("frozen_dtype", "trained_dtype", "loss_chunk_tokens", "offload_checkpoints")  # in label order


def memory_options(w: dict) -> str:
    """The plan's memory options that differ from today's defaults (train/config.py), briefly
    (training stages only: evaluation has none)."""
    from lora_vl.train.config import ModelConfig
    from lora_vl.train.stage import SILENT_DEFAULTS  # what runs (and plans) made before a key computed

    if w.get("kind") == "eval":
        return ""
    parts = []
    for key in MEMORY_KEYS:
        value = w.get(key, SILENT_DEFAULTS[key])
        if value == getattr(ModelConfig, key):
            continue
        if key == "loss_chunk_tokens":
            parts.append(f"loss chunk {value}" if value else "full-logits loss")
        elif key == "offload_checkpoints":
            parts.append("offload" if value else "no offload")
        else:
            parts.append(f"{key.split('_')[0]} {value}")
    return f" + {', '.join(parts)}" if parts else ""


def table(paths: list[str]) -> str:
    """Markdown: one row per plan; per card, whether the recipe's micro-batch fits and the largest."""
    lines = ["| recipe (work) | micro-batch × length | predicted peak (≈ max_memory_allocated) | predicted card need | "
             + " | ".join(f"{c} GB" for c in CARDS) + " |", "|---" * (4 + len(CARDS)) + "|"]
    for path in paths:
        p = json.loads(Path(path).read_text())
        w, pred = p["workload"], p["prediction"]
        what = "batch" if w["kind"] == "eval" else "micro-batch"
        size = f"{w['micro_batch']}{' pairs' if w['kind'] == 'dpo' else ''} × {w['length']}" \
            + (f" (+{w['new_tokens']} new)" if w["kind"] == "eval" else "")
        cells = [cell(p["fits"].get(c, {}), w["length"], w["micro_batch"], what) for c in CARDS]
        work = f"{Path(p['recipe']).name} ({w['kind']}){memory_options(w)}"
        lines.append(f"| {work} | {size} | {pred['allocator_bytes'] / GIB:.1f} GiB | "
                     f"{pred['card_bytes'] / GIB:.1f} GiB | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/paper/adapt_llama2_chat_7b.yaml")
    ap.add_argument("--plan-args", default="", help="extra arguments for `lora-vl plan`, quoted")
    ap.add_argument("--table", nargs="+", metavar="PLAN_JSON", help="render saved plans as a markdown table")
    ap.add_argument("--save", metavar="PLAN_JSON", help="also keep the plan (for --table)")
    a = ap.parse_args()
    if a.table:
        print(table(a.table))
        return 0
    r = run_plan(a.recipe, a.plan_args)
    if a.save:
        Path(a.save).write_text(json.dumps(r["plan"], indent=1))
    print(json.dumps(summary(r), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
