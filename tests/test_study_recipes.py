"""The studies' recipes (toy world; real LM) fit together: the mixed setting differs from VL adaptation only in its
stage-2 data, the safety runs and merges sit on the adapt run's outputs, and the study recipe
names files and benchmarks that exist."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from lora_vl.analysis.prompts import benchmark_specs
from lora_vl.analysis.recipe import AnalyzeRecipe
from lora_vl.evaluation.suite import Suite
from lora_vl.recipe import RecipeError, load_recipe
from lora_vl.study.recipe import StudyRecipe

ROOT = Path(__file__).resolve().parent.parent


def read(rel: str) -> dict:
    return yaml.safe_load((ROOT / rel).read_text())


# each study's stage recipes: (adapt, mixed, safety SFT, safety DPO)
SETS = {"toy": "recipes/toy/{}.yaml", "real": "recipes/real/study/{}.yaml"}
STUDIES = {"toy": "recipes/toy/study.yaml", "real": "recipes/real/study.yaml"}


@pytest.mark.parametrize("study", sorted(SETS))
def test_mixed_setting_differs_from_adapt_only_in_stage2_data(study):
    adapt, mixed = read(SETS[study].format("adapt")), read(SETS[study].format("adapt_mixed"))
    assert mixed["model"] == adapt["model"]
    assert mixed["lora"] == adapt["lora"]
    assert mixed["stage2"]["optim"] == adapt["stage2"]["optim"]
    assert mixed["stage2"]["data"]["max_length"] == adapt["stage2"]["data"]["max_length"]
    plain, with_safety = adapt["stage2"]["data"]["sources"], mixed["stage2"]["data"]["sources"]
    assert with_safety[:len(plain)] == plain
    assert [s["format"] for s in with_safety[len(plain):]] == ["vlguard"]
    assert mixed["projector"] == f"{adapt['output_dir']}/stage1/projector.safetensors"


@pytest.mark.parametrize("study", sorted(SETS))
@pytest.mark.parametrize("name", ["safety_sft", "safety_dpo"])
def test_safety_runs_sit_on_the_adapt_run(study, name):
    adapt, safety = read(SETS[study].format("adapt")), read(SETS[study].format(name))
    assert safety["model"]["base"] == adapt["model"]["base_dir"]
    assert safety["parent"] == f"{adapt['output_dir']}/adapter"


def test_merge_inputs_are_the_vl_and_sft_adapters():
    adapt, sft = read("recipes/toy/adapt.yaml"), read("recipes/toy/safety_sft.yaml")
    merge = read("recipes/merge/toy.yaml")
    assert [i["path"] for i in merge["inputs"]] == [f"{adapt['output_dir']}/adapter", f"{sft['output_dir']}/adapter"]


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_study_recipe_names_what_exists(name):
    study = load_recipe(StudyRecipe, ROOT / STUDIES[name])
    for rel in (study.suite, study.adapt, study.adapt_mixed, study.safety_sft, study.safety_dpo, study.merge.recipe):
        assert (ROOT / rel).is_file(), rel
    names = {b["name"] for b in read(study.suite)["benchmarks"]}
    assert set(study.analysis.harmful) | set(study.analysis.benign) <= names
    assert study.llm == read(study.adapt)["model"]["lm"]  # the LLM alone is the LLM that is adapted
    assert study.adapt == SETS[name].format("adapt") and study.adapt_mixed == SETS[name].format("adapt_mixed")


def test_real_study_starts_from_the_aligned_lm_and_limits_the_benchmarks_it_names():
    study = load_recipe(StudyRecipe, ROOT / STUDIES["real"])
    align = read("recipes/real/align.yaml")
    assert study.llm == f"{align['output_dir']}/lm" and align["lm"] == "outputs/real/lm"
    suite = load_recipe(Suite, ROOT / study.suite, study.eval_overrides)
    # the overrides address benchmarks by position: the name in the comment beside each must stay true
    named = re.findall(r"benchmarks\.(\d+)\.limit=(\d+)\s+# ([\w-]+)", (ROOT / STUDIES["real"]).read_text())
    assert len(named) == len(suite.benchmarks)
    for i, limit, name in named:
        assert (suite.benchmarks[int(i)].name, suite.benchmarks[int(i)].limit) == (name, int(limit))


def test_study_recipe_errors_name_the_key():
    with pytest.raises(RecipeError, match=r"merge\.weights: the study sweeps at least 5"):
        load_recipe(StudyRecipe, ROOT / "recipes/toy/study.yaml", ["merge.weights=[0.5, 1.0]"])
    with pytest.raises(RecipeError, match="seeds"):
        load_recipe(StudyRecipe, ROOT / "recipes/toy/study.yaml", ["seeds=[1, 1]"])


@pytest.mark.parametrize("rel", ["recipes/analyze/toy.yaml", "recipes/analyze/paper.yaml"])
def test_analyze_recipes_name_benchmarks_of_their_suite(rel):
    recipe = load_recipe(AnalyzeRecipe, ROOT / rel)
    assert set(recipe.prompts.harmful) | set(recipe.prompts.benign) <= set(benchmark_specs(recipe.prompts))
    assert recipe.reference_name == "llm" and recipe.models[0].adapters == []  # the aligned LLM alone


def test_toy_analyze_recipe_reads_the_toy_runs():
    analyze = read("recipes/analyze/toy.yaml")
    adapt, sft = read("recipes/toy/adapt.yaml"), read("recipes/toy/safety_sft.yaml")
    models = {m["name"]: m for m in analyze["models"]}
    assert models["llm"]["base"] == adapt["model"]["lm"]
    assert models["vl+sft"]["adapters"] == [f"{adapt['output_dir']}/adapter", f"{sft['output_dir']}/adapter"]
