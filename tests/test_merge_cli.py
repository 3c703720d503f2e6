"""`lora-vl merge` end to end: a recipe file, overrides, --help, and sweeps with sweep.json."""
import json

import pytest
import torch
import yaml

from lora_vl.handoff import read_manifest
from lora_vl.cli import main as lora_vl
from lora_vl.merge.io import read_adapter
from merge_helpers import lora_delta, synthetic_adapter
from tests.helpers import assert_model_card

MODS_A = {"model.layers.0.mlp.up_proj": (12, 8, 2), "model.layers.1.mlp.up_proj": (12, 8, 2)}
MODS_B = {"model.layers.0.mlp.up_proj": (12, 8, 3), "model.layers.1.mlp.up_proj": (12, 8, 3)}


def main(argv: list[str]) -> int:
    """`lora-vl merge ...` through the real CLI (its error policy included)."""
    return lora_vl(["merge", *argv])


@pytest.fixture
def recipe_file(tmp_path):
    torch.manual_seed(0)
    a = synthetic_adapter(tmp_path / "vl" / "adapter", MODS_A, seed=1)
    b = synthetic_adapter(tmp_path / "safety" / "adapter", MODS_B, seed=2)
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump({"inputs": [{"path": str(a)}, {"path": str(b), "weight": 1.0}],
                                    "output": str(tmp_path / "merged")}))
    return path, a, b


def test_help_explains_recipe_keys(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "inputs[].weight" in out and "--sweep" in out and "modules_to_save" in out


def test_recipe_with_overrides_writes_adapter_and_manifest(recipe_file, tmp_path):
    path, a, b = recipe_file
    assert main([str(path), "inputs.1.weight=-0.5", "rank=3"]) == 0
    out = tmp_path / "merged"
    m = "model.layers.1.mlp.up_proj"
    merged = read_adapter(out)
    assert merged.modules[m].rank == 3
    manifest = read_manifest(out)
    assert [p["weight"] for p in manifest["parents"]] == [1.0, -0.5]
    assert [p["name"] for p in manifest["parents"]] == ["vl/adapter", "safety/adapter"]
    assert manifest["parents"][0]["weights_sha256"]
    assert_model_card(out)
    report = json.loads((out / "merge_report.json").read_text())
    ref = lora_delta(a, m) - 0.5 * lora_delta(b, m)
    err = (torch.linalg.norm(ref - merged.modules[m].delta()) / torch.linalg.norm(ref)).item()
    assert report["modules"][m]["rel_error"] == pytest.approx(err, rel=1e-3)
    assert report["coefficients"][m] == [1.0, -0.5]


def test_sweep_writes_grid_with_manifests_and_index(recipe_file, tmp_path):
    path, a, b = recipe_file
    argv = [str(path), "output=" + str(tmp_path / "sweep"), "--sweep", "inputs.1.weight=0,0.5,1.0",
            "--sweep", "inputs.0.weight=[1, 2]"]
    assert main(argv) == 0
    index = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert index["grid"] == {"inputs.1.weight": [0, 0.5, 1.0], "inputs.0.weight": [1, 2]}
    assert [p["weights"] for p in index["points"]] == [[1, 0], [2, 0], [1, 0.5], [2, 0.5], [1, 1], [2, 1]]
    m = "model.layers.0.mlp.up_proj"
    for point in index["points"]:
        manifest = read_manifest(point["path"])
        assert [p["weight"] for p in manifest["parents"]] == point["weights"]
        w0, w1 = point["weights"]
        ref = w0 * lora_delta(a, m) + w1 * lora_delta(b, m)
        torch.testing.assert_close(read_adapter(point["path"]).modules[m].delta(), ref, rtol=1e-5, atol=1e-5)
    assert main(argv) == 2  # the sweep folder exists: refused without overwrite
