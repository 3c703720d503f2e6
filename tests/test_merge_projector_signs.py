"""Merging adapters that carry a projector (modules_to_save) with negative and mixed-sign input
weights: the expected projector and deltas are written out by hand on a 2 x 2 case."""
import json

import pytest
import torch
from safetensors.torch import load_file

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
