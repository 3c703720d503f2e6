"""`lora-vl study` end to end on the test-scale toy world, with the project's own toy recipes
(paths moved into a temp folder, steps cut to a few): every run of the study is trained,
evaluated and analysed, and claims.md / claims.json / the plots are written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lora_vl.cli import main as cli
from lora_vl.handoff import read_manifest
from lora_vl.merge.io import AdapterFile
from lora_vl.study.claims import HELD, INCONCLUSIVE, NOT_HELD, compare

pytestmark = pytest.mark.slow  # the whole study on a tiny world

ROOT = Path(__file__).resolve().parent.parent
NO_4BIT = {"quantization": "none", "gradient_checkpointing": False}  # 16-bit LoRA: faster on a CPU
FAST = {  # a few optimizer steps per stage: the orchestration is under test, not the models
    "adapt.yaml": {"model": NO_4BIT, "stage1.optim": {"max_steps": 1},
                   "stage2.optim": {"micro_batch_size": 8, "global_batch_size": 8, "max_steps": 4}},
    "adapt_mixed.yaml": {"model": NO_4BIT, "stage2.optim": {"micro_batch_size": 8, "global_batch_size": 8,
                                                            "max_steps": 2}},
    "safety_sft.yaml": {"model": NO_4BIT, "sft.optim": {"micro_batch_size": 8, "global_batch_size": 8, "max_steps": 2}},
    "safety_dpo.yaml": {"model": NO_4BIT, "dpo.optim": {"micro_batch_size": 4, "global_batch_size": 4, "max_steps": 2}},
}


def moved(text: str, tmp: Path) -> str:
    return text.replace("outputs/toy/world", str(tmp / "world")).replace("outputs/toy/", str(tmp) + "/")


def copy_recipe(src: Path, dst: Path, tmp: Path, edits: dict | None = None) -> Path:
    data = yaml.safe_load(moved(src.read_text(), tmp))
    for section, values in (edits or {}).items():
        node = data
        for key in section.split("."):
            node = node[key]
        node.update(values)
    dst.write_text(yaml.safe_dump(data))
    return dst


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    threads = torch.get_num_threads()
    assert cli(["toy", "--scale", "test", "--out", str(tmp / "world")]) == 0
    torch.set_num_threads(threads)  # `lora-vl toy` sets its own training threads
    rec = tmp / "recipes"
    rec.mkdir()
    for name in ("adapt.yaml", "adapt_mixed.yaml", "safety_sft.yaml", "safety_dpo.yaml"):
        copy_recipe(ROOT / "recipes" / "toy" / name, rec / name, tmp, FAST[name])
    copy_recipe(ROOT / "recipes" / "merge" / "toy.yaml", rec / "merge.yaml", tmp)
    copy_recipe(ROOT / "eval" / "toy.yaml", rec / "suite.yaml", tmp)
    suite = yaml.safe_load((rec / "suite.yaml").read_text())
    study = yaml.safe_load(moved((ROOT / "recipes" / "toy" / "study.yaml").read_text(), tmp))
    study.update({"suite": str(rec / "suite.yaml"), "snapshot_every": 1, "output_dir": str(tmp / "study"),
                  **{k: str(rec / f"{v}.yaml") for k, v in (("adapt", "adapt"), ("adapt_mixed", "adapt_mixed"),
                                                              ("safety_sft", "safety_sft"),
                                                              ("safety_dpo", "safety_dpo"))},
                  "eval_overrides": [f"benchmarks.{i}.{k}" for i in range(len(suite["benchmarks"]))
                                     for k in ("max_new_tokens=4", "limit=2")]})
    study["merge"]["recipe"] = str(rec / "merge.yaml")
    (rec / "study.yaml").write_text(yaml.safe_dump(study))
    assert cli(["study", str(rec / "study.yaml")]) == 0
    return tmp / "study", rec / "study.yaml"


def test_every_run_is_made_and_measured(study):
    out, _ = study
    record = json.loads((out / "seed-0" / "runs.json").read_text())
    runs = {r["name"]: r for r in record["runs"]}
    curve = sorted(r["step"] for r in record["runs"] if r.get("step") is not None)
    assert curve == [0, 1, 2, 3, 4]  # step 0 (stage-1 projector, no LoRA), snapshots, the final adapter
    assert {"llm", "vl", "vl+sft", "vl+dpo", "mixed", "ties"} <= set(runs)
    assert sorted(r["merge_weight"] for r in record["runs"] if r.get("merge_weight") is not None) == \
        [0.2, 0.4, 0.6, 0.8, 1.0]
    for r in record["runs"]:
        results = json.loads(Path(r["results"]).read_text())
        assert results["model"]["adapters"] == r["adapters"]
        assert "text_safety" in results["summary"]
    seed = out / "seed-0"
    step0 = AdapterFile(runs["vl@step-0"]["adapters"][0])  # stage 2 at step 0: LM untouched, stage-1 projector
    assert all(not step0.factors(m).B.any() for m in step0.modules)
    projector = load_file(seed / "adapt" / "stage1" / "projector.safetensors")
    saved = {n.split("multi_modal_projector.")[1]: step0.extra(n) for n in step0.extra_keys}
    assert saved.keys() == projector.keys() and all(torch.equal(saved[k], projector[k]) for k in saved)
    assert read_manifest(seed / "safety_safety_sft" / "adapter")["parents"] == [str(seed / "adapt" / "adapter")]
    assert read_manifest(seed / "adapt_mixed" / "adapter")["parents"] == [
        str(seed / "adapt" / "stage1" / "projector.safetensors")]  # the seed's own stage-1 projector
    analysis = json.loads((seed / "analysis" / "analysis.json").read_text())
    assert analysis["reference"] == "llm" and {"vl", "vl+sft", "merge@0.6"} <= set(analysis["models"])
    assert {"vl", "sft", "dpo", "mixed", "merge@0.6"} <= set(analysis["delta_w"])


def test_claims_report(study):
    out, recipe = study
    doc = json.loads((out / "claims.json").read_text())
    ids = [c["id"] for c in doc["claims"]]
    assert {"1a", "1a·refusal", "1b", "2-sft-asr", "2-dpo-overrefusal", "3", "4", "5", "5-overrefusal",
            "6a", "6b"} <= set(ids)
    for c in doc["claims"]:
        assert c["verdict"] in (HELD, NOT_HELD, INCONCLUSIVE)
        for alt in c["per_seed"][0]["alternatives"]:
            for cmp in alt["comparisons"]:  # every verdict follows from the two printed intervals
                a = cmp["a"] if cmp["a"]["value"] is not None else None
                b = cmp["b"] if cmp["b"]["value"] is not None else None
                assert cmp["verdict"] == compare(a, b, cmp["direction"])
    md = (out / "claims.md").read_text()
    assert all(f"| {i} |" in md for i in ids)
    agreement = [a for a in doc["meta"]["agreement"] if a["run"] == "vl" and a["benchmark"] == "sorry-bench-toy"]
    assert agreement and agreement[0]["judges"] == ["toy-oracle", "refusal-matcher"]
    assert "| vl | sorry-bench-toy | toy-oracle vs refusal-matcher |" in md
    for png in ("asr_over_steps.png", "pareto.png", "seed-0/analysis/separation.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
        assert png in md
    # a re-run finds every stage done and only reports again, with the same verdicts
    assert cli(["study", str(recipe), "--report-only"]) == 0
    again = json.loads((out / "claims.json").read_text())
    assert [c["verdict"] for c in again["claims"]] == [c["verdict"] for c in doc["claims"]]
