"""Results JSON for one run: every number beside its judge, subset size, seed and 95% CI; and
its markdown rendering."""
from __future__ import annotations

from itertools import combinations

from lora_vl.evaluation.metrics import agreement, bootstrap, mme_score, rate, wilson
from lora_vl.evaluation.scoring import score_item, scorer_name
from lora_vl.evaluation.suite import judge_specs
from lora_vl.evaluation.vocabulary import METRICS, PRIMARY_METRIC

FLAG = {"asr": "unsafe", "refusal_rate": "refused"}


def _grouped(metric: str, items, flags, info: dict) -> list[dict]:
    """The overall rate, then one per item category (when there are several)."""
    out = [rate(flags, metric=metric, group=None, **info)]
    cats = sorted({it.category for it in items})
    if len(cats) > 1:
        for c in cats:
            out.append(rate([f for it, f in zip(items, flags) if it.category == c], metric=metric,
                            group=c, **{**info, "primary": False}))
    return out


def safety_metrics(b, suite, verdicts, info) -> tuple[list[dict], list[dict]]:
    metric = PRIMARY_METRIC[b.category]
    metrics, flags_by_judge, refusal_judged = [], {}, False
    for i, js in enumerate(judge_specs(suite, b.spec, b.category)):
        flags = [getattr(v, FLAG[metric]) for v in verdicts[(js.name, b.spec.name)]]
        if all(f is None for f in flags) and any(v.parsed for v in verdicts[(js.name, b.spec.name)]):
            continue  # this judge does not measure this quantity (e.g. refusal from Llama Guard)
        flags_by_judge[js.name] = flags
        metrics += _grouped(metric, b.items, flags, {**info, "judge": js.name, "primary": i == 0})
        if metric == "asr":
            metrics += violation_metrics(verdicts[(js.name, b.spec.name)], {**info, "judge": js.name})
            metrics += harmful_refusal(b.items, verdicts[(js.name, b.spec.name)],
                                       {**info, "judge": js.name, "primary": not refusal_judged})
            refusal_judged = refusal_judged or any(m["metric"] == "refusal_rate" for m in metrics)
    agree = [{"judges": [a, c], "metric": metric, **agreement(flags_by_judge[a], flags_by_judge[c])}
             for a, c in combinations(flags_by_judge, 2)]
    return metrics, agree


def harmful_refusal(items, verdicts, info) -> list[dict]:
    """How often harmful asks are refused, for judges that say so (refusal matcher, toy oracle):
    the behaviour safety alignment trains, apart from whether a non-refusal is harmful. Primary
    for the first judge that measures it."""
    flags = [v.refused for v in verdicts]
    if all(f is None for f in flags):
        return []
    return _grouped("refusal_rate", items, flags, info)


def violation_metrics(verdicts, info) -> list[dict]:
    """ASR per violated category, for judges that name them (Llama Guard's S1..S14): the share of
    judged answers flagged unsafe with that category (an answer may count under several)."""
    codes = sorted({c for v in verdicts for c in v.categories}, key=lambda c: (len(c), c))
    return [rate([None if v.unsafe is None else bool(v.unsafe and c in v.categories) for v in verdicts],
                 metric="asr_by_violation", group=c, **{**info, "primary": False}) for c in codes]


def helpfulness_metrics(b, suite, info) -> list[dict]:
    scored = [score_item(it, b.answers[it.id]) for it in b.items]
    correct = [ok for ok, _ in scored]
    judge = scorer_name(b.items[0]) if b.items else "match"
    metrics = _grouped("accuracy", b.items, correct, {**info, "judge": judge, "primary": True})
    metrics[0]["unparsed_answers"] = sum(not parsed for _, parsed in scored)
    if b.spec.reader == "mme":
        metrics += mme_metrics(b, correct, suite, {**info, "judge": judge})
    return metrics


def mme_metrics(b, correct, suite, info) -> list[dict]:
    rows = [(it.category, it.meta["group"], ok) for it, ok in zip(b.items, correct)]
    groups: dict = {}
    for cat, g, ok in rows:
        groups.setdefault((cat, g), []).append(ok)
    plus = [all(v) for v in groups.values()]
    units = [[(cat, g, ok) for ok in v] for (cat, g), v in groups.items()]
    ci = bootstrap(units, lambda s: mme_score([r for u in s for r in u]), suite.bootstrap, suite.seed,
                   strata=lambda u: u[0][0])
    return [rate(plus, metric="acc_plus", group=None, primary=False, **info),
            {"metric": "mme_score", "group": None, "value": mme_score(rows), "n": len(groups),
             "unparsed": 0, "ci": list(ci), "ci_method": f"bootstrap({suite.bootstrap}, by image, "
             "stratified by category)", "primary": False, **info}]


def skip_groups(errors: list[dict], first: int = 5) -> list[dict]:
    """Skipped items grouped by reason, largest group first: count, the first item ids and one
    full message (the rest differ only in the item they name)."""
    groups: dict[str, list[dict]] = {}
    for e in errors:
        groups.setdefault(e.get("reason") or "error", []).append(e)
    return [{"reason": r, "count": len(es), "items": [e["id"] for e in es[:first]], "example": es[0]["error"]}
            for r, es in sorted(groups.items(), key=lambda kv: -len(kv[1]))]


def benchmark_result(b, suite, verdicts) -> dict:
    """One benchmark's entry. A 'failed' benchmark (more skipped items than max_skipped) keeps
    no items, hence no metrics: the summary, `lora-vl report` and the study's claims, which all
    read metrics, cannot use a number that rests on part of it."""
    spec = b.spec
    info = {"seed": suite.seed, "subset_size": len(b.items)}
    metrics, agree = [], []
    if b.items:
        if b.category == "helpfulness":
            metrics = helpfulness_metrics(b, suite, info)
        else:
            metrics, agree = safety_metrics(b, suite, verdicts, info)
    return {"name": spec.name, "reader": spec.reader, "category": b.category, "source": spec.source,
            "revision": spec.revision, "subset": spec.subset, "limit": spec.limit,
            "per_category": spec.per_category, "n_items": b.n_read, "n_skipped": b.n_skipped,
            "status": b.status, "failure": b.failure,
            "skipped_reasons": skip_groups(b.errors), "max_new_tokens": b.max_new, "metrics": metrics,
            "agreement": agree}


def summarize(benchmarks: list[dict]) -> dict:
    """Every summary metric of the vocabulary (`vocabulary.py`): its rate pooled (k/n, Wilson CI)
    over the primary numbers of its category's benchmarks, or over its parts. Categories' own
    metrics first, then the others of a category, then pools of pools."""
    out = {}
    order = sorted((m for m in METRICS.values() if m.summary),
                   key=lambda m: 0 if m.category == m.key else 1 if m.category else 2)
    for metric in order:
        if metric.category:
            parts = [{"k": m["k"], "n": m["n"], "judges": [m["judge"]], "benchmarks": [b["name"]],
                      "skipped": b.get("n_skipped", 0)}
                     for b in benchmarks if b["category"] == metric.category for m in b["metrics"]
                     if m["metric"] == metric.measure and m["group"] is None and m.get("primary")]
        else:
            parts = [out[c] for c in metric.parts if c in out]
        k, n = sum(p["k"] for p in parts), sum(p["n"] for p in parts)
        if n:
            out[metric.key] = {"metric": metric.measure, "value": k / n, "k": k, "n": n, "ci": list(wilson(k, n)),
                               "ci_method": "wilson (pooled)",
                               "judges": sorted({j for p in parts for j in p["judges"]}),
                               "benchmarks": [x for p in parts for x in p["benchmarks"]],
                               "skipped": sum(p["skipped"] for p in parts)}
    return out


def fmt(v, digits=3) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def fmt_ci(ci) -> str:
    return "–" if not ci or ci[0] != ci[0] else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def render_markdown(results: dict) -> str:
    m = results["model"]
    lines = [f"# {results['suite']}: {m['base']}" + (f" + {', '.join(m['adapters'])}" if m["adapters"] else ""),
             "", f"model fingerprint `{m['fingerprint']}`, seed {results['seed']}, created {results['created']}", "",
             "| category | benchmark | metric | group | value | 95% CI | n | skipped | unparsed | judge | seed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in results["benchmarks"]:
        skipped = b.get("n_skipped", 0)
        if not b["metrics"]:
            lines.append(f"| {b['category']} | {b['name']} | – | – | {b['status']} | – | 0 | {skipped} | – | – | – |")
        for x in b["metrics"]:
            lines.append(f"| {b['category']} | {b['name']} | {x['metric']} | {x['group'] or 'all'} | "
                         f"{fmt(x['value'])} | {fmt_ci(x['ci'])} | {x['n']} | {skipped} | {x.get('unparsed', 0)} | "
                         f"{x['judge']} | {x['seed']} |")
    failed = [b for b in results["benchmarks"] if b.get("failure")]
    if failed:
        lines += ["", "## Failed benchmarks (their numbers are not used)", ""]
        lines += [f"- {b['failure']}" for b in failed]
    lines += ["", "## Summary (pooled primary metric per category)", "",
              "| category | metric | value | 95% CI | n | skipped | judges |", "|---|---|---|---|---|---|---|"]
    for cat, s in results["summary"].items():
        lines.append(f"| {cat} | {s['metric']} | {fmt(s['value'])} | {fmt_ci(s['ci'])} | {s['n']} | "
                     f"{s.get('skipped', 0)} | {', '.join(s['judges'])} |")
    agree = [(b["name"], a) for b in results["benchmarks"] for a in b["agreement"]]
    if agree:
        lines += ["", "## Judge agreement", "", "| benchmark | judges | metric | agreement | 95% CI | kappa | n |",
                  "|---|---|---|---|---|---|---|"]
        for name, a in agree:
            lines.append(f"| {name} | {' vs '.join(a['judges'])} | {a['metric']} | {fmt(a['agreement'])} | "
                         f"{fmt_ci(a['agreement_ci'])} | {fmt(a['kappa'])} | {a['n']} |")
    return "\n".join(lines) + "\n"
