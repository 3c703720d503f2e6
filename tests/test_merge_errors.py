"""Bad inputs: each gets an error naming the file/module/key; nothing existing is overwritten."""
import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_vl.cli import main
from lora_vl.handoff import HandoffError
from lora_vl.merge.io import MergeError
from lora_vl.merge.recipe import MergeRecipe
from lora_vl.merge.run import run
from lora_vl.recipe import RecipeError, build
from merge_helpers import set_config, synthetic_adapter

MODS = {"model.layers.0.mlp.up_proj": (12, 8, 2), "model.layers.1.mlp.up_proj": (12, 8, 3)}
WEIGHTS = "adapter_model.safetensors"


@pytest.fixture
def pair(tmp_path):
    torch.manual_seed(0)
    return synthetic_adapter(tmp_path / "a", MODS, seed=1), synthetic_adapter(tmp_path / "b", MODS, seed=2)


def recipe(tmp_path, paths, **kw):
    return build(MergeRecipe, {"inputs": [{"path": str(p)} for p in paths], "output": str(tmp_path / "out"), **kw})


def test_different_base_models(tmp_path, pair):
    set_config(pair[1], base_model_name_or_path="other/base")
    with pytest.raises(MergeError, match=r"b/adapter_config.json: base_model_name_or_path 'other/base' differs"):
        run(recipe(tmp_path, pair))


def test_different_shapes_for_same_module(tmp_path, pair):
    bad = synthetic_adapter(tmp_path / "c", {"model.layers.0.mlp.up_proj": (12, 9, 2)}, seed=3)
    with pytest.raises(MergeError, match=r"module 'model.layers.0.mlp.up_proj': shape \(12, 9\)"):
        run(recipe(tmp_path, [pair[0], bad]))


def test_missing_and_corrupt_safetensors(tmp_path, pair):
    (pair[1] / WEIGHTS).unlink()
    with pytest.raises(HandoffError, match=r"b/adapter_model.safetensors: adapter weights file is missing"):
        run(recipe(tmp_path, pair))
    (pair[1] / WEIGHTS).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(HandoffError, match=r"b/adapter_model.safetensors: not a readable safetensors file"):
        run(recipe(tmp_path, pair))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_inf_weights(tmp_path, pair, bad):
    sd = load_file(str(pair[1] / WEIGHTS))
    key = "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"
    sd[key][0, 0] = bad
    save_file(sd, str(pair[1] / WEIGHTS))
    with pytest.raises(HandoffError, match=rf"b/{WEIGHTS}: tensor '{key}' holds 1 NaN/Inf value"):
        run(recipe(tmp_path, pair))
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_weights_list_must_match_inputs(tmp_path, pair):
    with pytest.raises(RecipeError, match=r"weights: 3 value\(s\) for 2 input\(s\)"):
        recipe(tmp_path, pair, weights=[1.0, 0.5, 0.2])


def test_existing_output_not_overwritten_unless_asked(tmp_path, pair):
    run(recipe(tmp_path, pair))
    before = (tmp_path / "out" / WEIGHTS).read_bytes()
    with pytest.raises(HandoffError, match=r"out: already holds an adapter; set overwrite=true"):
        run(recipe(tmp_path, pair, weights=[1.0, 2.0]))
    assert (tmp_path / "out" / WEIGHTS).read_bytes() == before
    run(recipe(tmp_path, pair, weights=[1.0, 2.0], overwrite=True))
    assert (tmp_path / "out" / WEIGHTS).read_bytes() != before


def test_cli_reports_errors_with_exit_code(tmp_path, pair, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps({"inputs": [{"path": str(p)} for p in pair], "output": str(tmp_path / "o"),
                                "methd": "sum"}))
    assert main(["merge", str(path)]) == 2
    assert "unknown key(s) 'methd'" in capsys.readouterr().err


def test_rank_mismatch_between_config_and_file(tmp_path, pair):
    set_config(pair[0], rank_pattern={})
    with pytest.raises(HandoffError, match=r"tensor 'base_model.model.model.layers.0.mlp.up_proj.lora_A.weight' "
                       r"has rank 2, but .*a/adapter_config.json says r=1"):
        run(recipe(tmp_path, pair))


def tree_hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("output", ["inputs", "inputs/a", "inputs/a/inner"])
def test_merge_into_a_folder_holding_its_inputs_leaves_them_byte_identical(tmp_path, output):
    """Output = the folder of the inputs, an input, or a folder inside one: refused with overwrite
    on, before anything is written; every input byte is as it was."""
    a = synthetic_adapter(tmp_path / "inputs/a", MODS, seed=1)
    b = synthetic_adapter(tmp_path / "inputs/b", MODS, seed=2)
    before = tree_hashes(tmp_path)
    r = build(MergeRecipe, {"inputs": [{"path": str(a)}, {"path": str(b)}], "output": str(tmp_path / output),
                            "overwrite": True})
    with pytest.raises(HandoffError, match=r"the output (contains|is) the merge input|lies inside"):
        run(r)
    assert tree_hashes(tmp_path) == before
