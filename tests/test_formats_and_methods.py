"""The data-format and merge-method registries are the one source of the schema's allowed values,
`--help` and errors; registering a function is all it takes to add one."""
import pytest
import torch

from lora_vl.cli import main
from lora_vl.data import formats
from lora_vl.data.config import DataSource
from lora_vl.merge import methods
from lora_vl.merge.recipe import MergeRecipe
from lora_vl.recipe import RecipeError, build


def help_text(stage: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([stage, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_every_data_format_is_accepted_and_listed(capsys):
    assert set(formats.FORMATS) >= {"llava_json", "hf_messages", "vlguard", "spa_vl", "pku_saferlhf"}
    text = help_text("adapt", capsys)
    for name in formats.FORMATS:
        assert build(DataSource, {"format": name, "path": "x"}).format == name
        assert name in text
    with pytest.raises(RecipeError, match=r"format: unknown data format 'llava'; expected one of \['hf_messages'"):
        build(DataSource, {"format": "llava", "path": "x"}, where="sources[0]")


def test_every_merge_method_is_accepted_and_listed(capsys):
    assert set(methods.METHODS) >= {"sum", "ties", "dare", "dare_ties", "magnitude", "della"}
    text = help_text("merge", capsys)
    for name in methods.METHODS:
        assert build(MergeRecipe, {"inputs": [{"path": "a"}], "output": "o", "method": name}).method == name
        assert name in text
    with pytest.raises(RecipeError, match="unknown merge method 'average'"):
        build(MergeRecipe, {"inputs": [{"path": "a"}], "output": "o", "method": "average"})


def test_a_registered_method_is_usable_at_once(tmp_path):
    """One decorated function adds a dense merge method: the recipe accepts it and the merge runs it."""
    from lora_vl.merge.io import read_adapter
    from lora_vl.merge.run import run
    from merge_helpers import synthetic_adapter

    @methods.merge_method("first_only", dense=True, help="keep the first input's delta")
    def first_only(deltas, weights, gens):
        return weights[0] * deltas[0]

    try:
        mods = {"model.layers.0.mlp.up_proj": (6, 4, 2)}
        a, b = synthetic_adapter(tmp_path / "a", mods, seed=1), synthetic_adapter(tmp_path / "b", mods, seed=2)
        out = run(build(MergeRecipe, {"inputs": [{"path": str(a)}, {"path": str(b)}], "output": str(tmp_path / "o"),
                                      "method": "first_only", "rank": 2}))
        merged = read_adapter(out).modules["model.layers.0.mlp.up_proj"]
        expected = read_adapter(a).modules["model.layers.0.mlp.up_proj"]
        torch.testing.assert_close(merged.delta(), expected.delta(), rtol=1e-5, atol=1e-6)
    finally:
        methods.METHODS.pop("first_only")
