"""claims.md and the study's plots (ASR over stage 2, safety vs helpfulness with the merge sweep)."""
from __future__ import annotations

from pathlib import Path

from lora_vl.evaluation.results import summarize
from lora_vl.evaluation.vocabulary import METRICS, summary_keys
from lora_vl.plots import Figure, save_png
from lora_vl.study.claims import SeedData

def fmt(m: dict | None, digits: int = 3) -> str:
    if not m or m.get("value") is None:
        return "–"
    ci = m.get("ci")
    ci_txt = f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci and ci[0] == ci[0] else ""
    n = f" n={m['n']}" if m.get("n") is not None else ""
    return f"{m['value']:.{digits}f}{ci_txt}{n}"


def _comparison_text(c: dict) -> str:
    op = ">" if c["direction"] == "greater" else "<"
    note = f" ({c['note']})" if c.get("note") else ""
    return f"{c['a']['ref']} {fmt(c['a'])} {op}? {c['b']['ref']} {fmt(c['b'])} → {c['verdict']}{note}"


def _spread_text(entry: dict) -> str:
    parts = []
    for i, sp in enumerate(entry.get("spread") or []):
        if sp["a"] and sp["b"] and sp["a"]["n_seeds"] > 1:
            parts.append(f"comparison {i + 1}: {sp['a']['mean']:.3f} ± {sp['a']['sd']:.3f} vs "
                         f"{sp['b']['mean']:.3f} ± {sp['b']['sd']:.3f} (mean ± sd over {sp['a']['n_seeds']} seeds)")
    return "<br>".join(parts)


def render_claims(claims: list[dict], seeds: list[SeedData], meta: dict) -> str:
    lines = [f"# The study's claims, measured: {meta['title']}", "",
             f"Made by `{meta['command']}` on {meta['created']} (seeds {meta['seeds']}). {meta['setup']}", "",
             "**Verdicts are computed, not chosen.** Each comparison puts two measured numbers side by side "
             "with their 95% intervals: *held* when the intervals separate in the claimed direction, "
             "*not held* when they separate the other way, *inconclusive* when they overlap or a number is "
             "missing. A claim of several comparisons needs all of them; the merge claim needs one merge "
             "point that wins both of its comparisons. Over several seeds a claim is held (not held) only "
             "if it is in every seed.", "",
             "| claim | finding (paper.md) | what is measured | verdict |", "|---|---|---|---|"]
    for c in claims:
        per_seed = ", ".join(p["verdict"] for p in c["per_seed"])
        lines.append(f"| {c['id']} | {c['finding']} | {c['statement']} | **{c['verdict']}**"
                     f"{f' (seeds: {per_seed})' if len(c['per_seed']) > 1 else ''} |")
    lines += ["", "## The numbers behind each verdict", "",
              "Each cell: run: metric, estimate [95% CI] n, for both sides of the comparison.", "",
              "| claim | numbers, per seed | verdict |", "|---|---|---|"]
    for c in claims:
        cells = []
        for p in c["per_seed"]:
            alt = p["alternatives"][p["shown"]]
            cells.append(f"seed {p['seed']}: " + "; ".join(_comparison_text(x) for x in alt["comparisons"])
                         + f" ⇒ **{p['verdict']}**")
        spread = _spread_text(c)
        lines.append(f"| {c['id']} | {'<br>'.join(cells)}{'<br>' + spread if spread else ''} | **{c['verdict']}** |")
    columns = summary_keys()
    for s in seeds:
        lines += ["", f"## Runs, seed {s.seed}", "", "| run | " + " | ".join(METRICS[k].column for k in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for name, summary in s.runs.items():
            lines.append(f"| {name} | " + " | ".join(fmt(summary.get(k)) for k in columns) + " |")
    if meta.get("agreement"):
        lines += ["", f"## Judge agreement, seed {seeds[0].seed}", "",
                  "Two judges on the same answers: how often they agree and Cohen's kappa (– when one judge "
                  "gives a single label throughout, so chance agreement is 1). A refusal matcher counts every "
                  "non-refusal as an attack; the ground-truth judge counts only harmful content.", "",
                  "| run | benchmark | judges | agreement [95% CI] | kappa | n |", "|---|---|---|---|---|---|"]
        for a in meta["agreement"]:
            kappa = "–" if a["kappa"] is None else f"{a['kappa']:.2f}"
            lines.append(f"| {a['run']} | {a['benchmark']} | {' vs '.join(a['judges'])} | {a['agreement']:.3f} "
                         f"[{a['agreement_ci'][0]:.3f}, {a['agreement_ci'][1]:.3f}] | {kappa} | {a['n']} |")
    lines += ["", "## Plots", ""] + [f"![{t}]({p})" for t, p in meta["plots"]]
    if meta.get("timing"):
        lines += ["", "## Time", "", meta["machine"], "", "| stage | seconds | load average (1 min) before → after |",
                  "|---|---|---|"]
        for t in meta["timing"]:
            lines.append(f"| {t['stage']} | {t['seconds']:.1f} | {t['load_before']:.2f} → {t['load_after']:.2f} |")
    return "\n".join(lines) + "\n"


def _errorbar(ax, xs, ms, **kw):
    ys = [m["value"] for m in ms]
    lo = [max(0.0, m["value"] - m["ci"][0]) for m in ms]
    hi = [max(0.0, m["ci"][1] - m["value"]) for m in ms]
    return ax.errorbar(xs, ys, yerr=[lo, hi], capsize=2, marker="o", ms=3, **kw)


def plot_curve(seeds: list[SeedData], path: Path) -> Path:
    """ASR and refusal of harmful asks (text, multimodal), over-refusal and helpfulness of the VL
    adapter along stage 2."""
    panels = [("text_safety", "text ASR"), ("mm_safety", "multimodal ASR"), ("text_refusal", "harmful text refused"),
              ("mm_refusal", "harmful image refused"), ("over_refusal", "over-refusal"), ("helpfulness", "helpfulness")]
    fig = Figure(figsize=(4 * len(panels) // 2, 6.4))
    axes = fig.subplots(2, len(panels) // 2, sharex=True)
    axes = axes.ravel()
    for ax, (key, title) in zip(axes, panels):
        for s in seeds:
            pts = [(step, s.runs[name][key]) for step, name in s.curve if key in s.runs.get(name, {})]
            if pts:
                _errorbar(ax, [p[0] for p in pts], [p[1] for p in pts], label=f"VL adapter, seed {s.seed}")
            llm, final = s.runs.get("llm", {}).get(key), s.runs.get("vl", {}).get(key)
            if llm and final and sorted(llm.get("benchmarks", [])) == sorted(final.get("benchmarks", [])):
                _errorbar(ax, [0], [llm], color="black", label="aligned LLM (step 0)" if s is seeds[0] else None)
        ax.set(title=title, xlabel="stage-2 optimizer step", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return save_png(fig, path)


PARETO_PANELS = [  # (x, y): the safety-helpfulness trade-off, with safety as ASR and as refusal
    ("helpfulness", "safety"), ("helpfulness", "harmful_non_refusal"), ("over_refusal", "harmful_non_refusal")]
AXIS = {"helpfulness": "helpfulness: accuracy (pooled)", "over_refusal": "over-refusal of benign look-alikes",
        "safety": "ASR, text + multimodal (lower is safer)",
        "harmful_non_refusal": "harmful asks not refused (lower is safer)"}


def _metric(run: dict, key: str) -> dict | None:
    """A summary metric; 'harmful_non_refusal' is 1 − the pooled refusal rate of the harmful asks."""
    if key != "harmful_non_refusal":
        return run.get(key)
    m = run.get("harmful_refusal")
    return m and {**m, "value": 1 - m["value"], "ci": [1 - m["ci"][1], 1 - m["ci"][0]]}


def plot_pareto(seeds: list[SeedData], path: Path, fixed: list[str]) -> Path:
    """Every run in each trade-off plane (95% CIs); the merge sweep as a dashed line."""
    fig = Figure(figsize=(5.2 * len(PARETO_PANELS), 4.8))
    axes = fig.subplots(1, len(PARETO_PANELS))
    colors: dict = {}

    def point(ax, s: SeedData, xk: str, yk: str, name: str, **kw):
        x, y = _metric(s.runs.get(name, {}), xk), _metric(s.runs.get(name, {}), yk)
        if x and y:
            color = colors.setdefault(name, f"C{len(colors) % 10}")
            ax.errorbar(x["value"], y["value"], xerr=[[x["value"] - x["ci"][0]], [x["ci"][1] - x["value"]]],
                        yerr=[[y["value"] - y["ci"][0]], [y["ci"][1] - y["value"]]], fmt="o", capsize=2,
                        color=color, label=name if s is seeds[0] else None, **kw)

    for ax, (xk, yk) in zip(axes, PARETO_PANELS):
        for s in seeds:
            for name in fixed:
                point(ax, s, xk, yk, name)
            sweep = [(_metric(s.runs[p], xk), _metric(s.runs[p], yk)) for p in s.sweep]
            sweep = [(x["value"], y["value"]) for x, y in sweep if x and y]
            if sweep:
                ax.plot([x for x, _ in sweep], [y for _, y in sweep], "--", color="grey", lw=1,
                        label="merge sweep" if s is seeds[0] else None)
            for p in s.merge_points:
                point(ax, s, xk, yk, p, alpha=0.8)
        ax.set(xlabel=AXIS[xk], ylabel=AXIS[yk], xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle("safety vs helpfulness and over-refusal (95% CIs)")
    return save_png(fig, path)


def summaries_only(results: dict) -> dict:
    """A run's results.json reduced to what the claims read: the pooled summary per category."""
    summary = summarize(results["benchmarks"])  # from the per-benchmark numbers: old results gain new pools
    return {k: v for k, v in summary.items() if k in summary_keys()}
