import pytest

from lora_vl.recipe import RecipeError, describe, load_recipe
from lora_vl.train.adapt import AdaptRecipe

MINIMAL = """
output_dir: out
model: {lm: a, vision: b}
stage2:
  data: {sources: [{format: llava_json, path: x.json}]}
"""


def write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_minimal_recipe_gets_defaults(tmp_path):
    r = load_recipe(AdaptRecipe, write(tmp_path, MINIMAL))
    assert r.lora.r == 128 and r.lora.alpha == 256
    assert r.stage2.optim.global_batch_size == 128
    assert r.stage2.data.sources[0].format == "llava_json"


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(RecipeError, match=r"stage2\.optim.*'lrr'"):
        load_recipe(AdaptRecipe, write(tmp_path, MINIMAL + "  optim: {lrr: 0.1}\n"))


def test_mistyped_value_is_named(tmp_path):
    with pytest.raises(RecipeError, match=r"lora\.r: expected an integer"):
        load_recipe(AdaptRecipe, write(tmp_path, MINIMAL), ["lora.r=abc"])


def test_bad_literal_and_missing_key(tmp_path):
    with pytest.raises(RecipeError, match="quantization"):
        load_recipe(AdaptRecipe, write(tmp_path, MINIMAL), ["model.quantization=8bit"])
    with pytest.raises(RecipeError, match="stage2: required key is missing"):
        load_recipe(AdaptRecipe, write(tmp_path, "output_dir: o\nmodel: {lm: a, vision: b}\n"))


def test_overrides_reach_nested_lists(tmp_path):
    r = load_recipe(AdaptRecipe, write(tmp_path, MINIMAL),
                    ["stage2.data.sources.0.weight=0.5", "stage2.optim.max_steps=7"])
    assert r.stage2.data.sources[0].weight == 0.5 and r.stage2.optim.max_steps == 7


def test_yaml_is_loaded_safely(tmp_path):
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(AdaptRecipe, write(tmp_path, MINIMAL + "x: !!python/object/apply:os.system ['true']\n"))


def test_help_lists_keys():
    text = describe(AdaptRecipe)
    for key in ("stage2.optim.lr_projector", "model.vision_feature_layer", "lora.rslora"):
        assert key in text


@pytest.mark.parametrize("path", ["recipes/toy/adapt.yaml", "recipes/paper/adapt_llama2_chat_7b.yaml",
                                  "recipes/paper/adapt_tulu2_7b.yaml", "recipes/consumer_24gb.yaml"])
def test_shipped_adapt_recipes_are_valid(path):
    from pathlib import Path

    r = load_recipe(AdaptRecipe, Path(__file__).parent.parent / path)
    assert r.stage2.optim.global_batch_size % r.stage2.optim.micro_batch_size == 0
    if "paper" in path:   # LLaVA-1.5 LoRA settings
        assert (r.lora.r, r.lora.alpha, r.stage2.optim.lr, r.stage2.optim.lr_projector) == (128, 256, 2e-4, 2e-5)
        assert r.stage2.optim.global_batch_size == 128 and r.stage1.optim.lr == 1e-3


def test_help_shows_each_numeric_range():
    text = describe(AdaptRecipe)
    for line in ("stage2.optim.lr [float, > 0]", "lora.dropout [float, in [0, 1)]",
                 "stage2.optim.max_steps [int or NoneType, >= 1]", "stage2.optim.weight_decay [float, >= 0]"):
        assert line in text, line


@pytest.mark.parametrize("value", [".nan", ".inf", "-0.0001"])
def test_a_learning_rate_outside_its_range_is_refused_with_its_key(tmp_path, value):
    with pytest.raises(RecipeError, match=r"stage2\.optim\.lr: expected a value > 0, got"):
        load_recipe(AdaptRecipe, write(tmp_path, MINIMAL), [f"stage2.optim.lr={value}"])


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    """`1e-5` is a float (YAML 1.2), in the file and in an override, as researchers write it."""
    r = load_recipe(AdaptRecipe, write(tmp_path, MINIMAL + "  optim: {lr: 2e-5}\n"), ["stage2.optim.lr_projector=1E-4"])
    assert r.stage2.optim.lr == 2e-5 and r.stage2.optim.lr_projector == 1e-4
