"""Model cards (README.md) of artifact directories, and `lora-vl push`'s checks before upload."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, constants

from lora_vl.cli import main as cli
from lora_vl.handoff import make_manifest, write_manifest
from lora_vl.lock import LockedRepo, read_lock

LM = "meta-llama/Llama-2-7b-chat-hf"
RESULTS = {"suite": "paper", "summary": {
    "text_safety": {"metric": "asr", "value": 0.125, "k": 5, "n": 40, "ci": [0.055, 0.26],
                    "ci_method": "wilson (pooled)", "judges": ["llama-guard-3-8b"]}}}


@pytest.fixture
def adapter_dir(tmp_path, monkeypatch):
    """An adapter made on a local Llava base composed from a hub LM, trained on fetched VLGuard
    and a hub dataset; the lock knows the LM's licence and where VLGuard was put."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LORA_VL_LOCK", raising=False)
    lock = read_lock()
    lock.put(LockedRepo("model", LM, "a" * 40, license="llama2", gated="manual"))
    lock.put(LockedRepo("dataset", "ys-zong/VLGuard", "b" * 40, local_dir="data/VLGuard"))
    lock.save()
    base = Path("outputs/base")
    base.mkdir(parents=True)
    (base / "config.json").write_text('{"model_type": "llava"}')
    write_manifest(base, make_manifest("base", {}, compose={"lm": LM, "lm_revision": "a" * 40}))
    adapter = Path("outputs/safety/adapter")
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA",
                                                            "base_model_name_or_path": str(base)}))
    recipe = {"model": {"base": str(base)}, "method": "sft", "sft": {"data": {"sources": [
        {"format": "vlguard", "path": "data/VLGuard/train.json", "revision": None},
        {"format": "pku_saferlhf", "path": "PKU-Alignment/PKU-SafeRLHF", "revision": "c" * 40}]}}}
    write_manifest(adapter, make_manifest("safety_adapter", recipe, base=str(base), steps=12, final_loss=0.5))
    return adapter


def test_card_front_matter_follows_base_lock_and_recipe(adapter_dir):
    card = ModelCard.load(adapter_dir / "README.md")
    assert card.data.base_model == LM  # the local base followed to the LM it was composed from
    assert card.data.license == "llama2" and card.data.library_name == "peft"
    assert card.data.datasets == ["ys-zong/VLGuard", "PKU-Alignment/PKU-SafeRLHF"]
    assert "| final loss | 0.5 |" in card.text and f"PKU-Alignment/PKU-SafeRLHF @ {'c' * 40}" in card.text
    assert "PeftModel.from_pretrained" in card.text


def test_base_checkpoint_card_is_a_transformers_card(adapter_dir):
    card = ModelCard.load(Path("outputs/base/README.md"))
    assert card.data.library_name == "transformers" and card.data.base_model == LM


def test_a_folder_without_a_model_gets_no_card(tmp_path):
    write_manifest(tmp_path, make_manifest("toy_world", {}))  # a data set: nothing to put on a model page
    assert (tmp_path / "manifest.json").is_file() and not (tmp_path / "README.md").exists()


def test_push_adds_results_then_refuses_offline_with_one_line(adapter_dir, monkeypatch, capsys):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    Path("results.json").write_text(json.dumps(RESULTS))
    assert cli(["push", str(adapter_dir), "me/llava-safety", "--results", "results.json"]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE is set" in err and "me/llava-safety" in err and err.count("\n") == 1
    text = ModelCard.load(adapter_dir / "README.md").text
    assert "| text_safety | asr | 0.125 | [0.055, 0.260] | 40 | llama-guard-3-8b |" in text


def test_push_refuses_a_folder_that_is_not_an_artifact(tmp_path, capsys):
    assert cli(["push", str(tmp_path), "me/x"]) == 2
    assert "no manifest.json" in capsys.readouterr().err
