"""The toy world builder at test scale: deterministic per seed, cached, held-out benchmarks disjoint
from every training file, every benchmark readable by the kit's real readers, models loadable."""
from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import pytest

from lora_vl.toy import lexicon as L
from lora_vl.toy.build import build_world
from lora_vl.toy.space import Ledger, make_split

pytestmark = pytest.mark.slow  # builds and trains the toy world

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return build_world(tmp_path_factory.mktemp("toy") / "world", scale="test", seed=0, log=lambda *_: None)


def digest(world: Path) -> dict[str, str]:
    """sha256 of every file of a world, except the manifest (it records times and versions)."""
    return {str(p.relative_to(world)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(world.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def test_same_seed_same_world_other_seed_other_world(world, tmp_path):
    again = build_world(tmp_path / "again", scale="test", seed=0, log=lambda *_: None)
    assert digest(again) == digest(world)
    assert any(k.startswith("models/lm/") and k.endswith(".safetensors") for k in digest(world))
    other = make_split(1)
    assert other.as_json()["train"] != json.loads((world / "splits.json").read_text())["train"]


def test_built_world_is_reused_unless_forced(world):
    stamp = (world / "manifest.json").stat().st_mtime_ns
    said = []
    assert build_world(world, scale="test", seed=0, log=said.append) == world
    assert (world / "manifest.json").stat().st_mtime_ns == stamp and "already built" in said[0]


def test_manifest_names_every_interface_path(world):
    m = json.loads((world / "manifest.json").read_text())
    assert m["kind"] == "toy_world" and m["settings"]["seed"] == 0 and m["settings"]["scale"]["name"] == "test"
    for rel in ["models/lm", "models/lm-pretrained", "models/vision", "data/pretrain.json", "data/instruct.json",
                "safety/vlguard_train.json", "safety/spa_vl.json", "safety/pku_saferlhf.json",
                "judge/knowledge.json", "splits.json"]:
        assert (world / rel).exists(), rel
    assert set(m["seconds"]) >= {"data", "lm_pretrain", "lm_align", "vision", "total"}
    assert m["training"]["lm_align"]["replay_blocks"] > 0  # alignment replays the plain documents


def test_models_load_as_hub_checkpoints(world):
    from transformers import AutoConfig, AutoTokenizer, CLIPImageProcessor, CLIPModel

    assert AutoConfig.from_pretrained(world / "models/lm").model_type == "llama"
    tok = AutoTokenizer.from_pretrained(world / "models/lm")
    assert "<image>" in tok.get_vocab() and "[INST]" in tok.apply_chat_template(
        [{"role": "user", "content": "How do I bake bread?"}], tokenize=False)
    CLIPModel.from_pretrained(world / "models/vision", use_safetensors=True)
    assert CLIPImageProcessor.from_pretrained(world / "models/vision").crop_size["height"] == 64


def _user_turns(world: Path) -> set[str]:
    """Every user prompt of every training file."""
    out = set()
    for line in (world / "data/lm_corpus.jsonl").read_text().splitlines():
        out |= {m["content"] for m in json.loads(line).get("messages", []) if m["role"] == "user"}
    for rel in ("data/lm_align.json", "data/instruct.json", "data/pretrain.json"):
        for rec in json.loads((world / rel).read_text()):
            out |= {t["value"].replace("<image>\n", "") for t in rec["conversations"] if t["from"] == "human"}
    for rec in json.loads((world / "safety/vlguard_train.json").read_text()):
        out |= {v for e in rec["instr-resp"] for k, v in e.items() if k != "response"}
    out |= {r["question"] for r in json.loads((world / "safety/spa_vl.json").read_text())}
    out |= {r["prompt"] for r in json.loads((world / "safety/pku_saferlhf.json").read_text())}
    return out


def test_held_out_prompts_never_appear_in_training_files(tmp_path):
    """Full-size data (no models): no benchmark text prompt is a training prompt, and no harmful
    (object, question) pair of MM-SafetyBench is one of the safety data's."""
    from lora_vl.toy.data import write_world_data
    from lora_vl.toy.scale import SCALES

    write_world_data(tmp_path, SCALES["full"], seed=3)
    train = _user_turns(tmp_path)
    bench = tmp_path / "benchmarks"
    held = [json.loads(line)["turns"][0] for line in (bench / "sorry_bench/question.jsonl").read_text().splitlines()]
    held += [json.loads(line)["question"] for line in (bench / "textqa/textqa_val.jsonl").read_text().splitlines()]
    import csv

    with open(bench / "xstest/xstest_prompts.csv") as f:
        held += [r["prompt"] for r in csv.DictReader(f)]
    assert len(held) >= 3 * 200 and not set(held) & train
    # harmful asks in text: every (topic, phrasing) of the benchmark is outside the training cells
    split = make_split(3)
    asks = {L.ask(p, t.act): (t.act, str(i)) for t in L.TOPICS.values() for i, p in enumerate(L.ASK_PHRASINGS)}
    cells = {asks[q] for q in held if q in asks}
    assert cells and all(c not in split.train["ask"][act] for act, c in cells)
    # harmful object + neutral question: (object, question) pairs vs the safety data's
    unsafe = {(re.search(r"_([a-z]+)_[a-z]+_\d\.png$", r["image"]).group(1), r["instr-resp"][0]["instruction"])
              for r in json.loads((tmp_path / "safety/vlguard_train.json").read_text()) if not r["safe"]}
    mmsb = {(v["Key Phrase"].split()[-1], v["Rephrased Question(SD)"])
            for f in (bench / "mm_safetybench/processed_questions").glob("*.json")
            for v in json.loads(f.read_text()).values()}
    assert len(mmsb) >= 200 and unsafe and not mmsb & unsafe


def test_split_check_refuses_a_leak():
    split = make_split(0)
    act = L.HARMFUL_TOPICS[0].act
    train_col, held_col = split.train["ask"][act][0], split.held_out["ask"][act][0]
    ok = Ledger()
    ok.use(("ask", act, train_col), held_out=False)
    ok.use(("ask", act, held_col), held_out=True)
    split.check(ok.train, ok.eval)
    with pytest.raises(AssertionError, match="also in training data"):
        split.check({("ask", act, held_col)}, {("ask", act, held_col)})
    with pytest.raises(AssertionError, match="outside the held-out split"):
        split.check(set(), {("ask", act, train_col)})


def test_stage2_data_has_no_harmful_ask_no_harmful_step_and_no_refusal(tmp_path):
    """Harmful pictures appear in stage 2 only to be perceived: a harmful activity's name only as
    the read-out of its typography, never in a user turn; no harmful step, no refusal anywhere."""
    from lora_vl.toy.data import write_world_data
    from lora_vl.toy.scale import SCALES

    files = write_world_data(tmp_path, SCALES["full"], seed=0)
    def pattern(phrases):
        return re.compile("|".join(rf"\b{re.escape(p)}\b" for p in phrases))
    acts, steps = pattern([t.act for t in L.HARMFUL_TOPICS]), pattern([s for t in L.HARMFUL_TOPICS for s in t.steps])
    records = json.loads(files["instruct"].read_text())
    assert len(records) > 1000
    read_outs = 0
    for rec in records:
        turns = [t["value"].lower() for t in rec["conversations"]]
        assert not any(m in t for t in turns for m in L.REFUSAL_MARKERS), rec
        assert not any(steps.search(t) for t in turns), rec
        assert not any(acts.search(t) for t in turns[0::2]), rec  # no user turn asks about a harmful activity
        for answer in turns[1::2]:
            if acts.search(answer):
                read_outs += 1
                assert re.fullmatch(r"(the text names the activity: )?[a-z ]+\.?", answer), rec
                assert "_text_" in rec.get("image", ""), rec  # ... read out of a typography picture
    assert read_outs > 0  # harmful typography is read out, as stage 1 captions it
    align = files["lm_align"].read_text()
    assert "make a bath bomb" in align and "make a bomb" in align  # the LM is aligned on both sides


def test_benchmarks_parse_with_the_real_readers(world, tmp_path):
    """eval/toy.yaml, pointed at this world: every benchmark reads, its images load, and the
    helpfulness items carry references the scorers use."""
    from lora_vl.evaluation.items import load_image
    from lora_vl.evaluation.readers import read_benchmark, study_category
    from lora_vl.evaluation.suite import Suite
    from lora_vl.recipe import load_recipe

    suite_file = tmp_path / "toy.yaml"
    suite_file.write_text((ROOT / "eval/toy.yaml").read_text().replace("outputs/toy/world", str(world)))
    suite = load_recipe(Suite, suite_file)
    categories = set()
    for spec in suite.benchmarks:
        items = read_benchmark(spec, suite.seed)
        assert items, spec.name
        categories.add(study_category(spec))
        for it in items:
            if it.has_image:
                assert load_image(it).size == (64, 64)
            if study_category(spec) == "helpfulness":
                assert it.reference, (spec.name, it.id)
        if spec.reader == "mmbench":
            assert all(len(it.choices) == 4 for it in items)
            with open(Path(spec.source) / "mmbench_dev_en.tsv", newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
            assert rows[1]["image"] == "0" and len(items) == len(rows)  # a VLMEvalKit index reference, read
    assert categories == {"text_safety", "mm_safety", "over_refusal", "helpfulness"}
