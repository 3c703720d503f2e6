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


def test_compose_stage_writes_a_llava_checkpoint(tiny_parts, tmp_path):
    parts = tiny_parts[("qwen2", "siglip")]
    out = tmp_path / "base"
    assert main(["compose", "--lm", str(parts["lm"]), "--vision", str(parts["vision"]), "--out", str(out),
                 "--dtype", "float32"]) == 0
    model, _ = load_vlm(out, quantization="none")
    assert model.config.vision_feature_select_strategy == "full"
    # composing again with the same settings reuses it; other settings are refused
    assert main(["compose", "--lm", str(parts["lm"]), "--vision", str(parts["vision"]), "--out", str(out),
                 "--dtype", "float32"]) == 0
    with pytest.raises(ValueError, match="holds a Llava composed from"):
        main(["compose", "--lm", str(parts["lm"]), "--vision", str(parts["vision"]), "--out", str(out),
              "--dtype", "float32", "--chat-template", "tulu2"])
