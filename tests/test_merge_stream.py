"""The streaming safetensors writer (round trip, atomicity) and the streaming merge (one module at a time)."""
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lora_vl.merge import io, run as run_mod
from lora_vl.merge.recipe import MergeRecipe
from lora_vl.merge.stream import SafetensorsWriter, header_reserve, save_streaming
from lora_vl.recipe import build
from merge_helpers import synthetic_adapter


def sample_tensors():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=g)
    return {"f32": x, "f64": torch.randn(3, 4, 2, generator=g).double(), "bf16": x.bfloat16(),
            "f16": x.half(), "i64": torch.arange(-5, 6), "u8": torch.arange(256, dtype=torch.uint8),
            "bool": x > 0, "scalar": torch.tensor(3.25), "empty": torch.zeros(0, 4),
            "transposed": x.T, "special": torch.tensor([float("nan"), float("inf"), -0.0, 1e-45])}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and \
        torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("reserve", ["bound", 0, 8])  # a bound that fits, and the copy-behind fallback
def test_writer_round_trip_bit_identical(tmp_path, reserve):
    tensors = sample_tensors()
    meta = {"format": "pt", "note": "ünïcode"}
    size = header_reserve([(k, t.dim()) for k, t in tensors.items()], meta) if reserve == "bound" else reserve
    path = tmp_path / "w.safetensors"
    save_streaming(path, tensors.items(), metadata=meta, reserve=size)
    loaded = load_file(str(path))
    assert set(loaded) == set(tensors)
    for k, t in tensors.items():
        assert same_bits(loaded[k], t), k
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == meta
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0 and json.loads(raw[8:8 + n])  # aligned header, padded with JSON whitespace
    assert len(raw) == 8 + n + sum(t.numel() * t.element_size() for t in tensors.values())
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp file left


def test_writer_matches_library_tensors_for_an_adapter(tmp_path):
    """The same tensors through save_file and through the streaming writer load to the same bits."""
    tensors = {f"base_model.model.l{i}.lora_{ab}.weight": torch.randn(6, 9) for i in range(3) for ab in "AB"}
    save_file(tensors, str(tmp_path / "lib.safetensors"), metadata={"format": "pt"})
    save_streaming(tmp_path / "ours.safetensors", tensors.items(), metadata={"format": "pt"})
    lib, ours = load_file(str(tmp_path / "lib.safetensors")), load_file(str(tmp_path / "ours.safetensors"))
    assert set(lib) == set(ours) and all(same_bits(lib[k], ours[k]) for k in lib)


class Boom(RuntimeError):
    pass


def failing_items(n_ok):
    for i in range(n_ok):
        yield f"t{i}", torch.full((1000,), float(i))
    raise Boom("merge failed mid-write")


def test_writer_failure_mid_write_leaves_no_file(tmp_path):
    path = tmp_path / "w.safetensors"
    with pytest.raises(Boom):
        save_streaming(path, failing_items(3))
    assert list(tmp_path.iterdir()) == []


def test_writer_failure_mid_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_streaming(path, [("old", torch.arange(4.0))])
    before = path.read_bytes()
    with pytest.raises(Boom):
        save_streaming(path, failing_items(2))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_writer_rejects_duplicate_keys_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="written twice"):
        with SafetensorsWriter(tmp_path / "w.safetensors") as w:
            w.add("a", torch.zeros(2))
            w.add("a", torch.zeros(2))
    assert list(tmp_path.iterdir()) == []


def test_merge_streams_one_module_at_a_time(tmp_path, monkeypatch):
    """Each merged module is written before the next module's inputs are read."""
    mods = {f"model.layers.{i}.mlp.up_proj": (12, 8, 2) for i in range(4)}
    a = synthetic_adapter(tmp_path / "a", mods, seed=1)
    b = synthetic_adapter(tmp_path / "b", mods, seed=2)
    events = []
    read, write = io.AdapterFile.factors, io.module_tensors

    def logged_read(self, module):
        events.append(("read", module))
        return read(self, module)

    def logged_write(module, f, dtype):
        events.append(("write", module))
        return write(module, f, dtype)
    monkeypatch.setattr(io.AdapterFile, "factors", logged_read)
    monkeypatch.setattr(io, "module_tensors", logged_write)
    recipe = build(MergeRecipe, {"inputs": [{"path": str(a)}, {"path": str(b)}], "output": str(tmp_path / "o")})
    out = run_mod.run(recipe)
    expected = [e for m in sorted(mods) for e in (("read", m), ("read", m), ("write", m))]
    assert events == expected
    merged = io.read_adapter(out)
    for m in mods:
        ref = io.AdapterFile(a).factors(m).delta() + io.AdapterFile(b).factors(m).delta()
        torch.testing.assert_close(merged.modules[m].delta(), ref, rtol=1e-6, atol=1e-6)
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
