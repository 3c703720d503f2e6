"""`lora-vl eval` on the offline toy suite, `lora-vl report` over two runs, and CLI errors."""
from pathlib import Path

import pytest
from eval_helpers import tiny_world  # noqa: F401  (session fixture)

from lora_vl.cli import main

TOY = str(Path(__file__).resolve().parent.parent / "eval" / "toy.yaml")


def test_toy_suite_and_report(tiny_world, tmp_path, monkeypatch, capsys):
    from lora_vl.toy.data import write_world_data
    from lora_vl.toy.scale import SCALES

    monkeypatch.chdir(tmp_path)  # the toy suite reads the world's benchmarks under ./outputs/toy/world
    write_world_data(tmp_path / "outputs/toy/world", SCALES["test"])
    llava, adapter = str(tiny_world["llava"]), str(tiny_world["adapter"])
    assert main(["eval", TOY, "--model", llava, "--adapter", adapter, "--out", "with"]) == 0
    assert main(["eval", TOY, "--model", llava, "--out", "base", "generation.batch_size=4"]) == 0
    out = capsys.readouterr().out
    assert "helpfulness: accuracy" in out and "safety: asr" in out
    assert main(["report", "with/results.json", "base/results.json", "--out", "rep"]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| mm_safety | figstep-toy | asr | refusal-matcher |" in md
    assert "| text_safety | sorry-bench-toy | asr | toy-oracle |" in md
    run_name = Path(adapter).parent.name  # an adapter dir named "adapter" is labelled by its folder
    assert f"| llava+{run_name} (" in md and "| llava (" in md  # one column per run
    png = (tmp_path / "rep" / "safety_vs_helpfulness.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_explains_suite_keys(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "generation.batch_size [int, >= 1]" in text and "benchmarks[].subset" in text


def test_cli_errors_name_the_problem(tiny_world, tmp_path, capsys):
    assert main(["eval", TOY, "--model", str(tiny_world["llava"]), "--out", str(tmp_path),
                 "generation.batchsize=2"]) == 2
    assert "unknown key(s) 'batchsize'" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nope.yaml"), "--model", "x"]) == 2
    assert "recipe file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["report", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "not a lora-vl eval results file" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["paper", "quick", "toy"])
def test_shipped_suites_validate(name):
    from lora_vl.evaluation.suite import Suite
    from lora_vl.recipe import load_recipe

    s = load_recipe(Suite, Path(TOY).with_name(f"{name}.yaml"))
    assert s.name == name and s.benchmarks
