"""Merging adapters that carry a projector (modules_to_save) with negative and mixed-sign input
weights: the expected projector and deltas are written out by hand on a 2 x 2 case."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_vl.merge.io import MergeError
from lora_vl.merge.recipe import MergeRecipe
from lora_vl.merge.run import run
from lora_vl.recipe import build
from merge_helpers import lora_delta, synthetic_adapter

MODULE = "language_model.model.layers.0.self_attn.q_proj"
PROJ = "multi_modal_projector.linear_1.weight"
# Mixed-sign projector copies, exact in binary floating point.
PROJECTORS = {
    "vl": torch.tensor([[1.0, -2.0], [3.0, -4.0]]),
    "neg": torch.tensor([[-8.0, 4.0], [0.0, 2.0]]),
    "safety": torch.tensor([[0.5, -0.5], [-1.0, 1.0]]),
}


@pytest.fixture
def adapters(tmp_path):
    return {name: synthetic_adapter(tmp_path / name, {MODULE: (2, 2, 1)}, seed=i, alpha=1,
                                    extra={PROJ: t})
            for i, (name, t) in enumerate(PROJECTORS.items())}


def merged(tmp_path, adapters, weights, **kw):
    recipe = build(MergeRecipe, {"inputs": [{"path": str(adapters[n]), "weight": w} for n, w in weights.items()],
                                 "output": str(tmp_path / "merged"), **kw})
    out = run(recipe)
    return load_file(str(out / "adapter_model.safetensors")), json.loads((out / "adapter_config.json").read_text())


def test_average_takes_only_positive_weights(tmp_path, adapters):
    # λ = 1, -0.5, 3: the subtracted adapter's projector is left out; the others are averaged by λ:
    # (1·[[1,-2],[3,-4]] + 3·[[.5,-.5],[-1,1]]) / 4 = [[2.5,-3.5],[0,-1]] / 4
    tensors, cfg = merged(tmp_path, adapters, {"vl": 1.0, "neg": -0.5, "safety": 3.0})
    assert torch.equal(tensors[f"base_model.model.{PROJ}"], torch.tensor([[0.625, -0.875], [0.0, -0.25]]))
    assert cfg["modules_to_save"] == ["multi_modal_projector"]
    # the LoRA part still subtracts: Σ λ_i ΔW_i with the negative term, against the files' own deltas
    A = tensors[f"base_model.model.{MODULE}.lora_A.weight"].double()
    B = tensors[f"base_model.model.{MODULE}.lora_B.weight"].double()
    want = (lora_delta(adapters["vl"], MODULE) - 0.5 * lora_delta(adapters["neg"], MODULE)
            + 3.0 * lora_delta(adapters["safety"], MODULE))
    assert cfg["lora_alpha"] == cfg["r"] == 3  # scaling 1: the merged delta is B @ A
    torch.testing.assert_close(B @ A, want, rtol=0, atol=1e-6)


def test_negative_input_named_for_the_projector_is_copied_unscaled(tmp_path, adapters):
    tensors, _ = merged(tmp_path, adapters, {"vl": 1.0, "neg": -0.5}, modules_to_save="neg")
    assert torch.equal(tensors[f"base_model.model.{PROJ}"], PROJECTORS["neg"])  # not -0.5 × it


def test_no_positive_weight_means_no_average(tmp_path, adapters):
    with pytest.raises(MergeError, match="no input with a positive weight holds saved modules"):
        merged(tmp_path, adapters, {"vl": -1.0, "neg": -0.5})
    assert not (tmp_path / "merged").exists()
    tensors, cfg = merged(tmp_path, adapters, {"vl": -1.0, "neg": -0.5}, modules_to_save="none")
    assert not any("multi_modal_projector" in k for k in tensors) and cfg["modules_to_save"] is None


def hand_adapter(path, delta: torch.Tensor):
    """A rank-2 adapter whose delta is exactly `delta` (A = I, scale alpha/r = 1), plus a projector."""
    tensors = {f"base_model.model.{MODULE}.lora_A.weight": torch.eye(2),
               f"base_model.model.{MODULE}.lora_B.weight": delta,
               f"base_model.model.{PROJ}": PROJECTORS["vl"]}
    path.mkdir(parents=True)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 2, "lora_alpha": 2, "target_modules": [MODULE],
        "modules_to_save": ["multi_modal_projector"], "base_model_name_or_path": "tiny-base"}))
    return path


@pytest.mark.parametrize("method,want", [
    # λ = 1, -1 on τ1 = [[1,-2],[3,.5]], τ2 = [[2,1],[-1,4]]: weighted -τ2 = [[-2,-1],[1,-4]], sum
    # [[-1,-3],[4,-3.5]]; TIES elects the sign of that sum and averages the agreeing weighted entries
    ("ties", [[-2.0, -1.5], [2.0, -4.0]]),
    ("magnitude", [[-1.0, -3.0], [4.0, -3.5]]),  # density 1: nothing trimmed, the plain signed sum
])
def test_dense_methods_with_a_subtracted_adapter(tmp_path, method, want):
    a = hand_adapter(tmp_path / "a", torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
    b = hand_adapter(tmp_path / "b", torch.tensor([[2.0, 1.0], [-1.0, 4.0]]))
    tensors, _ = merged(tmp_path, {"a": a, "b": b}, {"a": 1.0, "b": -1.0}, method=method, density=1.0,
                        svd="exact")
    B = tensors[f"base_model.model.{MODULE}.lora_B.weight"].double()
    A = tensors[f"base_model.model.{MODULE}.lora_A.weight"].double()
    torch.testing.assert_close(B @ A, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-5)
    assert torch.equal(tensors[f"base_model.model.{PROJ}"], PROJECTORS["vl"])  # the positive input's copy
