"""bench/bench_study_numerics.py, the study under a GPU's numerics on the CPU (issue 17's parity gate):
the kit's own loading and training paths see bf16 and CUDA's autocast policy inside it and their own
answers after it; bf16 products come out as fp32 products rounded to bf16; each arm's stage recipes
carry its model keys; the comparison fails on a differing verdict."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lora_vl.models.load import load_vlm
from lora_vl.recipe import load_recipe
from lora_vl.study.recipe import StudyRecipe
from lora_vl.train import loop
from lora_vl.train.adapt import AdaptRecipe
from lora_vl.train.safety import SafetyRecipe

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_study_numerics", REPO / "bench" / "bench_study_numerics.py")
bsn = sys.modules["bench_study_numerics"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bsn)


def dtypes(model) -> set[torch.dtype]:
    return {model.lm_head.weight.dtype, model.get_input_embeddings().weight.dtype}


def test_inside_the_emulation_the_kit_loads_bf16_and_trains_under_cuda_autocast_and_not_after(tiny_bases):
    base = str(tiny_bases[("llama", "clip")])
    x, w = torch.randn(2, 8), torch.randn(3, 8)
    with bsn.gpu_numerics():
        model, _ = load_vlm(base, device="cpu")
        assert dtypes(model) == {torch.bfloat16}
        four_bit = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
        assert four_bit and {m.compute_dtype for m in four_bit} == {torch.bfloat16}
        with loop.autocast_policy("cpu"):
            assert torch.nn.functional.linear(x, w).dtype == torch.bfloat16
    model, _ = load_vlm(base, device="cpu")
    assert dtypes(model) == {torch.float32}
    with loop.autocast_policy("cpu"):
        assert torch.nn.functional.linear(x, w).dtype == torch.float32


class SeenOps(TorchDispatchMode):
    """Records each operator run on real tensors (not the meta ones shapes are asked of) and its tensor
    arguments' dtypes, as it reaches this mode."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, list[torch.dtype]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not any(t.is_meta for t in tensors):
            self.calls.append((func.__name__, [t.dtype for t in tensors]))
        return func(*args, **(kwargs or {}))


def test_bf16_products_run_in_fp32_and_come_back_rounded_to_bf16_as_a_gpu_kernel_gives_them():
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(64, 256, generator=g).bfloat16(), torch.randn(256, 32, generator=g).bfloat16())
    with SeenOps() as seen, bsn.gpu_numerics():  # the emulation's operators reach `seen` below it
        got = a @ b
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, (a.float() @ b.float()).bfloat16())
    assert ("mm.default", [torch.float32, torch.float32]) in seen.calls
    assert not [c for c in seen.calls if c[0] == "mm.default" and torch.bfloat16 in c[1]]


def test_each_stage_recipe_of_an_arm_carries_its_model_keys(tmp_path):
    study = bsn.arm_recipes(str(REPO / "recipes/toy/study.yaml"), tmp_path / "arm",
                            ["model.frozen_dtype=compute", "model.loss_chunk_tokens=1024"])
    r = load_recipe(StudyRecipe, study)
    assert Path(r.output_dir) == tmp_path / "arm"
    for path, cls in [(r.adapt, AdaptRecipe), (r.adapt_mixed, AdaptRecipe), (r.safety_sft, SafetyRecipe),
                      (r.safety_dpo, SafetyRecipe)]:
        assert Path(path).parent == tmp_path / "arm" / "recipes"
        m = load_recipe(cls, path).model
        assert (m.frozen_dtype, m.loss_chunk_tokens) == ("compute", 1024), path
    with pytest.raises(SystemExit, match="lora.r=4"):
        bsn.arm_recipes(str(REPO / "recipes/toy/study.yaml"), tmp_path / "bad", ["lora.r=4"])


def write_claims(folder: Path, verdicts: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    (folder / "claims.json").write_text(json.dumps({"claims": [{"id": k, "verdict": v} for k, v in verdicts.items()]}))
    return folder


def test_the_comparison_passes_on_equal_verdicts_and_fails_naming_a_differing_one(tmp_path, capsys):
    a = write_claims(tmp_path / "a", {"C1": "holds", "C2": "not shown"})
    b = write_claims(tmp_path / "b", {"C1": "holds", "C2": "not shown"})
    c = write_claims(tmp_path / "c", {"C1": "holds", "C2": "holds"})
    assert bsn.compare(a, b) == 0 and "same verdict for every claim" in capsys.readouterr().out
    assert bsn.compare(a, c) == 1
    assert [line for line in capsys.readouterr().out.splitlines() if "differs" in line][0].split()[0] == "C2"
