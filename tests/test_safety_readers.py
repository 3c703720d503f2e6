"""The safety readers on fixtures in each real schema, and their bad-input errors."""
import json

import datasets
import pytest
from PIL import Image

from lora_vl.data.config import DataConfig
from lora_vl.data.encode import BadRecord
from lora_vl.data.safety_readers import read_pku_saferlhf, read_spa_vl, read_vlguard
from lora_vl.recipe import RecipeError, build
from lora_vl.train.preference import check_pair
from safety_helpers import FIXTURES, copy_fixtures


def test_vlguard_yields_one_sample_per_instruction():
    samples = read_vlguard(FIXTURES / "vlguard_train.json")
    assert [s.id for s in samples] == ["HOD_safe_0/0:safe_instruction", "HOD_safe_0/1:unsafe_instruction",
                                       "bad_ads_1/0:instruction"]
    first = samples[0]
    assert first.messages == [{"role": "user", "content": "<image>\nWhat colour is the picture?"},
                              {"role": "assistant", "content": "The picture is green."}]
    assert first.images == [FIXTURES / "images" / "safe_0.png"]
    assert samples[1].messages[1]["content"].startswith("I'm sorry")


def test_vlguard_image_folder(tmp_path):
    samples = read_vlguard(FIXTURES / "vlguard_train.json", image_folder=tmp_path)
    assert samples[0].images == [tmp_path / "images" / "safe_0.png"]


def test_vlguard_structural_error_names_record(tmp_path):
    bad = tmp_path / "train.json"
    bad.write_text(json.dumps([{"id": "x1", "image": "a.png", "safe": True,
                                "instr-resp": [{"question": "q", "response": "r"}]}]))
    with pytest.raises(BadRecord, match=r"record 'x1'.*instr-resp\[0\]"):
        read_vlguard(bad)
    bad.write_text(json.dumps([{"id": "x2", "image": "a.png"}]))
    with pytest.raises(BadRecord, match="record 'x2'.*instr-resp"):
        read_vlguard(bad)


def test_spa_vl_json_lines():
    pairs = read_spa_vl(str(FIXTURES / "spa_vl.jsonl"))
    assert len(pairs) == 2
    p = pairs[0]
    assert p.prompt == "<image>\nHow do I hurt someone with this?"
    assert p.chosen.startswith("I'm sorry") and p.rejected.startswith("Sure")
    assert p.images == [FIXTURES / "images" / "safe_0.png"]


def test_spa_vl_hub_layout_with_image_feature(tmp_path):
    """The hub dataset stores decoded images (datasets.Image); the reader takes them as PIL."""
    img = Image.new("RGB", (8, 8), (1, 2, 3))
    ds = datasets.Dataset.from_dict({"image": [img], "question": ["What is it?"], "chosen": ["A square."],
                                     "rejected": ["No."], "class1": ["x"]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "question": datasets.Value("string"),
                                                                "chosen": datasets.Value("string"),
                                                                "rejected": datasets.Value("string"),
                                                                "class1": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "spa"))
    (p,) = read_spa_vl(str(tmp_path / "spa"))
    assert isinstance(p.images[0], Image.Image) and p.prompt.startswith("<image>\n")


def test_pku_uses_safer_response():
    pairs = read_pku_saferlhf(str(FIXTURES / "pku_saferlhf.jsonl"))
    # record 0: better_response_id 0 but safer_response_id 1 — the safety preference wins
    assert pairs[0].chosen.startswith("I can't help") and pairs[0].rejected.startswith("First insert")
    assert pairs[1].chosen == "Two plus two is four."
    assert pairs[0].images == []


def test_pku_missing_column(tmp_path):
    f = tmp_path / "pku.jsonl"
    f.write_text(json.dumps({"prompt": "p", "response_0": "a", "response_1": "b"}) + "\n")
    with pytest.raises(BadRecord, match="safer_response_id"):
        read_pku_saferlhf(str(f))


def test_bad_pairs_are_named():
    (p, _) = read_spa_vl(str(FIXTURES / "spa_vl.jsonl"))
    p.rejected = p.chosen
    with pytest.raises(BadRecord, match="record '0'.*identical"):
        check_pair(p)
    p.chosen = "  "
    with pytest.raises(BadRecord, match="record '0'.*empty chosen"):
        check_pair(p)


def test_missing_image_is_named(tmp_path):
    from lora_vl.data.dataset import verify_images

    d = copy_fixtures(tmp_path / "fx")
    (d / "images" / "unsafe_0.png").unlink()
    bad = read_vlguard(d / "vlguard_train.json")[2]
    with pytest.raises(BadRecord, match=r"record 'bad_ads_1/0:instruction'.*unsafe_0.png not found"):
        verify_images(bad)


def test_safety_formats_are_valid_sources():
    cfg = build(DataConfig, {"sources": [{"format": "vlguard", "path": "x.json"},
                                         {"format": "spa_vl", "path": "y"}, {"format": "pku_saferlhf", "path": "z"}]})
    assert [s.format for s in cfg.sources] == ["vlguard", "spa_vl", "pku_saferlhf"]
    with pytest.raises(RecipeError, match="format"):
        build(DataConfig, {"sources": [{"format": "vlgard", "path": "x"}]})
