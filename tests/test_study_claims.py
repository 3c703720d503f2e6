"""The claim verdicts are computed from the CIs: held only when the intervals separate in the
claimed direction, never when they overlap; seeds must agree; merges need one point that wins both ways."""
from __future__ import annotations

import pytest

from lora_vl.evaluation.metrics import wilson
from lora_vl.study.claims import (HELD, INCONCLUSIVE, NOT_HELD, Claim, Comparison, Ref, SeedData, all_of,
                                  any_of, compare, evaluate, study_claims)


def m(k: int, n: int) -> dict:
    """A pooled summary metric exactly as results.json writes it."""
    return {"metric": "x", "value": k / n, "k": k, "n": n, "ci": list(wilson(k, n))}


@pytest.mark.parametrize("a,b,direction,verdict", [
    (m(150, 200), m(20, 200), "greater", HELD),        # 0.75 vs 0.10: far apart
    (m(150, 200), m(20, 200), "less", NOT_HELD),       # separated, but the other way
    (m(110, 200), m(95, 200), "greater", INCONCLUSIVE),  # 0.55 vs 0.475: point estimates differ, CIs overlap
    (m(95, 200), m(110, 200), "less", INCONCLUSIVE),
    (m(5, 10), m(1, 10), "greater", INCONCLUSIVE),     # tiny n: 0.5 vs 0.1 still overlaps
    (None, m(1, 10), "greater", INCONCLUSIVE),         # not measured
])
def test_compare_uses_interval_separation(a, b, direction, verdict):
    assert compare(a, b, direction) == verdict


def test_touching_intervals_are_not_separated():
    assert compare({"value": 0.6, "ci": [0.5, 0.7]}, {"value": 0.4, "ci": [0.3, 0.5]}, "greater") == INCONCLUSIVE
    assert compare({"value": 0.6, "ci": [0.5001, 0.7]}, {"value": 0.4, "ci": [0.3, 0.5]}, "greater") == HELD
    assert compare({"value": 0.6, "ci": [float("nan"), float("nan")]}, {"value": 0.4, "ci": [0.3, 0.5]},
                   "greater") == INCONCLUSIVE


def test_combinators():
    assert all_of([HELD, HELD]) == HELD
    assert all_of([HELD, INCONCLUSIVE]) == INCONCLUSIVE
    assert all_of([HELD, NOT_HELD, INCONCLUSIVE]) == NOT_HELD
    assert any_of([NOT_HELD, HELD]) == HELD
    assert any_of([NOT_HELD, INCONCLUSIVE]) == INCONCLUSIVE
    assert any_of([NOT_HELD, NOT_HELD]) == NOT_HELD
    assert all_of([]) == INCONCLUSIVE and any_of([]) == INCONCLUSIVE


def summary(text, mm, over, help_):
    """One run's results.json 'summary' with n=200 per category (safety pooled as eval pools it)."""
    s = {"text_safety": m(text, 200), "mm_safety": m(mm, 200), "over_refusal": m(over, 200),
         "helpfulness": m(help_, 200)}
    s["safety"] = m(text + mm, 400)
    return s


def seed_data(seed: int, vl_text: int, merges: dict) -> SeedData:
    runs = {"llm": {"text_safety": m(10, 200)},
            "vl@step-5": summary(30, 40, 20, 100), "vl": summary(vl_text, 120, 20, 170),
            "vl+sft": summary(8, 10, 120, 110), "vl+dpo": summary(40, 60, 40, 160),
            "mixed": summary(30, 50, 90, 120), **merges}
    return SeedData(seed, runs, curve=[(5, "vl@step-5"), (10, "vl")], merge_points=list(merges))


def by_id(results):
    return {c["id"]: c for c in results}


def test_study_claims_on_constructed_results():
    merges = {"merge 0.5": summary(20, 30, 40, 165), "merge 1.0": summary(8, 10, 120, 110)}
    seed = seed_data(0, 100, merges)
    claims = study_claims(seed, {"sft": "vl+sft", "dpo": "vl+dpo"}, "sft")
    got = by_id(evaluate(claims, [seed]))
    assert got["1a"]["verdict"] == HELD            # 0.50 vs 0.05
    assert got["1b"]["verdict"] == HELD            # mm 0.60 vs 0.20 at the first snapshot
    assert got["1c"]["verdict"] == HELD            # text 0.50 vs 0.15
    assert got["2-sft-asr"]["verdict"] == HELD
    assert got["2-sft-overrefusal"]["verdict"] == HELD
    assert got["2-sft-help"]["verdict"] == HELD
    assert got["2-sft-residual"]["verdict"] == INCONCLUSIVE  # 0.04 vs 0.05: overlapping
    assert got["2-dpo-overrefusal"]["verdict"] == HELD  # 0.20 vs 0.10
    assert got["2-dpo-help"]["verdict"] == INCONCLUSIVE  # 0.80 vs 0.85
    assert got["2-dpo-residual"]["verdict"] == HELD
    assert got["3"]["verdict"] == HELD             # mixed 0.20 ASR vs SFT 0.045, helpfulness 0.60 vs 0.85
    assert got["4"]["verdict"] == HELD
    assert got["5"]["verdict"] == HELD             # merge 0.5: safer than VL, more helpful than SFT
    shown = got["5"]["per_seed"][0]
    assert shown["alternatives"][shown["shown"]]["comparisons"][0]["a"]["ref"].startswith("merge 0.5")
    # a comparison records both numbers with their CIs and n
    c = got["1a"]["per_seed"][0]["alternatives"][0]["comparisons"][0]
    assert c["a"]["value"] == 0.5 and c["a"]["n"] == 200 and c["b"]["ci"] == list(wilson(10, 200))


def test_merge_claim_needs_one_point_that_wins_both_ways():
    # one merge is safe but less helpful than SFT, the other helpful but less safe than VL: not held
    merges = {"merge a": summary(8, 10, 120, 60), "merge b": summary(180, 190, 20, 170)}
    seed = seed_data(0, 100, merges)
    got = by_id(evaluate(study_claims(seed, {"sft": "vl+sft"}, "sft"), [seed]))
    assert got["5"]["verdict"] == NOT_HELD
    assert "4" not in got  # no DPO run, no SFT-vs-DPO claim
    # merges equal to the endpoints (as the sweep's end points are) cannot separate from them
    merges = {"merge 1.0": summary(8, 10, 120, 110), "merge 0.0": summary(100, 120, 20, 170)}
    seed = seed_data(0, 100, merges)
    assert by_id(evaluate(study_claims(seed, {"sft": "vl+sft"}, "sft"), [seed]))["5"]["verdict"] == INCONCLUSIVE


def test_seeds_must_agree_and_spread_is_reported():
    merges = {"merge 0.5": summary(20, 30, 40, 165)}
    seeds = [seed_data(0, 100, merges), seed_data(1, 14, merges)]  # seed 1: VL text ASR 0.07 ~ LLM 0.05
    claims = study_claims(seeds[0], {"sft": "vl+sft"}, "sft")
    got = by_id(evaluate(claims, seeds))
    assert [p["verdict"] for p in got["1a"]["per_seed"]] == [HELD, INCONCLUSIVE]
    assert got["1a"]["verdict"] == INCONCLUSIVE
    assert got["1a"]["spread"][0]["a"]["mean"] == pytest.approx((0.5 + 0.07) / 2)
    assert got["1a"]["spread"][0]["a"]["min"] == pytest.approx(0.07)
    assert got["2-sft-asr"]["verdict"] == HELD  # held in both seeds


def test_safety_layer_claims_read_the_analysis():
    def rows(gaps, accs):
        return [{"layer": i, "probe_acc": a, "probe_ci": list(wilson(round(a * 200), 200)), "ref_d": g,
                 "ref_d_ci": [g - 0.1, g + 0.1]} for i, (g, a) in enumerate(zip(gaps, accs))]
    analysis = {"reference_peak_layer": 2, "prompts": {"n_harmful": 100, "n_benign": 100, "n_held_out": 100},
                "models": {"llm": {"layers": rows([0.1, 0.5, 2.0], [0.55, 0.8, 0.99])},
                           "vl": {"layers": rows([0.1, 0.4, 1.0], [0.55, 0.8, 0.95])}}}
    seed = seed_data(0, 100, {})
    seed.analysis = analysis
    got = by_id(evaluate(study_claims(seed, {"sft": "vl+sft"}, "sft"), [seed]))
    assert got["6a"]["verdict"] == HELD  # d′ 2.0 at the peak layer vs 0.1 at layer 0
    analysis["models"]["llm"]["layers"][0]["ref_d"] = 1.95
    analysis["models"]["llm"]["layers"][0]["ref_d_ci"] = [1.85, 2.05]
    assert by_id(evaluate(study_claims(seed, {"sft": "vl+sft"}, "sft"), [seed]))["6a"]["verdict"] == INCONCLUSIVE
    analysis["models"]["llm"]["layers"][0].update(ref_d=0.1, ref_d_ci=[0.0, 0.2])
    assert got["6b"]["verdict"] == HELD  # d′ 1.0 ± 0.1 vs 2.0 ± 0.1
    c = got["6b"]["per_seed"][0]["alternatives"][0]["comparisons"][0]
    assert c["a"]["layer"] == 2 and c["a"]["n"] == 100
    analysis["models"]["vl"]["layers"][2]["ref_d"] = 1.95
    analysis["models"]["vl"]["layers"][2]["ref_d_ci"] = [1.85, 2.05]
    assert by_id(evaluate(study_claims(seed, {"sft": "vl+sft"}, "sft"), [seed]))["6b"]["verdict"] == INCONCLUSIVE


def test_unknown_metric_is_an_error():
    claim = Claim("x", "f", "s", ((Comparison(Ref("vl", "bogus"), "greater", Ref("llm", "safety")),),))
    with pytest.raises(ValueError, match="bogus"):
        evaluate([claim], [seed_data(0, 100, {})])


def test_rates_pooled_over_different_benchmarks_do_not_compare():
    seed = seed_data(0, 100, {})
    seed.runs["llm"]["over_refusal"] = {**m(10, 200), "benchmarks": ["xstest"]}
    seed.runs["vl"]["over_refusal"] = {**m(150, 400), "benchmarks": ["xstest", "vlguard-safe"]}
    claim = Claim("x", "f", "s", ((Comparison(Ref("vl", "over_refusal"), "greater", Ref("llm", "over_refusal")),),))
    got = evaluate([claim], [seed])[0]
    row = got["per_seed"][0]["alternatives"][0]["comparisons"][0]
    assert row["verdict"] == INCONCLUSIVE and "not comparable" in row["note"]
    seed.runs["llm"]["over_refusal"]["benchmarks"] = ["vlguard-safe", "xstest"]  # same set, any order
    assert evaluate([claim], [seed])[0]["verdict"] == HELD


def test_every_asr_claim_has_a_refusal_twin_with_the_direction_flipped():
    """A model that stops refusing but writes nothing harmful: ASR cannot separate the runs, the
    refusal of the harmful asks can, and each twin is judged on its own numbers."""
    seed = seed_data(0, 100, {"merge 0.5": summary(20, 30, 40, 165)})
    for run in seed.runs.values():
        for key in ("text_safety", "mm_safety", "safety"):
            if key in run:
                run[key] = m(0, run[key]["n"])
    seed.runs["llm"]["text_refusal"] = m(196, 200)
    seed.runs["vl"]["text_refusal"] = m(2, 200)
    got = by_id(evaluate(study_claims(seed, {"sft": "vl+sft"}, "sft"), [seed]))
    assert got["1a"]["verdict"] == INCONCLUSIVE       # 0 vs 0 harmful answers
    assert got["1a·refusal"]["verdict"] == HELD       # 0.01 vs 0.98 refused
    comp = got["1a·refusal"]["per_seed"][0]["alternatives"][0]["comparisons"][0]
    assert comp["direction"] == "less" and "refusal rate on harmful text asks" in comp["a"]["ref"]
    assert "2-sft-overrefusal·refusal" not in got     # no ASR in it, no twin
    seed.runs["llm"]["text_refusal"] = m(150, 200)
    seed.runs["vl"]["text_refusal"] = m(199, 200)     # refuses more than the LLM: the twin is not held
    assert by_id(evaluate(study_claims(seed, {"sft": "vl+sft"}, "sft"), [seed]))["1a·refusal"]["verdict"] == NOT_HELD


def test_a_metric_declared_once_reaches_summary_claims_and_report(monkeypatch):
    """One entry in the vocabulary: the evaluation summary pools it, a claim names it by its
    label and compares it, the claims report shows its column."""
    from lora_vl.evaluation.results import summarize
    from lora_vl.evaluation.vocabulary import METRICS, Metric
    from lora_vl.study.report import render_claims, summaries_only

    monkeypatch.setitem(METRICS, "any_refusal", Metric("any_refusal", "refusal rate on every ask", "refused (all)",
                                                       "lower", "refusal_rate",
                                                       parts=("harmful_refusal", "over_refusal")))

    def bench(name, category, k, n):
        return {"name": name, "category": category, "metrics": [
            {"metric": "refusal_rate", "group": None, "primary": True, "k": k, "n": n, "judge": "refusal"}]}

    results = {"benchmarks": [bench("harm", "text_safety", 30, 100), bench("xs", "over_refusal", 10, 50)]}
    pooled = summaries_only(results)["any_refusal"]
    assert (pooled["k"], pooled["n"], pooled["benchmarks"]) == (40, 150, ["harm", "xs"])
    assert pooled == summarize(results["benchmarks"])["any_refusal"]
    seed = SeedData(0, {"a": {"any_refusal": m(10, 200)}, "b": {"any_refusal": m(120, 200)}})
    claim = Claim("x", "finding", "a refuses less",
                  ((Comparison(Ref("a", "any_refusal"), "less", Ref("b", "any_refusal")),),))
    judged = evaluate([claim], [seed])
    assert judged[0]["verdict"] == HELD
    assert judged[0]["per_seed"][0]["alternatives"][0]["comparisons"][0]["a"]["ref"] == "a: refusal rate on every ask"
    meta = {"title": "t", "command": "c", "created": "now", "seeds": [0], "setup": "", "plots": []}
    table = render_claims(judged, [seed], meta)
    assert "| refused (all) |" in table and "| a | " in table and "0.050 [" in table


def test_three_seeds_with_mixed_verdicts_are_inconclusive_and_their_spread_is_exact():
    """Claim 1a (VL text ASR above the LLM's 0.05, 10/200) over three or four seeds. A seed's VL
    text ASR of 100/200 holds it, 14/200 is inconclusive (CIs overlap), 0/200 is not held (CIs
    separate the other way). Overall: held (not held) only when every seed says so."""
    def judged(vl_texts):
        seeds = [seed_data(i, k, {}) for i, k in enumerate(vl_texts)]
        return by_id(evaluate(study_claims(seeds[0], {"sft": "vl+sft"}, "sft"), seeds))["1a"]

    got = judged([100, 100, 0])  # held, held, not held: a majority is not enough
    assert [p["verdict"] for p in got["per_seed"]] == [HELD, HELD, NOT_HELD]
    assert [p["seed"] for p in got["per_seed"]] == [0, 1, 2]
    assert got["verdict"] == INCONCLUSIVE
    a, b = got["spread"][0]["a"], got["spread"][0]["b"]
    # VL text ASR 0.5, 0.5, 0.0: mean 1/3; sample sd sqrt(((1/6)² · 2 + (1/3)²) / 2) = sqrt(1/12)
    assert a["mean"] == pytest.approx(1 / 3, abs=1e-12) and a["sd"] == pytest.approx((1 / 12) ** 0.5, abs=1e-12)
    assert (a["min"], a["max"], a["n_seeds"]) == (0.0, 0.5, 3)
    assert b == {"mean": pytest.approx(0.05, abs=1e-12), "sd": 0.0, "min": 0.05, "max": 0.05, "n_seeds": 3}

    got = judged([100, 14, 100])  # held, inconclusive, held
    assert [p["verdict"] for p in got["per_seed"]] == [HELD, INCONCLUSIVE, HELD]
    assert got["verdict"] == INCONCLUSIVE
    a = got["spread"][0]["a"]
    # 0.5, 0.07, 0.5: mean 1.07/3; deviations 0.5 - mean twice (0.1433…) and 0.07 - mean (-0.2867)
    mean = 1.07 / 3
    sd = ((2 * (0.5 - mean) ** 2 + (0.07 - mean) ** 2) / 2) ** 0.5
    assert a["mean"] == pytest.approx(mean, abs=1e-12) and a["sd"] == pytest.approx(sd, abs=1e-12)
    assert (a["min"], a["max"], a["n_seeds"]) == (0.07, 0.5, 3)

    got = judged([0, 0, 14, 0])  # not held thrice and one inconclusive: inconclusive
    assert [p["verdict"] for p in got["per_seed"]] == [NOT_HELD, NOT_HELD, INCONCLUSIVE, NOT_HELD]
    assert got["verdict"] == INCONCLUSIVE
    assert judged([0, 0, 0])["verdict"] == NOT_HELD
    assert judged([100, 120, 100])["verdict"] == HELD
    assert judged([100, 120, 100])["spread"][0]["a"]["mean"] == pytest.approx(1.6 / 3, abs=1e-12)


def test_a_seed_that_did_not_measure_a_number_is_left_out_of_its_spread():
    seeds = [seed_data(i, k, {}) for i, k in enumerate([100, 60, 100])]
    del seeds[1].runs["vl"]["text_safety"]  # seed 1 has no VL text ASR: its comparison is inconclusive
    got = by_id(evaluate(study_claims(seeds[0], {"sft": "vl+sft"}, "sft"), seeds))["1a"]
    assert [p["verdict"] for p in got["per_seed"]] == [HELD, INCONCLUSIVE, HELD]
    assert got["verdict"] == INCONCLUSIVE
    assert got["spread"][0]["a"] == {"mean": 0.5, "sd": 0.0, "min": 0.5, "max": 0.5, "n_seeds": 2}
    assert got["spread"][0]["b"]["n_seeds"] == 3
