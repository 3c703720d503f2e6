"""`lora-vl report RESULTS.json ... --out DIR`: runs side by side (markdown) and a safety vs
helpfulness plot (PNG, matplotlib Agg)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lora_vl.artifacts import atomic_write_text
from lora_vl.errors import InputError
from lora_vl.evaluation.results import fmt, fmt_ci
from lora_vl.evaluation.vocabulary import summary_keys
from lora_vl.plots import Figure, save_png


def run_label(r: dict) -> str:
    m = r["model"]
    names = [Path(m["base"]).name] + [Path(a).parent.name if Path(a).name == "adapter" else Path(a).name
                                      for a in m["adapters"]]
    return "+".join(names) + f" ({m['fingerprint'][:6]})"


def load_results(paths: list[str]) -> list[dict]:
    out = []
    for p in paths:
        try:
            out.append(json.loads(Path(p).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"{p}: not a readable results JSON: {e}") from e
        if "benchmarks" not in out[-1] or "summary" not in out[-1]:
            raise InputError(f"{p}: not a lora-vl eval results file (no 'benchmarks'/'summary')")
    return out


def rows(results: list[dict]) -> list[tuple]:
    """(category, benchmark, metric, judge) keys of overall metrics, in first-seen order."""
    keys = []
    for r in results:
        for b in r["benchmarks"]:
            for m in b["metrics"]:
                key = (b["category"], b["name"], m["metric"], m["judge"])
                if m["group"] is None and key not in keys:
                    keys.append(key)
    return keys


def cell(r: dict, key: tuple) -> str:
    cat, name, metric, judge = key
    for b in r["benchmarks"]:
        for m in b["metrics"]:
            if (b["category"], b["name"], m["metric"], m["judge"], m["group"]) == (*key, None):
                skipped = f" skipped={b['n_skipped']}" if b.get("n_skipped") else ""
                return f"{fmt(m['value'])} {fmt_ci(m['ci'])} n={m['n']}{skipped}"
    return "–"


def violation_rows(results: list[dict]) -> list[tuple]:
    """(benchmark, judge, category) keys of per-violated-category ASR (Llama Guard codes)."""
    keys = []
    for r in results:
        for b in r["benchmarks"]:
            for m in b["metrics"]:
                key = (b["name"], m["judge"], m["group"])
                if m["metric"] == "asr_by_violation" and key not in keys:
                    keys.append(key)
    return keys


def violation_cell(r: dict, key: tuple) -> str:
    for b in r["benchmarks"]:
        for m in b["metrics"]:
            if m["metric"] == "asr_by_violation" and (b["name"], m["judge"], m["group"]) == key:
                return f"{fmt(m['value'])} {fmt_ci(m['ci'])} n={m['n']}"
    return "–"


def render(results: list[dict]) -> str:
    labels = [run_label(r) for r in results]
    head = "| category | benchmark | metric | judge | " + " | ".join(labels) + " |"
    lines = ["# Evaluation runs side by side", "", "Values: estimate [95% CI] n.", "", head,
             "|" + "---|" * (4 + len(labels))]
    for key in rows(results):
        lines.append("| " + " | ".join(key) + " | " + " | ".join(cell(r, key) for r in results) + " |")
    lines += ["", "## Summary (pooled primary metric)", "", "| category | " + " | ".join(labels) + " |",
              "|" + "---|" * (1 + len(labels))]
    cats = [c for c in summary_keys() if any(c in r["summary"] for r in results)]
    for c in cats:
        vals = [f"{r['summary'][c]['metric']} {fmt(r['summary'][c]['value'])} {fmt_ci(r['summary'][c]['ci'])} "
                f"({', '.join(r['summary'][c]['judges'])})" if c in r["summary"] else "–" for r in results]
        lines.append(f"| {c} | " + " | ".join(vals) + " |")
    failed = [(label, b["failure"]) for label, r in zip(labels, results) for b in r["benchmarks"]
              if b.get("failure")]
    if failed:
        lines += ["", "## Failed benchmarks (too many skipped items; their numbers are not used)", ""]
        lines += [f"- {label}: {failure}" for label, failure in failed]
    violations = violation_rows(results)
    if violations:
        lines += ["", "## Attack success by violated category (judge's own codes)", "",
                  "| benchmark | judge | category | " + " | ".join(labels) + " |", "|" + "---|" * (3 + len(labels))]
        for key in violations:
            lines.append("| " + " | ".join(key) + " | " + " | ".join(violation_cell(r, key) for r in results) + " |")
    return "\n".join(lines) + "\n"


def err_bar(m: dict) -> list[list[float]]:
    """Asymmetric CI bar; clipped at 0 against float round-off of the interval ends."""
    return [[max(0.0, m["value"] - m["ci"][0])], [max(0.0, m["ci"][1] - m["value"])]]


def plot(results: list[dict], out: Path) -> bool:
    """ASR (pooled safety) against helpfulness accuracy, with 95% CI bars; False if no run has both."""
    pts = [(run_label(r), r["summary"]["helpfulness"], r["summary"]["safety"]) for r in results
           if "helpfulness" in r["summary"] and "safety" in r["summary"]]
    if not pts:
        return False
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for label, h, s in pts:
        ax.errorbar(h["value"], s["value"], xerr=err_bar(h), yerr=err_bar(s), fmt="o", capsize=3, label=label)
    ax.set_xlabel("helpfulness: accuracy (pooled)")
    ax.set_ylabel("safety: attack success rate (pooled, lower is safer)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_png(fig, out, dpi=120)
    return True


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="lora-vl report", description=__doc__)
    ap.add_argument("results", nargs="+", help="results.json files written by `lora-vl eval`")
    ap.add_argument("--out", required=True, help="output folder for report.md and safety_vs_helpfulness.png")
    a = ap.parse_args(argv)
    results = load_results(a.results)
    out = Path(a.out)
    atomic_write_text(out / "report.md", render(results))
    plotted = plot(results, out / "safety_vs_helpfulness.png")
    print(f"wrote {out / 'report.md'}" + (f" and {out / 'safety_vs_helpfulness.png'}" if plotted else
                                          " (no plot: no run has both safety and helpfulness)"))
    return 0
