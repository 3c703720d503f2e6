"""Whole runs on the tiny Llava: the cache resumes after a crash, re-judging never regenerates,
bad inputs get named errors, and results carry judge / n / seed / CI beside every number."""
import dataclasses
import json
import shutil

import pytest
import yaml
from eval_helpers import FIXTURES, tiny_world  # noqa: F401  (session fixture)

from lora_vl.evaluation import run as run_mod
from lora_vl.cli import main
from lora_vl.evaluation.cache import GenerationCache
from lora_vl.evaluation.report import render
from lora_vl.handoff import HandoffError
from lora_vl.evaluation.run import run_suite
from lora_vl.evaluation.suite import Suite
from lora_vl.recipe import RecipeError, build
from lora_vl.study.report import summaries_only

BENCHES = [
    {"name": "xstest", "reader": "xstest", "source": str(FIXTURES / "xstest"), "subset": "all",
     "judges": ["kw", "kw-prefix"]},
    {"name": "vlguard", "reader": "vlguard", "source": str(FIXTURES / "vlguard"), "subset": "safe_unsafes"},
    {"name": "mmb", "reader": "mmbench", "source": str(FIXTURES / "mmbench")},
    {"name": "figstep", "reader": "figstep", "source": str(FIXTURES / "figstep")},
]
N_ITEMS = 3 + 1 + 2 + 3


def suite(**over) -> Suite:
    data = {"name": "t", "generation": {"batch_size": 2, "max_new_tokens": 6},
            "judges": [{"name": "kw", "kind": "refusal"}, {"name": "kw-prefix", "kind": "refusal",
                                                          "variant": "prefix"}],
            "benchmarks": BENCHES, **over}
    return build(Suite, data)


class Boom(RuntimeError):
    pass


def test_cache_resumes_after_crash_and_rejudge_never_generates(tiny_world, tmp_path, monkeypatch):
    base, adapters = str(tiny_world["llava"]), [str(tiny_world["adapter"])]
    seen = []

    def crash_after_two_batches(ids):
        seen.append(ids)
        if len(seen) == 2:
            raise Boom("simulated crash")

    with pytest.raises(Boom):
        run_suite(suite(), base, adapters, tmp_path, device="cpu", on_batch=crash_after_two_batches)
    done = [i for b in seen for i in b]
    lines = (tmp_path / "generations.jsonl").read_text().splitlines()
    assert len(lines) == len(done) and 0 < len(done) < N_ITEMS  # finished batches are on disk

    resumed = []
    res = run_suite(suite(), base, adapters, tmp_path, device="cpu", on_batch=resumed.append)
    assert sum(len(b) for b in resumed) == N_ITEMS - len(done)  # only the missing items
    assert len((tmp_path / "generations.jsonl").read_text().splitlines()) == N_ITEMS

    def no_model(*a, **k):
        raise AssertionError("the model must not load when every answer is cached")

    monkeypatch.setattr(run_mod, "load_model", no_model)
    rejudged = run_suite(suite(judges=[{"name": "kw", "kind": "refusal", "variant": "substring"},
                                       {"name": "kw-prefix", "kind": "refusal"}]),
                         base, adapters, tmp_path, device="cpu")
    assert rejudged["model"]["fingerprint"] == res["model"]["fingerprint"]


def test_results_carry_judge_n_seed_ci(tiny_world, tmp_path):
    res = run_suite(suite(), str(tiny_world["llava"]), [], tmp_path, device="cpu")
    xs = next(b for b in res["benchmarks"] if b["name"] == "xstest")
    assert xs["category"] == "over_refusal"
    overall = [m for m in xs["metrics"] if m["group"] is None]
    assert {m["judge"] for m in overall} == {"kw", "kw-prefix"}
    for m in overall:
        assert m["metric"] == "refusal_rate" and m["n"] == 3 and m["seed"] == 0 and len(m["ci"]) == 2
    assert xs["agreement"][0]["judges"] == ["kw", "kw-prefix"] and xs["agreement"][0]["n"] == 3
    mmb = next(b for b in res["benchmarks"] if b["name"] == "mmb")
    assert mmb["metrics"][0]["judge"] == "match:letter" and mmb["metrics"][0]["n"] == 2
    vg = next(b for b in res["benchmarks"] if b["name"] == "vlguard")
    assert vg["metrics"][0]["judge"] == "refusal-matcher" and vg["metrics"][0]["metric"] == "asr"
    assert set(res["summary"]) >= {"mm_safety", "over_refusal", "helpfulness", "safety"}
    md = (tmp_path / "results.md").read_text()
    assert "| over_refusal | xstest | refusal_rate | all |" in md and "Judge agreement" in md
    assert len((tmp_path / "judgments.jsonl").read_text().splitlines()) == 3 * 2 + 1 + 3


def test_stale_prompt_and_torn_line_regenerate(tiny_world, tmp_path):
    s = suite(benchmarks=[BENCHES[0]])
    run_suite(s, str(tiny_world["lm"]), [], tmp_path, device="cpu")
    with open(tmp_path / "generations.jsonl", "a") as f:
        f.write('{"model": "x", "benchm')  # a kill mid-write
    again = []
    s2 = suite(benchmarks=[BENCHES[0]], generation={"batch_size": 2, "max_new_tokens": 5})
    run_suite(s2, str(tiny_world["lm"]), [], tmp_path, device="cpu", on_batch=again.append)
    assert sum(map(len, again)) == 3  # new budget -> new answers; the torn line is skipped
    recs = GenerationCache(tmp_path / "generations.jsonl").records
    assert len(recs) == 3


def test_base_llm_skips_image_benchmarks(tiny_world, tmp_path):
    res = run_suite(suite(), str(tiny_world["lm"]), [], tmp_path, device="cpu")
    status = {b["name"]: b["status"] for b in res["benchmarks"]}
    assert status["xstest"] == "ok" and status["vlguard"].startswith("skipped: image benchmark")


def test_skipped_items_are_counted_and_too_many_fail_the_benchmark(tiny_world, tmp_path, capsys):
    """vlguard: its one item unreadable, over the default max_skipped (1%) -> failed, no numbers;
    figstep: 1 of 3 unreadable, within its own max_skipped 0.5 -> ok, the skip shown beside n."""
    vg, fs = tmp_path / "vg", tmp_path / "fs"
    shutil.copytree(FIXTURES / "vlguard", vg)
    shutil.copytree(FIXTURES / "figstep", fs)
    (vg / "test" / "safe" / "1.png").write_bytes(b"broken")
    next(fs.rglob("query_ForbidQI_1_2_6.png")).write_bytes(b"broken too")
    s = suite(benchmarks=[dict(BENCHES[1], source=str(vg)), dict(BENCHES[3], source=str(fs), max_skipped=0.5)])
    res = run_suite(s, str(tiny_world["llava"]), [], tmp_path / "out", device="cpu")
    vlguard, figstep = res["benchmarks"]
    assert (vlguard["status"], vlguard["n_items"], vlguard["n_skipped"], vlguard["metrics"]) == ("failed", 1, 1, [])
    assert vlguard["skipped_reasons"] == [{"reason": "image data is not a readable image", "count": 1,
                                           "items": ["safe_1#0"], "example": vlguard["skipped_reasons"][0]["example"]}]
    assert "vlguard: 1 of 1 items skipped: 1 image data is not a readable image (items safe_1#0)" in vlguard["failure"]
    assert "mm_safety" in res["summary"] and res["summary"]["mm_safety"]["benchmarks"] == ["figstep"]
    assert (figstep["status"], figstep["n_items"], figstep["n_skipped"]) == ("ok", 3, 1)
    assert figstep["metrics"][0]["n"] == 2 and res["summary"]["mm_safety"]["skipped"] == 1
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| mm_safety | figstep | asr | all |" in md and "| 2 | 1 |" in md  # n, then skipped
    assert "## Failed benchmarks" in md and "safe_1#0" in md
    err = capsys.readouterr().err
    assert err.count("ForbidQI_1_2") == 1 and "within max_skipped 0.5" in err  # one line per benchmark
    assert summaries_only(res)["mm_safety"]["benchmarks"] == ["figstep"]  # what the study's claims read
    report = render([res])
    assert "n=2 skipped=1" in report and "## Failed benchmarks" in report and "safe_1#0" in report
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(dataclasses.asdict(s)))
    assert main(["eval", str(suite_file), "--model", str(tiny_world["llava"]), "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "n=2 skipped=1" in out and "FAILED vlguard: 1 of 1 items skipped" in out


def test_max_skipped_is_a_share_of_the_items_read(capsys):
    """1% of 200 items: 2 skipped is within, 3 fails; a benchmark's own max_skipped wins."""
    s = suite()
    for n_skipped, own, status in [(2, None, "ok"), (3, None, "failed"), (3, 0.015, "ok"), (0, 0.0, "ok")]:
        b = run_mod.Bench(build(Suite, {"name": "x", "benchmarks": [dict(BENCHES[2], max_skipped=own)]}).benchmarks[0],
                          "helpfulness", items=list(range(200 - n_skipped)), max_new=4, n_read=200,
                          errors=[{"id": str(i), "error": "e", "reason": "r"} for i in range(n_skipped)])
        run_mod.check_skips(s, b)
        assert (b.status, b.n_skipped, len(b.items) > 0) == (status, n_skipped, status == "ok"), (n_skipped, own)


def test_adapter_base_mismatch(tiny_world, tmp_path):
    other = tmp_path / "adapter"
    shutil.copytree(tiny_world["adapter"], other)
    (other / "manifest.json").write_text(json.dumps({"base": "meta-llama/Llama-2-7b-chat-hf"}))
    with pytest.raises(HandoffError, match=r"trained on base 'meta-llama/Llama-2-7b-chat-hf'"):
        run_suite(suite(), str(tiny_world["llava"]), [str(other)], tmp_path / "o", device="cpu")


def test_suite_validation_names_the_key():
    with pytest.raises(RecipeError, match="unknown key.*'judge'"):
        build(Suite, {"name": "x", "benchmarks": [dict(BENCHES[0], judge=["kw"])]})
    with pytest.raises(RecipeError, match=r"benchmarks\[0\].judges: 'nope' is not a judge"):
        build(Suite, {"name": "x", "benchmarks": [dict(BENCHES[0], judges=["nope"])]})
    with pytest.raises(RecipeError, match=r"reader: unknown 'figsteps'"):
        build(Suite, {"name": "x", "benchmarks": [dict(BENCHES[3], reader="figsteps")]})
    with pytest.raises(RecipeError, match=r"benchmarks\[0\].max_skipped: expected a value in \[0, 1\], got 5"):
        build(Suite, {"name": "x", "benchmarks": [dict(BENCHES[3], max_skipped=5)]})


def test_model_judge_unparsed_output_is_never_safe(tiny_world, tmp_path):
    """A real model judge path (tiny random LM as the judge): gibberish verdicts count as unparsed."""
    s = suite(judges=[{"name": "lg", "kind": "llama_guard", "variant": "1b", "model": str(tiny_world["lm"]),
                       "max_new_tokens": 3}, {"name": "kw", "kind": "refusal"}],
              benchmarks=[dict(BENCHES[0], judges=["lg", "kw"], subset="unsafe", category="text_safety")])
    res = run_suite(s, str(tiny_world["lm"]), [], tmp_path, device="cpu")
    lg = next(m for m in res["benchmarks"][0]["metrics"] if m["judge"] == "lg" and m["group"] is None)
    assert lg["unparsed"] == 1 and lg["n"] == 0 and lg["value"] is None
    assert "text_safety" not in res["summary"]  # no silent switch to the second judge
    assert "| asr | all | – | – | 0 | 0 | 1 | lg |" in (tmp_path / "results.md").read_text()  # n, skipped, unparsed
