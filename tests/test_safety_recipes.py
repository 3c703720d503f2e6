"""The shipped safety recipes load against their schemas; the mixed ("simultaneous") setting runs."""
from pathlib import Path

import pytest

from lora_vl.handoff import read_manifest
from lora_vl.recipe import build, load_recipe
from lora_vl.train.adapt import AdaptRecipe, run_adapt
from lora_vl.train.safety import SafetyRecipe
from safety_helpers import safety_world  # noqa: F401  (session fixture)

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*/safety_*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_safety_recipes_load(path):
    r = load_recipe(SafetyRecipe, path)
    assert getattr(r, r.method) is not None


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*/adapt_mixed*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_mixed_recipes_load(path):
    r = load_recipe(AdaptRecipe, path)
    assert "vlguard" in [s.format for s in r.stage2.data.sources]


def test_mixed_stage2_trains_on_vlguard(safety_world, tmp_path):
    r = build(AdaptRecipe, {
        "output_dir": str(tmp_path / "mixed"),
        "model": {"base": str(safety_world["base"]), "gradient_checkpointing": False},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "stage2": {"data": {"sources": [{"format": "llava_json", "path": str(safety_world["instruct"])},
                                        {"format": "vlguard", "path": str(safety_world["vlguard"])}],
                            "max_length": 160},
                   "optim": {"micro_batch_size": 8, "global_batch_size": 8, "max_steps": 1}}})
    report = read_manifest(run_adapt(r))["data_report"]["used"]
    assert report[str(safety_world["vlguard"])] > 0 and report[str(safety_world["instruct"])] > 0
