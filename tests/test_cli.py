"""Every stage of `lora-vl` answers --help, and the compose stage builds a loadable base."""
import pytest

from lora_vl.cli import STAGES, main
from lora_vl.models.load import load_vlm


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_has_help(stage, capsys):
    with pytest.raises(SystemExit) as e:
        main([stage, "--help"])
    assert e.value.code == 0
    assert f"lora-vl {stage}" in capsys.readouterr().out


def test_unknown_stage_is_refused(capsys):
    assert main(["adpat"]) == 2
    assert "unknown stage 'adpat'" in capsys.readouterr().err


def test_compose_stage_writes_a_llava_checkpoint(tiny_parts, tmp_path, capsys):
    parts = tiny_parts[("qwen2", "siglip")]
    out = tmp_path / "base"
    assert main(["compose", "--lm", str(parts["lm"]), "--vision", str(parts["vision"]), "--out", str(out),
                 "--dtype", "float32"]) == 0
    model, _ = load_vlm(out, quantization="none")
    assert model.config.vision_feature_select_strategy == "full"
    # composing again with the same settings reuses it; other settings are refused
    assert main(["compose", "--lm", str(parts["lm"]), "--vision", str(parts["vision"]), "--out", str(out),
                 "--dtype", "float32"]) == 0
    assert main(["compose", "--lm", str(parts["lm"]), "--vision", str(parts["vision"]), "--out", str(out),
              "--dtype", "float32", "--chat-template", "tulu2"]) == 2
    assert "holds a Llava composed from" in capsys.readouterr().err


def test_rebuilt_lm_is_not_mistaken_for_the_composed_one(tiny_parts, tmp_path, capsys):
    import shutil

    lm = shutil.copytree(tiny_parts[("llama", "clip")]["lm"], tmp_path / "lm")
    args = ["compose", "--lm", str(lm), "--vision", str(tiny_parts[("llama", "clip")]["vision"]),
            "--out", str(tmp_path / "base"), "--dtype", "float32"]
    assert main(args) == 0
    weights = lm / "model.safetensors"
    weights.write_bytes(weights.read_bytes())   # rebuilt in place: same path, new file
    assert main(args) == 2
    assert "rebuilt counts as different" in capsys.readouterr().err
